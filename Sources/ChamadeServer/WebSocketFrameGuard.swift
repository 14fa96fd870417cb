import NIOCore
import NIOWebSocket

/// Checks a client's WebSocket frames before the library aggregates them (SPEC §9, RFC 6455):
/// - an unmasked frame from the client closes the connection with 1002;
/// - a continuation with no message begun, or a new message before the last one ended: 1002;
/// - a message of more than 1,000 fragments or more than 16 MiB: 1009. The library counts bytes
///   only, so a stream of empty continuations grew the server by ~110 bytes each, without end.
/// Control frames pass (they may come between fragments).
final class WebSocketFrameGuard: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    // SAFETY: used only on its channel's event loop.
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    static let maxFragments = 1000

    private var inMessage = false
    private var fragments = 0
    private var bytes = 0
    private var closed = false
    let maxMessageBytes: Int

    init(maxMessageBytes: Int = ServerConfiguration.maxMessageBytes) { self.maxMessageBytes = maxMessageBytes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed else { return }
        let frame = unwrapInboundIn(data)
        guard frame.maskKey != nil else { return fail(.protocolError, "client frames must be masked", context: context) }
        switch frame.opcode {
        case .text, .binary:
            guard !inMessage else { return fail(.protocolError, "a new message began before the last one ended", context: context) }
            inMessage = !frame.fin
            fragments = 1
            bytes = frame.length
        case .continuation:
            guard inMessage else { return fail(.protocolError, "a continuation frame with no message begun", context: context) }
            fragments += 1
            bytes += frame.length
            guard fragments <= Self.maxFragments else {
                return fail(.messageTooLarge, "a message of more than 1,000 fragments", context: context)
            }
            guard bytes <= maxMessageBytes else {
                return fail(.messageTooLarge, "a message of more than 16 MiB", context: context)
            }
            if frame.fin { inMessage = false }
        default:
            break
        }
        context.fireChannelRead(data)
    }

    /// Sends the close frame with `code`, then closes; nothing more is read.
    private func fail(_ code: WebSocketErrorCode, _ reason: String, context: ChannelHandlerContext) {
        closed = true
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)))
            .whenComplete { _ in channel.close(promise: nil) }
    }
}
