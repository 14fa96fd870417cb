import Foundation
import NIOConcurrencyHelpers

/// This node's membership of a cluster on Redis (SPEC §10): its lease and load, room claims, the
/// index of its calls, account events across nodes, and the reaping of dead nodes.
///
/// Every Redis operation runs on the node's Redis thread (`RedisWorker`, one connection, in the
/// order asked) or its subscriber thread (`RedisSubscriber`); callers never wait on Redis but for
/// the answers they need (a room's owner, a dead node's call). Writes that only keep the index are
/// queued and not waited for: when Redis comes back, or has lost this node's state, the node writes
/// its whole state again (rooms and calls), so nothing queued during an outage needs replaying.
public final class ClusterNode: Sendable {
    public let configuration: ClusterConfiguration
    public var id: String { configuration.nodeID }

    private struct Membership {
        /// The live nodes at the last heartbeat, with what they reported.
        var nodes: [String: NodeInfo] = [:]
        /// Rooms placed (node, monotonic ms) in the last two heartbeats: a node's report lags its
        /// placements by up to a heartbeat of its own and one of this node's, so placements in a
        /// burst spread.
        var placed: [(node: String, atMs: Int64)] = []
        /// Redis answered the last operation.
        var reachable = false
        /// No node is reaped before this (monotonic ms): after Redis comes back, every node needs a
        /// heartbeat to renew its lease first.
        var reapAfter: Int64 = 0
        var started = false
    }
    private let membership = NIOLockedValueBox(Membership())
    private let worker: RedisWorker
    private let subscriber: RedisSubscriber
    private let delegateBox = NIOLockedValueBox<(any ClusterDelegate)?>(nil)
    private let subscriptions = NIOLockedValueBox<[String: Int]>([:])

    public init(configuration: ClusterConfiguration) {
        self.configuration = configuration
        let holder = NIOLockedValueBox<ClusterNode?>(nil)
        worker = RedisWorker(
            host: configuration.redisHost, port: configuration.redisPort,
            timeoutMilliseconds: configuration.redisTimeoutMilliseconds,
            periodMilliseconds: configuration.heartbeatMilliseconds
        ) { connection, reconnected in
            holder.withLockedValue { $0 }?.heartbeat(connection, reconnected: reconnected)
        }
        let me = configuration.nodeID
        subscriber = RedisSubscriber(
            host: configuration.redisHost, port: configuration.redisPort,
            timeoutMilliseconds: configuration.redisTimeoutMilliseconds
        ) { channel, payload in
            guard let node = holder.withLockedValue({ $0 }), channel.hasPrefix(ClusterSchema.eventsPrefix),
                let newline = payload.firstIndex(of: "\n")
            else { return }
            // This node delivered its own events when it published them.
            guard payload[..<newline] != me else { return }
            let tag = String(channel.dropFirst(ClusterSchema.eventsPrefix.count))
            node.delegate?.deliver(keyTag: tag, text: String(payload[payload.index(after: newline)...]))
        }
        holder.withLockedValue { $0 = self }
        // The holder keeps the node alive while the threads run; `stop` ends them.
    }

    private var delegate: (any ClusterDelegate)? { delegateBox.withLockedValue { $0 } }

    /// Starts the threads: the first heartbeat registers the node.
    public func start(delegate: any ClusterDelegate) {
        delegateBox.withLockedValue { $0 = delegate }
        worker.start()
        subscriber.start()
    }

    /// Leaves the cluster (after the server ended its calls): the lease, the membership and the
    /// call index go, so no node reports these calls again.
    public func stop() {
        let me = id
        worker.stop { connection in
            guard let connection else { return }
            _ = try? connection.command(["DEL", ClusterSchema.lease(me), ClusterSchema.calls(me)])
            _ = try? connection.command(["SREM", ClusterSchema.nodes, me])
        }
        subscriber.stop()
    }

    /// Redis answered this node's last operation.
    public var isReachable: Bool { membership.withLockedValue { $0.reachable } }

    // MARK: ids and keys

    /// A new call id naming this node: `call_{node}_{random}`.
    public func callID(random: String) -> String { "call_\(id)_\(random)" }

    /// The node a call id names, if it is a cluster call id.
    public static func node(ofCall callID: String) -> String? {
        guard callID.hasPrefix("call_") else { return nil }
        let rest = callID.dropFirst(5)
        guard let last = rest.lastIndex(of: "_") else { return nil }
        let node = String(rest[..<last])
        return ClusterConfiguration.isValidNodeID(node) ? node : nil
    }

    public static func tag(ofKey key: String) -> String { ClusterSchema.tag(ofKey: key) }

    // MARK: rooms

    /// The live node that owns `room`, placing it first on the least-loaded live node if no live
    /// node owns it.
    public func place(room: String) async throws(ClusterError) -> NodeInfo {
        try await claim(room: room, for: byLoad())
    }

    /// Claims `room` for this node, unless a live node owns it: returns the owner.
    public func claimForSelf(room: String) async throws(ClusterError) -> NodeInfo {
        try await claim(room: room, for: [id])
    }

    private func claim(room: String, for candidates: [String]) async throws(ClusterError) -> NodeInfo {
        let key = ClusterSchema.room(room)
        let owner: (String, String?)
        do throws(RedisError) {
            owner = try await worker.perform { connection throws(RedisError) -> (String, String?) in
                guard let connection else { throw .unreachable("not connected") }
                let reply = try connection.command(["EVAL", ClusterSchema.claim, "1", key, ClusterSchema.leasePrefix] + candidates)
                guard let owner = reply.string else { throw .replied("no live node to place the room on") }
                // The owner's URL: from the last heartbeat, or its lease when it is newer than that.
                let known = self.membership.withLockedValue { $0.nodes[owner] } != nil
                return (owner, known ? nil : try connection.command(["GET", ClusterSchema.lease(owner)]).string)
            }
        } catch {
            membership.withLockedValue { if case .unreachable = error { $0.reachable = false } }
            throw .unavailable(error.description)
        }
        return membership.withLockedValue { m in
            m.placed.append((owner.0, RedisWorker.nowMs()))
            if let info = m.nodes[owner.0] { return info }
            let info = owner.1.flatMap { Self.decodeLease(node: owner.0, json: $0) }
                ?? NodeInfo(id: owner.0, url: "", alive: true, rooms: 0, participants: 0, lateTicks: 0, cpuPercent: 0)
            m.nodes[owner.0] = info
            return info
        }
    }

    /// Gives up the claim on `room` if it is still closed here when the Redis thread gets to it
    /// (a create that reopened it in between keeps the claim).
    public func release(room: String) {
        let me = id
        worker.submit { [weak self] connection in
            guard let connection, self?.delegate?.isOpen(room: room) == false else { return }
            _ = try? connection.command(["EVAL", ClusterSchema.release, "1", ClusterSchema.room(room), me])
        }
    }

    /// The live nodes, least loaded first (participants, then rooms, then id), counting what was
    /// placed since their reports; this node last if it is not among them.
    func byLoad() -> [String] {
        let since = RedisWorker.nowMs() - 2 * Int64(configuration.heartbeatMilliseconds)
        return membership.withLockedValue { m in
            var recent: [String: Int] = [:]
            for p in m.placed where p.atMs > since { recent[p.node, default: 0] += 1 }
            let ranked = m.nodes.values.filter(\.alive).map { n in
                let placed = recent[n.id, default: 0]
                return (load: n.participants + placed, rooms: n.rooms + placed, id: n.id)
            }.sorted { ($0.load, $0.rooms, $0.id) < ($1.load, $1.rooms, $1.id) }.map(\.id)
            return ranked.contains(id) ? ranked : ranked + [id]
        }
    }

    // MARK: nodes

    /// A live node from the last heartbeat.
    public func node(_ id: String) -> NodeInfo? { membership.withLockedValue { $0.nodes[id] } }

    /// The live nodes from the last heartbeat.
    public func liveNodes() -> [NodeInfo] {
        membership.withLockedValue { Array($0.nodes.values) }.sorted { $0.id < $1.id }
    }

    /// Every registered node from Redis now, alive or not yet reaped.
    public func nodes() async throws(ClusterError) -> [NodeInfo] {
        do throws(RedisError) {
            return try await worker.perform { connection throws(RedisError) -> [NodeInfo] in
                guard let connection else { throw .unreachable("not connected") }
                return try Self.readNodes(connection)
            }
        } catch {
            throw .unavailable(error.description)
        }
    }

    static func readNodes(_ connection: RedisConnection) throws(RedisError) -> [NodeInfo] {
        let ids = try connection.command(["SMEMBERS", ClusterSchema.nodes]).array.compactMap(\.string).sorted()
        guard !ids.isEmpty else { return [] }
        let leases = try connection.command(["MGET"] + ids.map(ClusterSchema.lease)).array
        return zip(ids, leases).map { id, lease in
            lease.string.flatMap { decodeLease(node: id, json: $0) }
                ?? NodeInfo(id: id, url: "", alive: false, rooms: 0, participants: 0, lateTicks: 0, cpuPercent: 0)
        }
    }

    /// A lease's node: alive, since its lease is there.
    static func decodeLease(node: String, json: String) -> NodeInfo? {
        guard let l = try? JSONDecoder().decode(NodeLoad.self, from: Data(json.utf8)) else { return nil }
        return NodeInfo(
            id: node, url: l.url, alive: true, rooms: l.rooms, participants: l.participants, lateTicks: l.lateTicks,
            cpuPercent: l.cpuPercent)
    }

    // MARK: calls

    /// Adds a call to this node's index (for a surviving node to end it if this one dies).
    public func register(_ call: ClusterCall) {
        let me = id
        let value = Self.callRecord(call)
        worker.submit { connection in _ = try? connection?.command(["HSET", ClusterSchema.calls(me), call.id, value]) }
    }

    /// Removes an ended call from this node's index.
    public func unregister(callID: String) {
        let me = id
        worker.submit { connection in _ = try? connection?.command(["HDEL", ClusterSchema.calls(me), callID]) }
    }

    /// A call of a dead node, as ended, if it is still kept.
    public func endedCall(_ callID: String) async throws(ClusterError) -> ClusterCall? {
        let record: String?
        do throws(RedisError) {
            record = try await worker.perform { connection throws(RedisError) -> String? in
                guard let connection else { throw .unreachable("not connected") }
                return try connection.command(["GET", ClusterSchema.ended(callID)]).string
            }
        } catch {
            throw .unavailable(error.description)
        }
        guard let record, let (tag, object) = Self.parseRecord(record) else { return nil }
        return ClusterCall(id: callID, keyTag: tag, objectJSON: Self.json(object))
    }

    /// A call record's key tag and call object.
    static func parseRecord(_ record: String) -> (String, [String: Any])? {
        guard let r = try? JSONSerialization.jsonObject(with: Data(record.utf8)) as? [String: Any],
            let tag = r["key"] as? String, let object = r["object"] as? [String: Any]
        else { return nil }
        return (tag, object)
    }

    static func callRecord(_ call: ClusterCall) -> String {
        "{\"key\":\"\(call.keyTag)\",\"object\":\(call.objectJSON)}"
    }

    // MARK: account events

    /// Sends an account event of a key to the other nodes' subscribers of that key.
    public func publish(keyTag: String, text: String) {
        let me = id
        worker.submit { connection in
            _ = try? connection?.command(["PUBLISH", ClusterSchema.events(keyTag), me + "\n" + text])
        }
    }

    /// This node has a subscriber of the key's events: hear the other nodes' (counted).
    public func subscribe(keyTag: String) {
        subscriptions.withLockedValue { $0[keyTag, default: 0] += 1 }
        subscriber.subscribe(ClusterSchema.events(keyTag)) {}
    }

    /// Returns once Redis has confirmed the subscription to the key's events, so the events of
    /// what a client does next are not missed (or after `timeoutMilliseconds` when Redis cannot be
    /// reached).
    public func subscribed(keyTag: String, timeoutMilliseconds: Int = 1000) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let once = NIOLockedValueBox<CheckedContinuation<Void, Never>?>(c)
            let resume: @Sendable () -> Void = {
                once.withLockedValue { c in
                    c?.resume()
                    c = nil
                }
            }
            subscriber.subscribe(ClusterSchema.events(keyTag), confirmed: resume)
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(timeoutMilliseconds), execute: resume)
        }
    }

    public func unsubscribe(keyTag: String) {
        let last = subscriptions.withLockedValue { s -> Bool in
            s[keyTag, default: 1] -= 1
            guard s[keyTag]! <= 0 else { return false }
            s.removeValue(forKey: keyTag)
            return true
        }
        if last { subscriber.unsubscribe(ClusterSchema.events(keyTag)) }
    }

    // MARK: heartbeat (the Redis thread)

    /// Renews the lease with the node's load, writes its state again when Redis lost it or comes
    /// back, refreshes the view of the live nodes and reaps the dead ones.
    private func heartbeat(_ connection: RedisConnection?, reconnected: Bool) {
        guard let connection, let delegate else {
            membership.withLockedValue { $0.reachable = false }
            return
        }
        let me = id
        do throws(RedisError) {
            let load = delegate.load()
            guard !load.url.isEmpty else { return }
            let firstBeat = !membership.withLockedValue { $0.started }
            if firstBeat {
                // Calls of an earlier life of this node id (killed, restarted before it was reaped)
                // are gone: report them ended.
                try reap(me, ownPastLife: true, connection)
                try connection.command(["DEL", ClusterSchema.reaped(me)])
            }
            let lease = Self.leaseJSON(load)
            try connection.command(["SET", ClusterSchema.lease(me), lease, "PX", String(configuration.leaseMilliseconds)])
            let added = try connection.command(["SADD", ClusterSchema.nodes, me]).integer == 1
            if added || reconnected {
                if !firstBeat, try connection.command(["DEL", ClusterSchema.reaped(me)]).integer == 1 {
                    // Declared dead while away: its calls were reported ended; end them here.
                    delegate.declaredDead()
                }
                try reassert(delegate, connection)
            }
            let now = RedisWorker.nowMs()
            if firstBeat || reconnected {
                membership.withLockedValue {
                    $0.started = true
                    $0.reapAfter = now + Int64(configuration.leaseMilliseconds + configuration.heartbeatMilliseconds)
                }
            }
            let all = try Self.readNodes(connection)
            let reapAfter = membership.withLockedValue { m in
                m.nodes = Dictionary(uniqueKeysWithValues: all.filter(\.alive).map { ($0.id, $0) })
                m.placed.removeAll { $0.atMs <= now - 2 * Int64(configuration.heartbeatMilliseconds) }
                m.reachable = true
                return m.reapAfter
            }
            if now >= reapAfter {
                for dead in all where !dead.alive && dead.id != me { try reap(dead.id, ownPastLife: false, connection) }
            }
        } catch {
            membership.withLockedValue { $0.reachable = false }
        }
    }

    /// Writes this node's rooms and calls again (Redis restarted, or this node was away).
    private func reassert(_ delegate: any ClusterDelegate, _ connection: RedisConnection) throws(RedisError) {
        let (rooms, calls) = delegate.localState()
        for room in rooms {
            try connection.command(["EVAL", ClusterSchema.claim, "1", ClusterSchema.room(room), ClusterSchema.leasePrefix, id])
        }
        if !calls.isEmpty {
            try connection.command(["HSET", ClusterSchema.calls(id)] + calls.flatMap { [$0.id, Self.callRecord($0)] })
        }
    }

    /// Reaps `node`: its calls end with `bridge_disconnected` and `call_state` ended on their keys'
    /// account events (every node with subscribers delivers them), and stay readable as ended.
    private func reap(_ node: String, ownPastLife: Bool, _ connection: RedisConnection) throws(RedisError) {
        let reply = try connection.command([
            "EVAL", ClusterSchema.reap, "4", ClusterSchema.nodes, ClusterSchema.calls(node), ClusterSchema.reaped(node),
            ClusterSchema.lease(node), node, ownPastLife ? "0" : "1",
        ])
        let fields = reply.array.compactMap(\.string)
        guard fields.count >= 2 else { return }
        let endedAt = Date().formatted(.iso8601)
        for i in stride(from: 0, to: fields.count - 1, by: 2) {
            let callID = fields[i]
            guard let (tag, found) = Self.parseRecord(fields[i + 1]) else { continue }
            var object = found
            let error = Self.json([
                "type": "call_error", "call_id": callID, "code": "bridge_disconnected",
                "message": "The node serving this call (\(node)) was lost. Create the call again with the same meeting_url to reconnect.",
            ])
            let state = Self.json(["type": "call_state", "call_id": callID, "state": "ended"])
            // Origin empty: every node delivers these, this one too.
            try connection.command(["PUBLISH", ClusterSchema.events(tag), "\n" + error])
            try connection.command(["PUBLISH", ClusterSchema.events(tag), "\n" + state])
            object["state"] = "ended"
            object["ended_at"] = endedAt
            let record = Self.callRecord(ClusterCall(id: callID, keyTag: tag, objectJSON: Self.json(object)))
            try connection.command(["SET", ClusterSchema.ended(callID), record, "EX", String(configuration.endedRetentionSeconds)])
        }
    }

    static func leaseJSON(_ load: NodeLoad) -> String {
        var rounded = load
        rounded.cpuPercent = (load.cpuPercent * 10).rounded() / 10
        guard let data = try? JSONEncoder().encode(rounded) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    static func json(_ object: [String: Any]) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
