import CHiredis

/// A reply of Redis, copied out of hiredis's reply object (which is freed at once).
public enum RedisReply: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int)
    case string(String)
    case array([RedisReply])
    case null

    /// Copies hiredis's reply tree. The caller frees it.
    init(_ r: UnsafeMutablePointer<redisReply>) {
        let reply = r.pointee
        func text() -> String {
            guard let s = reply.str else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: s, count: Int(reply.len)), as: UTF8.self)
        }
        switch reply.type {
        case REDIS_REPLY_STATUS: self = .status(text())
        case REDIS_REPLY_ERROR: self = .error(text())
        case REDIS_REPLY_INTEGER: self = .integer(Int(reply.integer))
        case REDIS_REPLY_STRING: self = .string(text())
        case REDIS_REPLY_ARRAY:
            var items: [RedisReply] = []
            items.reserveCapacity(Int(reply.elements))
            for i in 0..<Int(reply.elements) {
                if let e = reply.element[i] { items.append(RedisReply(e)) } else { items.append(.null) }
            }
            self = .array(items)
        default: self = .null
        }
    }

    public var string: String? {
        switch self {
        case .string(let s), .status(let s): s
        default: nil
        }
    }

    public var integer: Int? {
        if case .integer(let n) = self { return n }
        return nil
    }

    public var array: [RedisReply] {
        if case .array(let items) = self { return items }
        return []
    }
}
