import Crypto

/// What the cluster keeps in Redis, and the scripts that change it atomically.
///
///     chamade:nodes                  set of node ids that registered (a dead one stays until reaped)
///     chamade:node:{id}              the node's lease: JSON {url, rooms, participants, late_ticks,
///                                    cpu_percent}, expiring after the lease time
///     chamade:room:{sha256}          the id of the node that owns the room; valid while that node's
///                                    lease lives (so a room costs no write per heartbeat)
///     chamade:calls:{id}             hash: the node's calls not ended, call id → {"key", "object"}
///     chamade:ended:{call id}        a dead node's call, as ended, for GET (expires with retention)
///     chamade:reaped:{id}            tombstone: the node was declared dead (expires in 10 min)
///     chamade:events:{key tag}       pub/sub channel of a key's account events: "origin\ntext"
enum ClusterSchema {
    static let nodes = "chamade:nodes"
    static let leasePrefix = "chamade:node:"
    static func lease(_ node: String) -> String { leasePrefix + node }
    static func room(_ name: String) -> String { "chamade:room:" + hexDigest(name) }
    static func calls(_ node: String) -> String { "chamade:calls:" + node }
    static func ended(_ call: String) -> String { "chamade:ended:" + call }
    static func reaped(_ node: String) -> String { "chamade:reaped:" + node }
    static let eventsPrefix = "chamade:events:"
    static func events(_ keyTag: String) -> String { eventsPrefix + keyTag }

    /// A key's tag: what Redis and other nodes see of it (the first 128 bits of its SHA-256).
    static func tag(ofKey key: String) -> String { String(hexDigest(key).prefix(32)) }

    static func hexDigest(_ text: String) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in SHA256.hash(data: Array(text.utf8)) {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Claims a room for the first of the candidate nodes (in order of preference) that holds its
    /// lease, unless a live node owns it: returns the owner, or nil when no candidate holds a lease
    /// (the caller's view of live nodes can be a heartbeat old). One script, so two claims never
    /// both win. KEYS[1] room; ARGV[1] lease prefix, ARGV[2…] candidates.
    static let claim = """
        local owner = redis.call('GET', KEYS[1])
        if owner and redis.call('EXISTS', ARGV[1] .. owner) == 1 then return owner end
        for i = 2, #ARGV do
          if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 1 then
            redis.call('SET', KEYS[1], ARGV[i])
            return ARGV[i]
          end
        end
        return false
        """

    /// Gives a room up if this node still owns it. KEYS[1] room; ARGV[1] node.
    static let release = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """

    /// Reaps a node: with ARGV[2] = '1', only if it is a member whose lease has expired (and only
    /// one reaper wins: the one whose SREM removed it), leaving a tombstone; with '0', a node's
    /// calls from an earlier life, at its own start. Returns the calls hash (field, value, …) or
    /// nil. KEYS: nodes, calls hash, tombstone, lease; ARGV[1] node.
    static let reap = """
        if ARGV[2] == '1' then
          if redis.call('EXISTS', KEYS[4]) == 1 then return false end
          if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return false end
          redis.call('SET', KEYS[3], '1', 'EX', 600)
        end
        local calls = redis.call('HGETALL', KEYS[2])
        redis.call('DEL', KEYS[2])
        return calls
        """
}
