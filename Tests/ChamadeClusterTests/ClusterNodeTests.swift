@testable import ChamadeCluster
import Foundation
import NIOConcurrencyHelpers
import Testing

/// A redis-server of the test's own on a free port (Debian's redis-server; no persistence), spawned
/// and reaped with posix_spawn and waitpid (Foundation's Process can hang in waitUntilExit when
/// called from the concurrency pool).
final class RedisServer {
    let port: Int
    private var pid: pid_t = 0

    init() throws {
        // A port nobody listens on now: bind 0, read it, close.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        close(fd)
        port = Int(UInt16(bigEndian: address.sin_port))
        let arguments = ["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                         "--logfile", "/dev/null"]
        var argv = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        guard posix_spawnp(&pid, "redis-server", nil, nil, &argv, environ) == 0 else {
            throw RedisError.unreachable("cannot start redis-server")
        }
        let connection = RedisConnection(host: "127.0.0.1", port: port, timeoutMilliseconds: 500)
        for _ in 0..<100 {
            if (try? connection.connect()) != nil, (try? connection.command(["PING"])) == .status("PONG") { return }
            usleep(50_000)
        }
        throw RedisError.unreachable("redis-server did not start")
    }

    deinit {
        // SIGKILL: the child inherits the test runner's blocked signals, SIGTERM among them.
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

/// What a test node reports and hears.
final class TestDelegate: ClusterDelegate {
    let url: String
    let events = NIOLockedValueBox<[(String, String)]>([])
    let calls = NIOLockedValueBox<[ClusterCall]>([])
    init(url: String) { self.url = url }
    func load() -> NodeLoad { NodeLoad(url: url, rooms: 0, participants: 0, lateTicks: 0, cpuPercent: 0) }
    func localState() -> (rooms: [String], calls: [ClusterCall]) { ([], calls.withLockedValue { $0 }) }
    func isOpen(room: String) -> Bool { false }
    func deliver(keyTag: String, text: String) { events.withLockedValue { $0.append((keyTag, text)) } }
    func declaredDead() {}
}

@Suite(.serialized) struct ClusterNodeTests {
    func node(_ id: String, _ redis: RedisServer) throws -> ClusterNode {
        var c = try ClusterConfiguration(redisURL: "redis://127.0.0.1:\(redis.port)", nodeID: id)
        c.leaseMilliseconds = 1000
        c.heartbeatMilliseconds = 200
        return ClusterNode(configuration: c)
    }

    func waitUntil(_ what: String, seconds: Double = 5, _ probe: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !probe() {
            guard Date() < deadline else { throw RedisError.unreachable("timed out: \(what)") }
            usleep(20_000)
        }
    }

    @Test func configurationParsesRedisURLsAndNodeIDs() throws {
        let c = try ClusterConfiguration(redisURL: "redis://10.0.0.5:7000", nodeID: "node-1")
        #expect(c.redisHost == "10.0.0.5" && c.redisPort == 7000)
        #expect(try ClusterConfiguration(redisURL: "redis://redis", nodeID: "a").redisPort == 6379)
        for bad in ["http://x:1", "redis://:1", "redis://x:0", "redis://x:99999", "redis://x:y"] {
            #expect(throws: ClusterError.self) { try ClusterConfiguration(redisURL: bad, nodeID: "a") }
        }
        for bad in ["", "a_b", "a.b", String(repeating: "x", count: 41), "é"] {
            #expect(throws: ClusterError.self) { try ClusterConfiguration(redisURL: "redis://x:1", nodeID: bad) }
        }
    }

    @Test func callIDsNameTheirNode() throws {
        let redis = try RedisServer()
        let n = try node("eu-west-2", redis)
        let id = n.callID(random: "0123456789abcdef01234567")
        #expect(id == "call_eu-west-2_0123456789abcdef01234567")
        #expect(ClusterNode.node(ofCall: id) == "eu-west-2")
        #expect(ClusterNode.node(ofCall: "call_0123456789abcdef01234567") == nil)
        #expect(ClusterNode.node(ofCall: "call_a.b_01") == nil)
        #expect(ClusterNode.node(ofCall: "nope") == nil)
        // A key's tag: 32 hex digits of its SHA-256, never the key.
        #expect(ClusterNode.tag(ofKey: "abc") == "ba7816bf8f01cfea414140de5dae2223")
    }

    @Test func anUnreachableRedisFailsAtOnce() throws {
        let connection = RedisConnection(host: "127.0.0.1", port: 1, timeoutMilliseconds: 200)
        #expect(throws: RedisError.self) { try connection.connect() }
        #expect(throws: RedisError.unreachable("not connected")) { try connection.command(["PING"]) }
    }

    @Test func repliesOfEveryKind() throws {
        let redis = try RedisServer()
        let c = RedisConnection(host: "127.0.0.1", port: redis.port, timeoutMilliseconds: 500)
        try c.connect()
        #expect(try c.command(["SET", "k", "v\u{0}with nul and é"]) == .status("OK"))
        #expect(try c.command(["GET", "k"]) == .string("v\u{0}with nul and é"))
        #expect(try c.command(["GET", "absent"]) == .null)
        #expect(try c.command(["INCRBY", "n", "41"]) == .integer(41))
        #expect(try c.command(["RPUSH", "l", "a", "b"]) == .integer(2))
        #expect(try c.command(["LRANGE", "l", "0", "-1"]) == .array([.string("a"), .string("b")]))
        do {
            try c.command(["NOPE"])
            Issue.record("an unknown command succeeded")
        } catch {
            guard case .replied(let why) = error else { throw error }
            #expect(why.hasPrefix("ERR unknown command"))
        }
        // An error reply leaves the connection usable.
        #expect(try c.command(["PING"]) == .status("PONG"))
    }

    /// Two nodes claiming the same 200 rooms at once, each for itself: every room gets exactly one
    /// owner, the one Redis holds, and both nodes were told the same.
    @Test func concurrentClaimsGiveOneOwner() async throws {
        let redis = try RedisServer()
        let a = try node("a", redis)
        let b = try node("b", redis)
        a.start(delegate: TestDelegate(url: "http://a"))
        b.start(delegate: TestDelegate(url: "http://b"))
        defer {
            a.stop()
            b.stop()
        }
        try waitUntil("both alive") { a.liveNodes().count == 2 && b.liveNodes().count == 2 }
        let rooms = (0..<200).map { "discord\nhttps://x/\($0)" }
        async let fromA = withThrowingTaskGroup(of: (String, String).self) { g in
            for r in rooms { g.addTask { (r, try await a.claimForSelf(room: r).id) } }
            return try await g.reduce(into: [String: String]()) { $0[$1.0] = $1.1 }
        }
        async let fromB = withThrowingTaskGroup(of: (String, String).self) { g in
            for r in rooms { g.addTask { (r, try await b.claimForSelf(room: r).id) } }
            return try await g.reduce(into: [String: String]()) { $0[$1.0] = $1.1 }
        }
        let (ownersA, ownersB) = try await (fromA, fromB)
        #expect(ownersA == ownersB)
        let check = RedisConnection(host: "127.0.0.1", port: redis.port, timeoutMilliseconds: 500)
        try check.connect()
        for r in rooms {
            #expect(try check.command(["GET", ClusterSchema.room(r)]).string == ownersA[r])
        }
    }

    /// A node that stops heartbeating (its threads stopped without leaving, like a SIGKILL) is
    /// reaped by the other within lease + heartbeat: its calls' keys hear `bridge_disconnected` and
    /// `ended`, the calls stay readable as ended, its rooms go to the survivor.
    @Test func aSilentNodeIsReapedAndItsRoomsMove() async throws {
        let redis = try RedisServer()
        let survivor = try node("s", redis)
        let watcher = TestDelegate(url: "http://s")
        survivor.start(delegate: watcher)
        defer { survivor.stop() }
        let tag = ClusterNode.tag(ofKey: "key")
        survivor.subscribe(keyTag: tag)
        await survivor.subscribed(keyTag: tag)

        // The node that will die: registered by hand (a ClusterNode always leaves cleanly).
        let c = RedisConnection(host: "127.0.0.1", port: redis.port, timeoutMilliseconds: 500)
        try c.connect()
        try c.command(["SET", ClusterSchema.lease("d"), ClusterNode.leaseJSON(NodeLoad(url: "http://d", rooms: 1, participants: 1, lateTicks: 0, cpuPercent: 0)), "PX", "600"])
        try c.command(["SADD", ClusterSchema.nodes, "d"])
        try c.command(["SET", ClusterSchema.room("discord\nhttps://x/d"), "d"])
        let object = #"{"call_id":"call_d_1","state":"active","ended_at":null}"#
        try c.command(["HSET", ClusterSchema.calls("d"), "call_d_1", ClusterNode.callRecord(ClusterCall(id: "call_d_1", keyTag: tag, objectJSON: object))])
        try waitUntil("the dead node seen alive first") { survivor.node("d") != nil }
        #expect(try await survivor.place(room: "discord\nhttps://x/d").id == "d")

        let start = Date()
        try waitUntil("reaped", seconds: 5) { watcher.events.withLockedValue { $0.count } >= 2 }
        let took = Date().timeIntervalSince(start)
        // The lease (0.6 s left) and the survivor's grace after its start (1.2 s), plus a heartbeat.
        #expect(took < 3)
        let texts = watcher.events.withLockedValue { $0.map(\.1) }
        #expect(texts[0].contains(#""code":"bridge_disconnected""#) && texts[0].contains(#""call_id":"call_d_1""#))
        #expect(texts[1] == #"{"call_id":"call_d_1","state":"ended","type":"call_state"}"#)
        let ended = try #require(try await survivor.endedCall("call_d_1"))
        #expect(ended.keyTag == tag && ended.objectJSON.contains(#""state":"ended""#))
        #expect(try c.command(["SISMEMBER", ClusterSchema.nodes, "d"]) == .integer(0))
        #expect(try c.command(["EXISTS", ClusterSchema.calls("d")]) == .integer(0))
        #expect(try await survivor.place(room: "discord\nhttps://x/d").id == "s")
    }
}
