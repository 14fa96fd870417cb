import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// Refuses a request whose head (request line and headers) passes 16 KiB with 431 and the JSON
/// error body, then closes (SPEC §3, §9).
///
/// It sits first in the pipeline (after TLS) and reads raw bytes: NIO's HTTP decoder reports an
/// oversized head as a parse error, which Hummingbird answers with an empty 400. It follows the
/// HTTP/1.1 framing only as far as needed to find each head: a body announced by `Content-Length`
/// is skipped; after a chunked body or an upgrade request it steps aside.
final class HeadLimitHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    // SAFETY: used only on its channel's event loop.
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    enum Phase {
        /// Inside a head: `count` bytes so far, `tail` the last four bytes (to find CRLFCRLF).
        case head(count: Int, tail: UInt32, lines: [UInt8])
        /// Inside a body with this many bytes left.
        case body(remaining: Int)
        /// Not watching any more (chunked body, upgrade, or refused).
        case off
    }

    private var phase = Phase.head(count: 0, tail: 0, lines: [])
    let limit: Int

    init(limit: Int = ServerConfiguration.maxHeaderBytes) { self.limit = limit }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if case .off = phase {
            context.fireChannelRead(data)
            return
        }
        var refused = false
        buffer.withUnsafeReadableBytes { bytes in
            var i = 0
            while i < bytes.count {
                switch phase {
                case .off:
                    return
                case .body(let remaining):
                    let n = min(remaining, bytes.count - i)
                    i += n
                    phase = remaining - n == 0 ? .head(count: 0, tail: 0, lines: []) : .body(remaining: remaining - n)
                case .head(var count, var tail, var lines):
                    var complete = false
                    while i < bytes.count && !complete {
                        let b = bytes[i]
                        i += 1
                        count += 1
                        tail = (tail << 8) | UInt32(b)
                        // Keep the header lines (lower-cased) only as long as they fit the limit.
                        if lines.count < limit { lines.append(b | (b >= 65 && b <= 90 ? 0x20 : 0)) }
                        if count > limit {
                            refused = true
                            phase = .off
                            return
                        }
                        if tail == 0x0D0A_0D0A {
                            phase = Self.next(afterHead: lines)
                            complete = true
                        }
                    }
                    if !complete { phase = .head(count: count, tail: tail, lines: lines) }
                }
            }
        }
        if refused {
            refuse(context: context)
            return
        }
        context.fireChannelRead(data)
    }

    /// What follows a complete head.
    static func next(afterHead head: [UInt8]) -> Phase {
        let text = String(decoding: head, as: UTF8.self)
        if text.contains("\nupgrade:") || text.contains("transfer-encoding:") { return .off }
        for line in text.split(separator: "\r\n") where line.hasPrefix("content-length:") {
            let value = line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)
            guard let n = Int(value), n >= 0 else { return .off }
            return n == 0 ? .head(count: 0, tail: 0, lines: []) : .body(remaining: n)
        }
        return .head(count: 0, tail: 0, lines: [])
    }

    private func refuse(context: ChannelHandlerContext) {
        let body = APIError.headersTooLarge.body
        let response =
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            + "content-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n" + body
        let channel = context.channel
        context.writeAndFlush(NIOAny(channel.allocator.buffer(string: response))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// A child channel that puts `HeadLimitHandler` in front of another child channel's pipeline.
struct HeadLimitedChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(HeadLimitHandler())
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HeadLimitedChannel: HTTPChannelHandler where Base: HTTPChannelHandler {
    var responder: HTTPChannelHandler.Responder { base.responder }
}
