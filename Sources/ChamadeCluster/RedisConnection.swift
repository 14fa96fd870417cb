import CHiredis
import Glibc

/// Why a Redis command failed.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No connection (refused, reset, timed out): the context is gone and must be made again.
    case unreachable(String)
    /// Redis answered with an error (`-ERR …`).
    case replied(String)

    public var description: String {
        switch self {
        case .unreachable(let why): "Redis unreachable: \(why)"
        case .replied(let why): "Redis error: \(why)"
        }
    }
}

/// The one owner of a hiredis context: a blocking connection, used by one thread only (the
/// cluster's Redis thread or its subscriber thread), never by a tick or an event loop.
///
/// hiredis marks its context broken after any I/O error or timeout; this owner then frees it, and
/// every later command fails at once with `unreachable` until `connect` makes a new one.
final class RedisConnection {
    private var context: UnsafeMutablePointer<redisContext>?
    let host: String
    let port: Int
    /// Bounds connecting and every reply: a Redis that stops answering fails commands, never hangs
    /// the thread.
    let timeoutMilliseconds: Int

    init(host: String, port: Int, timeoutMilliseconds: Int) {
        self.host = host
        self.port = port
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    deinit { disconnect() }

    var isConnected: Bool { context != nil }

    func connect() throws(RedisError) {
        disconnect()
        let tv = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: (timeoutMilliseconds % 1000) * 1000)
        guard let c = redisConnectWithTimeout(host, Int32(port), tv) else { throw .unreachable("out of memory") }
        if c.pointee.err != 0 {
            let why = Self.errorText(c)
            redisFree(c)
            throw .unreachable(why)
        }
        redisSetTimeout(c, tv)
        redisEnableKeepAlive(c)
        context = c
    }

    func disconnect() {
        if let c = context { redisFree(c) }
        context = nil
    }

    /// Sends one command and waits for its reply. A `-ERR` reply throws `replied`; a lost
    /// connection throws `unreachable` and drops the context.
    @discardableResult
    func command(_ arguments: [String]) throws(RedisError) -> RedisReply {
        guard let c = context else { throw .unreachable("not connected") }
        let raw = withArguments(arguments) { argc, argv, lengths in redisCommandArgv(c, argc, argv, lengths) }
        guard let raw else {
            let why = Self.errorText(c)
            disconnect()
            throw .unreachable(why)
        }
        let reply = RedisReply(raw.assumingMemoryBound(to: redisReply.self))
        freeReplyObject(raw)
        if case .error(let why) = reply { throw .replied(why) }
        return reply
    }

    /// Queues a command without waiting (pub/sub: SUBSCRIBE and UNSUBSCRIBE), then writes it out.
    func send(_ arguments: [String]) throws(RedisError) {
        guard let c = context else { throw .unreachable("not connected") }
        let status = withArguments(arguments) { argc, argv, lengths in redisAppendCommandArgv(c, argc, argv, lengths) }
        var done: Int32 = 0
        while status == REDIS_OK, done == 0 {
            guard redisBufferWrite(c, &done) == REDIS_OK else { break }
        }
        if status != REDIS_OK || c.pointee.err != 0 {
            let why = Self.errorText(c)
            disconnect()
            throw .unreachable(why)
        }
    }

    /// A reply already read from the socket, if one is complete (never blocks).
    func bufferedReply() throws(RedisError) -> RedisReply? {
        guard let c = context else { throw .unreachable("not connected") }
        var raw: UnsafeMutableRawPointer?
        guard redisGetReplyFromReader(c, &raw) == REDIS_OK else {
            let why = Self.errorText(c)
            disconnect()
            throw .unreachable(why)
        }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return RedisReply(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// Waits up to `milliseconds` for bytes from Redis and reads what came. False when nothing came.
    func awaitBytes(milliseconds: Int32) throws(RedisError) -> Bool {
        guard let c = context else { throw .unreachable("not connected") }
        var p = pollfd(fd: c.pointee.fd, events: Int16(POLLIN), revents: 0)
        let n = poll(&p, 1, milliseconds)
        if n == 0 || (n < 0 && errno == EINTR) { return false }
        guard n > 0, redisBufferRead(c) == REDIS_OK else {
            let why = n < 0 ? "poll failed" : Self.errorText(c)
            disconnect()
            throw .unreachable(why)
        }
        return true
    }

    /// Runs `body` with hiredis's argv: every argument in one buffer, NUL-terminated, with lengths
    /// (arguments may hold any bytes).
    private func withArguments<R>(
        _ arguments: [String],
        _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
    ) -> R {
        var bytes: [CChar] = []
        var offsets: [Int] = []
        var lengths: [Int] = []
        for a in arguments {
            offsets.append(bytes.count)
            lengths.append(a.utf8.count)
            bytes.append(contentsOf: a.utf8.map { CChar(bitPattern: $0) })
            bytes.append(0)
        }
        return bytes.withUnsafeBufferPointer { base in
            var argv: [UnsafePointer<CChar>?] = offsets.map { base.baseAddress! + $0 }
            return argv.withUnsafeMutableBufferPointer { a in
                lengths.withUnsafeBufferPointer { body(Int32(arguments.count), a.baseAddress!, $0.baseAddress!) }
            }
        }
    }

    private static func errorText(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }.nonEmpty ?? "connection lost"
    }
}

extension String {
    fileprivate var nonEmpty: String? { isEmpty ? nil : self }
}
