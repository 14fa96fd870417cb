import Foundation
import Logging
import MCP
#if canImport(Glibc)
import Glibc
#endif

/// MCP over stdio, newline-delimited JSON-RPC, read by a blocking `read(2)` on a thread of its own.
///
/// Why not the SDK's `StdioTransport`: it sets stdin non-blocking and, when nothing is there,
/// sleeps 10 ms and tries again. Measured through it, a `chamade_call_status` took 10 ms at the
/// median for a 0.6 ms API call, and an idle `chamade mcp` woke 100 times a second. A blocking
/// read wakes exactly when a message arrives and costs nothing idle.
actor LineTransport: Transport {
    nonisolated let logger: Logger
    private let stream: AsyncThrowingStream<Data, any Swift.Error>
    private let continuation: AsyncThrowingStream<Data, any Swift.Error>.Continuation
    private var reading = false

    init(logger: Logger) {
        self.logger = logger
        (stream, continuation) = AsyncThrowingStream.makeStream()
    }

    func connect() async throws {
        guard !reading else { return }
        reading = true
        let (continuation, logger) = (continuation, logger)
        Thread.detachNewThread {
            var pending = Data()
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
                if n < 0, errno == EINTR { continue }
                guard n > 0 else {
                    if n < 0 { logger.error("stdin: read failed (errno \(errno))") }
                    break
                }
                pending.append(contentsOf: buffer[0..<n])
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = pending[pending.startIndex..<newline]
                    pending = Data(pending[(newline + 1)...])
                    if !line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) {
                        continuation.yield(Data(line))
                    }
                }
            }
            // EOF: the client is gone; the server's loop ends with the stream.
            continuation.finish()
        }
    }

    func disconnect() async {
        continuation.finish()
    }

    /// One message and its newline, written whole (a blocking write: stdout is ours alone).
    func send(_ data: Data) async throws {
        var message = data
        message.append(UInt8(ascii: "\n"))
        try message.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(STDOUT_FILENO, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw MCPError.internalError("stdout: write failed (errno \(errno))")
                }
                offset += n
            }
        }
    }

    func receive() -> AsyncThrowingStream<Data, any Swift.Error> { stream }
}
