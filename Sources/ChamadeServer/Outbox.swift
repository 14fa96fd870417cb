import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import Synchronization

/// The one ordered outbound path of a WebSocket (SPEC §5 "Ordering", "Slow consumers").
///
/// Everything the server sends on a socket — events, answers and audio frames — is queued here in
/// the order it was produced, and written to the channel in that order on the channel's event loop.
/// Any thread may queue; only the event loop writes.
///
/// Bounds, counting every buffer on the server's side: at most `audioFrameLimit` audio frames wait
/// here (beyond, the oldest audio frame is dropped and counted), the channel holds at most a few
/// frames (its write watermark) and the kernel's send buffer a few more (`SO_SNDBUF`), so a client
/// that stalls gets back at most about a second of old audio, then live audio. Text is never
/// dropped: a client whose unread text passes `ServerConfiguration.maxQueuedTextBytes` is closed
/// with 1008.
final class Outbox: @unchecked Sendable {
    // SAFETY: `state` is guarded by `lock`; the channel is thread-safe; writes happen on its loop.
    enum Item {
        case text(ByteBuffer)
        case audio(ByteBuffer)
        case close(WebSocketErrorCode)
    }

    struct State {
        var items = CircularBuffer<Item>(initialCapacity: 8)
        var audioCount = 0
        var textBytes = 0
        var drainScheduled = false
        var closing = false
    }

    let channel: any Channel
    private let lock = NIOLock()
    private var state = State()
    /// Where audio frames dropped here for a slow reader are counted (socket-side drops).
    private let counters: ServerCounters
    /// Resumed once with the close code the socket's handler must close with.
    private let closeRequests: AsyncStream<WebSocketErrorCode>.Continuation
    let closeRequested: AsyncStream<WebSocketErrorCode>

    /// Audio frames that may wait in the queue: with the channel's and the kernel's, about a second
    /// in all (measured: a reader that stalls 3 s gets back 0.86 s of old audio, its own 4 KiB
    /// receive buffer included).
    static let audioFrameLimit = 25
    /// Frames the channel may hold before it stops being writable.
    static let channelFrames = 4
    /// Frames the kernel's send buffer is sized for (it doubles the figure, and its per-packet
    /// overhead means it holds fewer). Not smaller: with 2 frames, ACK clocking on loopback held a
    /// stream to about a frame per tick, so a backlog never drained (latency went from 6 to 145 ms
    /// and stayed there).
    static let socketFrames = 6

    init(channel: any Channel, counters: ServerCounters) {
        self.channel = channel
        self.counters = counters
        (closeRequested, closeRequests) = AsyncStream.makeStream(of: WebSocketErrorCode.self)
    }

    /// Sizes the channel's and the kernel's buffers for frames of `frameBytes` (called again when
    /// the connection's rate changes). Left to autotuning, the kernel alone would queue up to 4 MB,
    /// some 40 s of audio at 48 kHz.
    func sizeBuffers(forFrameBytes frameBytes: Int) {
        let frame = frameBytes + 4  // the WebSocket frame header
        let high = Self.channelFrames * frame
        channel.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: frame, high: high))
            .whenFailure { _ in }
        channel.setOption(ChannelOptions.socketOption(.so_sndbuf), value: SocketOptionValue(Self.socketFrames * frame))
            .whenFailure { _ in }
    }

    // MARK: producers (any thread)

    /// Queues a text message and schedules a drain.
    func send(text: String) {
        let buffer = channel.allocator.buffer(string: text)
        let schedule: Bool = lock.withLock {
            guard !state.closing else { return false }
            if state.textBytes + buffer.readableBytes > ServerConfiguration.maxQueuedTextBytes {
                // A client that does not read its replies: close it rather than grow.
                state.closing = true
                state.items.removeAll()
                state.audioCount = 0
                state.textBytes = 0
                closeRequests.yield(.policyViolation)
                return false
            }
            state.items.append(.text(buffer))
            state.textBytes += buffer.readableBytes
            return markScheduled()
        }
        if schedule { scheduleDrain() }
    }

    /// Queues an audio frame, dropping the oldest queued one beyond the limit. Returns whether the
    /// caller must schedule a drain (delivery batches those per event loop).
    func queue(audio buffer: ByteBuffer) -> Bool {
        var dropped = 0
        let schedule: Bool = lock.withLock {
            guard !state.closing else { return false }
            state.items.append(.audio(buffer))
            state.audioCount += 1
            while state.audioCount > Self.audioFrameLimit, let i = state.items.firstIndex(where: \.isAudio) {
                state.items.remove(at: i)
                state.audioCount -= 1
                dropped += 1
            }
            return markScheduled()
        }
        // ORDERING: relaxed; a statistic.
        if dropped > 0 { counters.socketDroppedFrames.wrappingAdd(dropped, ordering: .relaxed) }
        return schedule
    }

    /// Queues a close after everything queued so far (`call_state` ended, then the close frame).
    func close(_ code: WebSocketErrorCode = .normalClosure) {
        let schedule: Bool = lock.withLock {
            guard !state.closing else { return false }
            state.items.append(.close(code))
            return markScheduled()
        }
        if schedule { scheduleDrain() }
    }

    /// Ends the close requests (the socket has closed).
    func finish() {
        lock.withLock {
            state.closing = true
            state.items.removeAll()
        }
        closeRequests.finish()
    }

    private func markScheduled() -> Bool {
        guard !state.drainScheduled else { return false }
        state.drainScheduled = true
        return true
    }

    func scheduleDrain() {
        channel.eventLoop.execute { self.drain() }
    }

    // MARK: the writer (the channel's event loop)

    /// Writes what is queued, in order, while the channel is writable; then flushes once. When the
    /// channel stops being writable the rest waits for `channelWritabilityChanged`.
    func drain() {
        channel.eventLoop.preconditionInEventLoop()
        var wrote = false
        while true {
            let writable = channel.isWritable
            let item: Item? = lock.withLock {
                guard writable, let item = state.items.popFirst() else {
                    state.drainScheduled = false
                    return nil
                }
                switch item {
                case .audio: state.audioCount -= 1
                case .text(let b): state.textBytes -= b.readableBytes
                case .close: state.closing = true
                }
                return item
            }
            guard let item else { break }
            switch item {
            case .text(let b):
                channel.write(WebSocketFrame(fin: true, opcode: .text, data: b), promise: nil)
                wrote = true
            case .audio(let b):
                channel.write(WebSocketFrame(fin: true, opcode: .binary, data: b), promise: nil)
                wrote = true
            case .close(let code):
                if wrote { channel.flush() }
                closeRequests.yield(code)
                return
            }
        }
        if wrote { channel.flush() }
    }
}

extension Outbox.Item {
    var isAudio: Bool {
        if case .audio = self { return true }
        return false
    }
}

/// Resumes an outbox's drain when its channel becomes writable again (a slow reader caught up).
final class WritabilityHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    let outbox: Outbox
    init(outbox: Outbox) { self.outbox = outbox }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { outbox.drain() }
        context.fireChannelWritabilityChanged()
    }
}
