import ChamadeWire
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import enum NIOHTTP1.HTTPParserError
import struct NIOWebSocket.NIOWebSocketUpgradeError

/// The first handler of every connection (after TLS): it reads the raw bytes, holds each request
/// head until it is complete and checked, and answers every malformed one itself (SPEC §9).
///
/// NIO's parser is configured by Hummingbird to report errors to no one, so a bad head used to get
/// no answer and the connection stayed open for good. Here each head is checked by
/// `HTTPRequestHead` (ChamadeWire) before any of it goes on; a refusal is written with its status
/// and the JSON error body, and the connection closed:
/// - 431 past 16 KiB of head, 408 when a head is not complete 10 s after the connection opened or
///   after its first byte, 400 / 413 / 501 / 505 as the check decides;
/// - a body announced by `Content-Length` is passed through as it is; after a chunked request, or
///   an HTTP/1.0 one without keep-alive, the connection closes once answered (`Connection: close`
///   is added to the head Hummingbird sees);
/// - after a WebSocket handshake, every frame header is checked by `ClientFrameChecker`
///   (ChamadeWire): masking, opcodes, fragments and sizes (SPEC §9), 1002 / 1009 and close.
/// What still trips NIO's parser (a malformed chunked body) reaches `ParseErrorWatcher`, which has
/// the guard answer 400.
final class RequestGuard: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    // SAFETY: used only on its channel's event loop.
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Phase {
        /// Between requests, or inside a head (its bytes so far).
        case head
        /// Inside a body with this many bytes left.
        case body(remaining: Int)
        /// After a WebSocket handshake: the bytes are frames, followed by `ClientFrameChecker`.
        case webSocket
        /// Inside a chunked body, which NIO frames (the connection closes after its response).
        case chunked
        /// Refused: everything further is dropped.
        case refused
    }

    private var phase = Phase.head
    private var pending: [UInt8] = []
    private var frames = ClientFrameChecker(maxMessageBytes: ServerConfiguration.maxMessageBytes)
    /// A handshake went on and its answer (101, or a refusal) has not been written yet: a frame
    /// violation found meanwhile waits for it, so the client reads the 101 before the close frame.
    private var awaitingHandshakeAnswer = false
    private var deferredViolation: ClientFrameChecker.Violation?
    private var deadline: Scheduled<Void>?
    let headLimit: Int
    let headSeconds: Int64

    init(headLimit: Int = ServerConfiguration.maxHeaderBytes, headSeconds: Int64 = ServerConfiguration.headTimeoutSeconds) {
        self.headLimit = headLimit
        self.headSeconds = headSeconds
    }

    func channelActive(context: ChannelHandlerContext) {
        // A connection that sends nothing is held to the same 10 s as a slow head.
        armDeadline(context: context)
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armDeadline(context: context) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        switch phase {
        case .chunked:
            context.fireChannelRead(data)
            return
        case .webSocket:
            if let violation = buffer.withUnsafeReadableBytes({ frames.consume($0) }) {
                closeWebSocket(violation, context: context)
            } else {
                context.fireChannelRead(data)
            }
            return
        case .refused:
            return
        case .head, .body:
            break
        }
        var out = context.channel.allocator.buffer(capacity: buffer.readableBytes)
        var refusal: APIError?
        var webSocketViolation: ClientFrameChecker.Violation?
        buffer.withUnsafeReadableBytes { bytes in
            var i = 0
            while i < bytes.count, refusal == nil {
                switch phase {
                case .chunked:
                    out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[i...]))
                    i = bytes.count
                case .webSocket:
                    // Frames sent in the same packet as the handshake are checked like the rest.
                    let rest = UnsafeRawBufferPointer(rebasing: bytes[i...])
                    if let violation = frames.consume(rest) {
                        webSocketViolation = violation
                    } else {
                        out.writeBytes(rest)
                    }
                    i = bytes.count
                case .refused:
                    i = bytes.count
                case .body(let remaining):
                    let n = min(remaining, bytes.count - i)
                    out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[i..<(i + n)]))
                    i += n
                    phase = remaining == n ? .head : .body(remaining: remaining - n)
                case .head:
                    if pending.isEmpty && deadline == nil { armDeadline(context: context) }
                    while i < bytes.count {
                        pending.append(bytes[i])
                        i += 1
                        if bytes[i - 1] == 0x0A, pending.count < 2 || pending[pending.count - 2] != 0x0D {
                            refusal = .badRequest("invalid_request", "a line ends in a bare LF: HTTP lines end in CRLF")
                            break
                        }
                        if pending.count > headLimit {
                            refusal = .headersTooLarge
                            break
                        }
                        if pending.count >= 4, pending[pending.count - 1] == 0x0A, pending[pending.count - 2] == 0x0D,
                            pending[pending.count - 3] == 0x0A, pending[pending.count - 4] == 0x0D
                        {
                            refusal = completeHead(into: &out)
                            break
                        }
                    }
                }
            }
        }
        if out.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(out)) }
        if let refusal { refuse(refusal, context: context) }
        if let violation = webSocketViolation { closeWebSocket(violation, context: context) }
    }

    /// Checks the head held in `pending` and, if it passes, writes it (rewritten if need be) to
    /// `out` and moves on to its body. Returns the refusal otherwise.
    private func completeHead(into out: inout ByteBuffer) -> APIError? {
        deadline?.cancel()
        deadline = nil
        let checked = pending.withUnsafeBytes { raw in
            Result { () throws(HTTPRequestHead.Refusal) in
                try HTTPRequestHead(parsing: raw, maxBodyBytes: ServerConfiguration.maxBodyBytes)
            }
        }
        let head: HTTPRequestHead
        switch checked {
        case .success(let h): head = h
        case .failure(let r): return APIError(.init(code: r.status), r.code, r.message)
        }
        if (head.closesAfterResponse || head.body == .chunked) && !head.asksToClose {
            // Hummingbird closes after a response to a request that says `Connection: close` (once:
            // a second Connection header would read "close, close", which it does not take).
            out.writeBytes(pending[0..<(pending.count - 2)])
            out.writeString("connection: close\r\n\r\n")
        } else {
            out.writeBytes(pending)
        }
        pending.removeAll(keepingCapacity: true)
        switch head.body {
        case _ where head.isUpgrade:
            phase = .webSocket
            awaitingHandshakeAnswer = true
        case .chunked: phase = .chunked
        case .length(let n): phase = .body(remaining: n)
        case .none: phase = .head
        }
        return nil
    }

    private func armDeadline(context: ChannelHandlerContext) {
        deadline?.cancel()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: .seconds(headSeconds)) {
            let (guardHandler, context) = loopBound.value
            guardHandler.deadline = nil
            guard case .head = guardHandler.phase else { return }
            guardHandler.refuse(.requestTimeout, context: context)
        }
    }

    /// A request NIO's parser could not read (past the guard's checks: a malformed chunked body).
    /// After an upgrade the errors are the WebSocket's, not HTTP's.
    func parseFailed(context: ChannelHandlerContext) {
        if case .webSocket = phase { return }
        refuse(.badRequest("invalid_request", "the request could not be parsed as HTTP/1.1"), context: context)
    }

    /// Sends the close frame a frame violation calls for (server frames are unmasked), then closes;
    /// nothing more is read. Written from here, in front of the WebSocket encoder: a whole frame
    /// between the encoder's, on the event loop.
    private func closeWebSocket(_ violation: ClientFrameChecker.Violation, context: ChannelHandlerContext) {
        phase = .refused
        if awaitingHandshakeAnswer {
            deferredViolation = violation
            return
        }
        writeClose(violation, context: context)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard awaitingHandshakeAnswer else {
            context.write(data, promise: promise)
            return
        }
        awaitingHandshakeAnswer = false
        guard let violation = deferredViolation else {
            context.write(data, promise: promise)
            return
        }
        let upgraded = unwrapOutboundIn(data).readableBytesView.starts(with: "HTTP/1.1 101".utf8)
        context.write(data, promise: promise)
        if upgraded {
            writeClose(violation, context: context)
        } else {
            let channel = context.channel
            context.flush()
            channel.close(promise: nil)
        }
    }

    private func writeClose(_ violation: ClientFrameChecker.Violation, context: ChannelHandlerContext) {
        let reason = Array(violation.reason.utf8.prefix(123))
        var frame = context.channel.allocator.buffer(capacity: 4 + reason.count)
        frame.writeInteger(UInt8(0x88))
        frame.writeInteger(UInt8(2 + reason.count))
        frame.writeInteger(violation.code)
        frame.writeBytes(reason)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }

    /// Writes the refusal with its JSON body and closes; nothing more is read.
    func refuse(_ error: APIError, context: ChannelHandlerContext) {
        if case .refused = phase { return }
        phase = .refused
        deadline?.cancel()
        deadline = nil
        let body = error.body
        let response =
            "HTTP/1.1 \(error.status.code) \(error.status.reasonPhrase)\r\n"
            + "content-type: application/json\r\ncontent-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n" + body
        let channel = context.channel
        context.writeAndFlush(NIOAny(channel.allocator.buffer(string: response))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// Sits after NIO's HTTP decoder, where its errors arrive (Hummingbird turns off NIO's own error
/// handling and answers none of them): has the connection's `RequestGuard` answer 400 and close.
final class ParseErrorWatcher: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    // SAFETY: used only on its channel's event loop.
    typealias InboundIn = NIOAny

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Only the parser's errors and a handshake NIO refused: an I/O error is not the client's
        // request, and after an upgrade the errors are the WebSocket's.
        guard error is HTTPParserError || error is NIOWebSocketUpgradeError,
            let requestGuard = try? context.pipeline.syncOperations.handler(type: RequestGuard.self),
            let guardContext = try? context.pipeline.syncOperations.context(handlerType: RequestGuard.self)
        else {
            context.fireErrorCaught(error)
            return
        }
        requestGuard.parseFailed(context: guardContext)
        context.fireErrorCaught(error)
    }
}

/// A child channel that puts `RequestGuard` in front of another child channel's pipeline, and
/// `ParseErrorWatcher` behind the HTTP decoder it sets up.
struct GuardedChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Appended: behind TLS when a TLS channel has set up its handler first.
            try channel.pipeline.syncOperations.addHandler(RequestGuard())
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }.flatMapThrowing { value in
            try channel.pipeline.syncOperations.addHandler(ParseErrorWatcher())
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension GuardedChannel: HTTPChannelHandler where Base: HTTPChannelHandler {
    var responder: HTTPChannelHandler.Responder { base.responder }
}
