import ChamadeCore
import ChamadeEngine
import ChamadeWire
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import Synchronization

/// One WebSocket of a call (SPEC §4): what the client sends is handled here, in the order it
/// arrives (one task per connection); everything sent back goes through the socket's `Outbox`.
final class Session: Sendable {
    let call: Call
    let participant: Participant
    let outbox: Outbox
    let store: CallStore
    let speech: ServerSpeech
    private let receivingFlag = Atomic<Bool>(false)
    /// The socket has closed: a mark held behind a say is only given back to the call's bound.
    private let closedFlag = Atomic<Bool>(false)

    struct Marks {
        /// Names of this socket's marks still waiting, by the engine's mark id.
        var names: [UInt64: String] = [:]
        /// The newest clear this socket asked for and has not seen answered.
        var pendingClear: UInt64?
    }
    private let marks = NIOLockedValueBox(Marks())

    init(call: Call, participant: Participant, outbox: Outbox, store: CallStore, speech: ServerSpeech) {
        self.speech = speech
        self.call = call
        self.participant = participant
        self.outbox = outbox
        self.store = store
    }

    /// Whether this socket wants the call's audio.
    // ORDERING: relaxed; a flag read when the call's receivers are rebuilt under the call's lock.
    var receiving: Bool { receivingFlag.load(ordering: .relaxed) }

    // MARK: outbound

    func send(_ message: some Encodable) { outbox.send(text: WireJSON.encode(message)) }

    func error(_ code: String, _ message: String) { send(ServerMessage.Error(code: code, message: message)) }

    /// The call ended: `call_state` ended, then a close frame, after everything queued before.
    func callEnded(_ final: CallState = .ended) {
        send(ServerMessage.State(state: final))
        outbox.close(.normalClosure)
    }

    func markPlayed(_ id: UInt64) {
        let name = marks.withLockedValue { $0.names.removeValue(forKey: id) }
        guard let name else { return }
        call.withLock { $0.pendingMarks -= 1 }
        send(ServerMessage.Mark(name: name))
    }

    /// A mark held behind a say that a clear dropped: answered at once.
    func answerHeldMark(_ name: String) {
        call.withLock { $0.pendingMarks -= 1 }
        if !closedFlag.load(ordering: .relaxed) { send(ServerMessage.Mark(name: name)) }
    }

    func cleared(request: UInt64, droppedMilliseconds: Int, spokenText: String) {
        let mine = marks.withLockedValue { m -> Bool in
            guard let p = m.pendingClear, request >= p else { return false }
            m.pendingClear = nil
            return true
        }
        if mine { send(ServerMessage.Cleared(droppedMs: droppedMilliseconds, spokenText: spokenText)) }
    }

    /// Gives back what this socket held when it closes: its waiting marks' share of the call's bound.
    func closed() {
        closedFlag.store(true, ordering: .relaxed)
        let waiting = marks.withLockedValue { m in
            defer { m.names = [:] }
            return m.names.count
        }
        if waiting > 0 { call.withLock { $0.pendingMarks -= waiting } }
    }

    // MARK: inbound

    func handle(binary buffer: ByteBuffer) {
        guard buffer.readableBytes <= WireLimits.audioBytes else {
            error(
                "frame_too_large",
                "binary frames carry at most 1 MiB (1,048,576 bytes); this one had \(buffer.readableBytes)")
            return
        }
        buffer.withUnsafeReadableBytes { push($0) }
    }

    private func push(_ bytes: UnsafeRawBufferPointer) {
        // Behind a say still being fed, audio waits its turn (bounded like the playout queue).
        let (held, overflow) = call.holdAudio(bytes, from: self, limit: participant.sampleRate.hertz * 2 * 60)
        if overflow {
            let ms = participant.sampleRate.milliseconds(ofSampleCount: bytes.count / 2)
            error("playout_overflow", "the playout queue holds 60 s; \(ms) ms of audio beyond it were dropped")
        }
        if held { return }
        let result = participant.push(bytes)
        if result.droppedSampleCount > 0 {
            let ms = participant.sampleRate.milliseconds(ofSampleCount: result.droppedSampleCount)
            error("playout_overflow", "the playout queue holds 60 s; \(ms) ms of audio beyond it were dropped")
        }
    }

    func handle(text: String) {
        let request: ClientRequest
        do throws(ClientRequest.Refusal) { request = try ClientRequest(parsing: text) } catch {
            self.error(error.code, error.message)
            return
        }
        switch request {
        case .audio(let pcm, let rate): audio(pcm, rate: rate)
        case .audioConfig(let rate, let receive): audioConfig(rate: rate, receive: receive)
        case .sendChat(let text): store.tellOthers(of: call, ServerMessage.Chat(sender: call.agentName, text: text))
        case .say(let text): say(text)
        case .dtmf(let digits):
            do throws(APIError) { _ = try DTMF.send(digits, on: call) } catch {
                self.error(error.code, error.message)
            }
        case .clear:
            // The socket waits for this request's answer from before the engine can give it.
            _ = call.requestClear { [marks] _, request in marks.withLockedValue { $0.pendingClear = request } }
        case .mark(let name): mark(name)
        }
    }

    private func mark(_ name: String) {
        let admitted = call.withLock { m -> Bool in
            guard m.pendingMarks < ServerConfiguration.maxPendingMarks else { return false }
            m.pendingMarks += 1
            return true
        }
        guard admitted else {
            error("too_many_marks", "4,096 marks already wait for their audio on this call; this one was dropped")
            return
        }
        if call.holdMark(self, name: name) { return }
        placeMark(name)
    }

    /// Places an admitted mark (counted in the call's `pendingMarks`) after the audio queued so far.
    func placeMark(_ name: String) {
        guard !closedFlag.load(ordering: .relaxed) else {
            call.withLock { $0.pendingMarks -= 1 }
            return
        }
        // The name is recorded under the same lock the answer takes, so an answer that races the
        // placing always finds it.
        let reached = marks.withLockedValue { m -> Bool in
            let placed = participant.mark()
            if !placed.isReached { m.names[placed.id] = name }
            return placed.isReached
        }
        if reached {
            call.withLock { $0.pendingMarks -= 1 }
            send(ServerMessage.Mark(name: name))
        }
    }

    private func audio(_ pcm: [UInt8], rate: SampleRate?) {
        // A rate other than the connection's switches it, as audio_config would, and says so.
        if let rate, rate != participant.sampleRate { switchRate(to: rate) }
        pcm.withUnsafeBytes { push($0) }
    }

    private func audioConfig(rate: SampleRate?, receive: Bool?) {
        let rate = rate ?? participant.sampleRate
        if let receive { setReceiving(receive) }
        if rate != participant.sampleRate {
            switchRate(to: rate)
        } else {
            send(config(rate: rate))
        }
    }

    /// Changes the connection's rate. The answer is queued at the instant the outbound side
    /// switches, so no frame of the old rate follows it and none of the new rate precedes it.
    private func switchRate(to rate: SampleRate) {
        let answer = WireJSON.encode(config(rate: rate))
        do {
            let changed = try participant.setSampleRate(rate) {
                outbox.sizeBuffers(forFrameBytes: rate.blockByteCount)
                outbox.send(text: answer)
            }
            if !changed { outbox.send(text: answer) }
        } catch {
            self.error("call_ended", "the call has ended")
        }
    }

    private func setReceiving(_ on: Bool) {
        receivingFlag.store(on, ordering: .relaxed)
        let any = call.withLock { m in m.state.isFinal ? nil : call.refreshReceivers(&m) }
        if let any { participant.setReceiving(any) }
    }

    func config(rate: SampleRate) -> ServerMessage.AudioConfig {
        let native = call.nativeRate
        return .init(
            sampleRate: rate.hertz, nativeSampleRate: native.hertz, resampling: rate != native,
            frameBytes: rate.blockByteCount, receive: receiving)
    }

    /// `say` on the socket: queued in the call's order at once (a `mark` sent after it waits for
    /// it), synthesized off the socket's task; an error comes back as `call_error`.
    private func say(_ text: String) {
        do throws(APIError) { try speech.checkSay(on: call) } catch {
            self.error(error.code, error.message)
            return
        }
        speech.enqueueSay(text, on: call) { [self] result in
            if case .failure(let error) = result { self.error(error.code, error.message) }
        }
    }
}

extension Call {
    /// Sends a text message to every WebSocket of the call.
    func broadcast(text: String) {
        for s in withLock({ Array($0.sessions.values) }) { s.outbox.send(text: text) }
    }
}
