/// Where the cluster's Redis is and who this node is (`--cluster`, `--node-id`).
public struct ClusterConfiguration: Sendable {
    public var redisHost: String
    public var redisPort: Int
    /// This node's name: 1–40 of `A-Z a-z 0-9 -`. It is part of every call id the node makes.
    public var nodeID: String
    /// How long a node's lease lives without a heartbeat: a node silent this long is dead.
    public var leaseMilliseconds = 3000
    /// How often a node renews its lease, publishes its load and looks for dead nodes.
    public var heartbeatMilliseconds = 1000
    /// Bounds connecting to Redis and each reply.
    public var redisTimeoutMilliseconds = 500
    /// Seconds a dead node's call stays readable as ended (the server's `--ended-retention`).
    public var endedRetentionSeconds = 3600

    /// `redis://HOST:PORT` (port 6379 when absent).
    public init(redisURL: String, nodeID: String) throws(ClusterError) {
        guard redisURL.hasPrefix("redis://") else { throw .invalidConfiguration("--cluster takes redis://HOST:PORT") }
        var rest = Substring(redisURL.dropFirst("redis://".count))
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        var host = String(rest)
        var port = 6379
        if let colon = rest.lastIndex(of: ":") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else {
                throw .invalidConfiguration("--cluster: the port of \(redisURL) is not 1–65535")
            }
            host = String(rest[..<colon])
            port = p
        }
        guard !host.isEmpty else { throw .invalidConfiguration("--cluster: \(redisURL) names no host") }
        guard Self.isValidNodeID(nodeID) else {
            throw .invalidConfiguration("--node-id must be 1 to 40 of A-Z a-z 0-9 -")
        }
        self.redisHost = host
        self.redisPort = port
        self.nodeID = nodeID
    }

    public static func isValidNodeID(_ id: String) -> Bool {
        (1...40).contains(id.utf8.count) && id.utf8.allSatisfy { $0 == UInt8(ascii: "-") || isAlphanumeric($0) }
    }

    static func isAlphanumeric(_ b: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b)
    }
}

/// A node as the cluster sees it (`GET /api/cluster`).
public struct NodeInfo: Sendable, Equatable, Codable {
    public var id: String
    public var url: String
    /// Its lease is held.
    public var alive: Bool
    public var rooms: Int
    public var participants: Int
    public var lateTicks: Int
    /// CPU used over the last heartbeat, in percent of one core.
    public var cpuPercent: Double

    enum CodingKeys: String, CodingKey {
        case id, url, alive, rooms, participants
        case lateTicks = "late_ticks"
        case cpuPercent = "cpu_percent"
    }

    public init(id: String, url: String, alive: Bool, rooms: Int, participants: Int, lateTicks: Int, cpuPercent: Double) {
        self.id = id
        self.url = url
        self.alive = alive
        self.rooms = rooms
        self.participants = participants
        self.lateTicks = lateTicks
        self.cpuPercent = cpuPercent
    }
}

/// What a node reports with each heartbeat: its lease's value in Redis.
public struct NodeLoad: Sendable, Codable {
    public var url: String
    public var rooms: Int
    public var participants: Int
    public var lateTicks: Int
    public var cpuPercent: Double
    enum CodingKeys: String, CodingKey {
        case url, rooms, participants
        case lateTicks = "late_ticks"
        case cpuPercent = "cpu_percent"
    }

    public init(url: String, rooms: Int, participants: Int, lateTicks: Int, cpuPercent: Double) {
        self.url = url
        self.rooms = rooms
        self.participants = participants
        self.lateTicks = lateTicks
        self.cpuPercent = cpuPercent
    }
}

/// A call as the cluster keeps it, so a surviving node can end it if its node dies: its key's tag
/// (never the key) and its call object as JSON.
public struct ClusterCall: Sendable {
    public var id: String
    public var keyTag: String
    public var objectJSON: String
    public init(id: String, keyTag: String, objectJSON: String) {
        self.id = id
        self.keyTag = keyTag
        self.objectJSON = objectJSON
    }
}

/// What the server tells the cluster, and what the cluster tells the server. Called on the
/// cluster's threads: quick, never blocking.
public protocol ClusterDelegate: AnyObject, Sendable {
    /// The node's load now (each heartbeat).
    func load() -> NodeLoad
    /// Every room open here (their names as given to `claim`) and every call not ended: written
    /// again whenever Redis comes back or lost this node's state.
    func localState() -> (rooms: [String], calls: [ClusterCall])
    /// Whether the room is open here (a room's claim is released only when it is not).
    func isOpen(room: String) -> Bool
    /// An account event of another node for the keys of `keyTag` (`subscribe(keyTag:)`).
    func deliver(keyTag: String, text: String)
    /// This node was declared dead while cut off from Redis: its calls were reported ended to
    /// their keys, so they must end here too.
    func declaredDead()
}

public enum ClusterError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    /// Redis cannot be reached, or no live node can take the room.
    case unavailable(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let why), .unavailable(let why): why
        }
    }
}
