import ChamadeCore
import ChamadeEngine
import Foundation
import HummingbirdWebSocket
import NIOCore
import NIOWebSocket
import Synchronization

/// One WebSocket connection of a call (SPEC §4). The inbound side runs in the connection's handler;
/// everything outbound (events, answers, audio) goes through one writer task, fed by an AsyncStream,
/// so writes never interleave and a slow client only ever blocks its own writer.
final class Session: @unchecked Sendable {
    // SAFETY: mutable state is guarded by `lock`; the stream's continuation is thread-safe.
    enum Outgoing: Sendable {
        case text(String)
        case end
    }

    let call: Call
    let registry: Registry
    /// The connection's channel: audio frames are written to it directly from the delivery thread
    /// (one hop to the event loop instead of two through a task).
    let channel: any Channel
    private let lock = NSLock()
    private var ended = false
    private var _receiving = false
    private var markNames: [UInt64: String] = [:]
    private var pendingClear: UInt64?
    let stream: AsyncStream<Outgoing>
    private let continuation: AsyncStream<Outgoing>.Continuation

    /// Largest binary (or decoded base64) audio message accepted: 1 MiB.
    static let maxAudioBytes = 1 << 20

    init(call: Call, registry: Registry, channel: any Channel) {
        self.call = call
        self.registry = registry
        self.channel = channel
        (stream, continuation) = AsyncStream.makeStream(of: Outgoing.self)
    }

    var receiving: Bool { lock.withLock { _receiving } }

    // MARK: outbound (any thread)

    func send(text: String) { continuation.yield(.text(text)) }

    func send(_ object: [String: Any]) { send(text: JSON.encode(object)) }

    func error(_ code: String, _ message: String) {
        send(["type": "call_error", "code": code, "message": message])
    }

    /// Whether this session can take a frame now: a client that does not read fills the channel's
    /// outbound buffer (about one second of frames at its rate, see `boundOutboundBuffer`) until it
    /// is not writable.
    var canTakeAudio: Bool { receiving && channel.isWritable }

    /// Sends one block of mix-minus as a binary frame, straight to the channel. A frame for a channel
    /// that is not writable (another session of the call is reading) is dropped and counted; the
    /// room never waits.
    func deliver(_ block: ByteBuffer) {
        guard lock.withLock({ !ended }) else { return }
        guard channel.isWritable else {
            registry.sessionDroppedFrames.wrappingAdd(1, ordering: .relaxed)
            return
        }
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, data: block), promise: nil)
    }

    /// Bounds what can wait for a client that does not read to about a second of frames at the
    /// connection's rate: the channel's high watermark is 50 frames, and the socket's send buffer is
    /// set to half that (the kernel doubles it). Left to autotuning, the kernel alone would queue up
    /// to 4 MB, some 40 s of audio at 48 kHz.
    func boundOutboundBuffer() {
        let frame = call.participant.sampleRate.blockByteCount + 4
        let high = 50 * frame
        channel.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: high / 2, high: high))
            .whenFailure { _ in }
        channel.setOption(ChannelOptions.socketOption(.so_sndbuf), value: SocketOptionValue(high / 2))
            .whenFailure { _ in }
    }

    /// The call ended: `call_state` ended, then a close frame.
    func end() {
        lock.withLock { ended = true }
        send(["type": "call_state", "state": "ended"])
        continuation.yield(.end)
    }

    func markPlayed(_ id: UInt64) {
        guard let name = lock.withLock({ markNames.removeValue(forKey: id) }) else { return }
        send(["type": "mark", "name": name])
    }

    func cleared(request: UInt64, droppedMilliseconds: Int) {
        let mine = lock.withLock { () -> Bool in
            guard let p = pendingClear, request >= p else { return false }
            pendingClear = nil
            return true
        }
        if mine { send(["type": "cleared", "dropped_ms": droppedMilliseconds]) }
    }

    /// Writes everything queued until the call ends or the connection fails.
    func runWriter(_ outbound: WebSocketOutboundWriter) async {
        for await item in stream {
            do {
                switch item {
                case .text(let s):
                    try await outbound.write(.text(s))
                case .end:
                    try await outbound.close(.normalClosure, reason: "call ended")
                    return
                }
            } catch {
                return
            }
        }
    }

    func finish() { continuation.finish() }

    // MARK: inbound (the connection's handler)

    func handle(binary buffer: ByteBuffer) {
        guard buffer.readableBytes <= Self.maxAudioBytes else {
            error("frame_too_large", "binary frames carry at most 1 MiB (1,048,576 bytes); this one had \(buffer.readableBytes)")
            return
        }
        push(buffer.readableBytesView)
    }

    private func push(_ bytes: some Collection<UInt8>) {
        let result = bytes.withContiguousStorageIfAvailable { call.participant.push(UnsafeRawBufferPointer($0)) }
            ?? Array(bytes).withUnsafeBytes { call.participant.push($0) }
        if result.droppedSampleCount > 0 {
            let ms = call.participant.sampleRate.milliseconds(ofSampleCount: result.droppedSampleCount)
            error("playout_overflow", "the playout queue holds 60 s; \(ms) ms of audio beyond it were dropped")
        }
    }

    func handle(text: String) {
        guard let object = JSON.object(Data(text.utf8)), let type = object["type"] as? String else {
            error("invalid_message", "expected a JSON object with a \"type\"")
            return
        }
        switch type {
        case "audio": audio(object)
        case "audio_config": audioConfig(object)
        case "send_chat": sendChat(object)
        case "say": error("tts_not_configured", "no hosted TTS in this engine: synthesize locally and send PCM")
        case "clear":
            let request = call.participant.requestClear()
            lock.withLock { pendingClear = request }
        case "mark":
            let name = (object["name"] as? String) ?? ""
            let mark = call.participant.mark()
            if mark.isReached {
                send(["type": "mark", "name": name])
            } else {
                lock.withLock { markNames[mark.id] = name }
            }
        default:
            error("unknown_type", "unknown message type \"\(type)\"")
        }
    }

    private func audio(_ object: [String: Any]) {
        guard let b64 = object["audio"] as? String, let data = Data(base64Encoded: b64) else {
            error("invalid_audio", "\"audio\" must be base64-encoded PCM s16le")
            return
        }
        guard data.count <= Self.maxAudioBytes else {
            error("frame_too_large", "audio messages carry at most 1 MiB of PCM; this one had \(data.count)")
            return
        }
        if let rate = object["sample_rate"] {
            // A rate other than the connection's switches it, as audio_config would, and says so.
            guard let hz = rate as? Int, let r = try? SampleRate(hertz: hz) else {
                error("unsupported_sample_rate", "sample_rate must be a multiple of 50 from 8000 to 48000")
                return
            }
            if r != call.participant.sampleRate {
                _ = try? call.participant.setSampleRate(r)
                boundOutboundBuffer()
                send(config())
            }
        }
        push(data)
    }

    private func audioConfig(_ object: [String: Any]) {
        if let value = object["sample_rate"] {
            guard let hz = value as? Int, let rate = try? SampleRate(hertz: hz) else {
                error("unsupported_sample_rate", "sample_rate \(value) is not supported: use a multiple of 50 from 8000 to 48000")
                return
            }
            do {
                try call.participant.setSampleRate(rate)
            } catch {
                self.error("call_ended", "the call has ended")
                return
            }
            boundOutboundBuffer()
        }
        if let receive = object["receive"] as? Bool {
            lock.withLock { _receiving = receive }
            registry.refreshReceiving(call)
        }
        send(config())
    }

    func config() -> [String: Any] {
        let rate = call.participant.sampleRate
        let native = call.platform.nativeRate
        return [
            "type": "audio_config", "sample_rate": rate.hertz, "native_sample_rate": native.hertz,
            "resampling": rate != native, "format": "pcm_s16le", "channels": 1, "frame_duration_ms": 20,
            "frame_bytes": rate.blockByteCount, "ready": true, "receive": receiving,
        ]
    }

    private func sendChat(_ object: [String: Any]) {
        guard let text = object["text"] as? String, (1...10_000).contains(text.count) else {
            error("invalid_text", "\"text\" must be 1 to 10,000 characters")
            return
        }
        registry.broadcast(
            JSON.encode(["type": "call_chat", "sender": call.agentName, "text": text]), to: registry.others(of: call))
    }
}
