public import ChamadeCore
public import ChamadeEngine
import Foundation
import Logging
import Synchronization

/// Every call and room of the server, the API keys, and the routing of engine events to the
/// calls' WebSocket sessions. Off the tick: guarded by one lock, never held while awaiting.
public final class Registry: @unchecked Sendable {
    // SAFETY: all mutable state is accessed under `lock`.
    let lock = NSLock()
    let apiKeys: Set<String>
    private(set) var engine: Engine!
    var calls: [String: Call] = [:]
    var callsByParticipant: [ParticipantID: Call] = [:]
    var rooms: [String: Room] = [:]
    var roomCalls: [String: Set<String>] = [:]
    var stopping = false
    let logger: Logger
    /// The metrics published on /metrics.
    let metrics = ServerMetrics()
    /// Audio frames dropped by sessions whose client reads too slowly (beyond ~1 s queued).
    let sessionDroppedFrames = Atomic<Int>(0)
    /// Room capacity (participants per room).
    let roomCapacity: Int

    init(apiKeys: Set<String>, engineConfiguration: Engine.Configuration, roomCapacity: Int = 256, logger: Logger) {
        self.apiKeys = apiKeys
        self.logger = logger
        self.roomCapacity = roomCapacity
        self.engine = Engine(configuration: engineConfiguration) { [weak self] event in self?.route(event) }
    }

    func isValid(key: String?) -> Bool {
        guard let key else { return false }
        return apiKeys.contains(key)
    }

    // MARK: calls

    func createCall(apiKey: String, platform: Platform, meetingURL: String, agentName: String) throws(APIError) -> Call {
        let roomKey = "\(platform.rawValue)\n\(meetingURL)"
        return try lock.sync { () throws(APIError) -> Call in
            guard !stopping else { throw APIError(status: 503, code: "shutting_down", message: "the server is shutting down") }
            let room: Room
            if let existing = rooms[roomKey] {
                room = existing
            } else {
                do throws(EngineError) {
                    room = try engine.createRoom(nativeRate: platform.nativeRate, capacity: roomCapacity)
                } catch {
                    throw APIError(status: 503, code: "engine_unavailable", message: error.description)
                }
                rooms[roomKey] = room
            }
            let participant: Participant
            do throws(EngineError) {
                participant = try room.join(rate: platform.nativeRate, receiving: false)
            } catch .roomFull {
                throw .conflict("room_full", "the room is full (\(roomCapacity) participants)")
            } catch {
                throw APIError(status: 503, code: "engine_unavailable", message: error.description)
            }
            let id = "call_" + Self.randomToken(12)
            let call = Call(
                id: id, apiKey: apiKey, platform: platform, meetingURL: meetingURL, agentName: agentName,
                roomKey: roomKey, room: room, participant: participant)
            calls[id] = call
            callsByParticipant[participant.id] = call
            roomCalls[roomKey, default: []].insert(id)
            return call
        }
    }

    /// The call `id` if it belongs to `apiKey` (another key's call is "not found").
    func call(_ id: String, apiKey: String) throws(APIError) -> Call {
        try lock.sync { () throws(APIError) -> Call in
            guard let call = calls[id], call.apiKey == apiKey else { throw .notFound() }
            return call
        }
    }

    func activeCalls(apiKey: String) -> [Call] {
        lock.withLock { calls.values.filter { $0.apiKey == apiKey && $0.state != .ended }.sorted { $0.createdAt < $1.createdAt } }
    }

    /// Ends a call: leaves the room, tells its sessions (`call_state` ended, then a close frame).
    func end(_ call: Call) throws(APIError) {
        let (sessions, emptyRoom): ([Session], Room?) = try lock.sync { () throws(APIError) -> ([Session], Room?) in
            guard call.state != .ended else { throw .conflict("call_ended", "the call has already ended") }
            call.state = .ended
            call.endedAt = Date()
            callsByParticipant.removeValue(forKey: call.participant.id)
            roomCalls[call.roomKey]?.remove(call.id)
            var empty: Room?
            if roomCalls[call.roomKey]?.isEmpty ?? true {
                roomCalls.removeValue(forKey: call.roomKey)
                empty = rooms.removeValue(forKey: call.roomKey)
            }
            let s = Array(call.sessions.values)
            call.sessions = [:]
            let waiters = call.clearWaiters
            call.clearWaiters = []
            for w in waiters { w.resume(0) }
            return (s, empty)
        }
        call.participant.leave()
        if let emptyRoom { engine.removeRoom(emptyRoom) }
        for s in sessions { s.end() }
    }

    /// The other live calls in `call`'s room.
    func others(of call: Call) -> [Call] {
        lock.withLock {
            (roomCalls[call.roomKey] ?? []).compactMap { calls[$0] }.filter { $0.id != call.id && $0.state != .ended }
        }
    }

    /// Sends a text message to every session of every call in `calls`.
    func broadcast(_ message: String, to calls: [Call]) {
        let sessions = lock.withLock { calls.flatMap { Array($0.sessions.values) } }
        for s in sessions { s.send(text: message) }
    }

    func attach(_ session: Session, to call: Call) -> Bool {
        lock.withLock {
            guard call.state != .ended else { return false }
            call.sessions[ObjectIdentifier(session)] = session
            return true
        }
    }

    func detach(_ session: Session, from call: Call) {
        let receiving: Bool = lock.withLock {
            call.sessions.removeValue(forKey: ObjectIdentifier(session))
            return call.sessions.values.contains { $0.receiving }
        }
        if call.state != .ended { call.participant.setReceiving(receiving) }
    }

    /// Updates whether the call's participant receives: if any of its sessions wants audio.
    func refreshReceiving(_ call: Call) {
        let receiving = lock.withLock { call.sessions.values.contains { $0.receiving } }
        call.participant.setReceiving(receiving)
    }

    // MARK: transcript (library API)

    /// Appends a transcript line `[speaker] text` to every call in the room of `callID` and sends it
    /// to their sessions as `call_transcript`. The engine has no speech-to-text: an embedding gateway
    /// calls this. Returns false if there is no such live call.
    @discardableResult
    public func addTranscript(callID: String, speaker: String, text: String) -> Bool {
        let targets: [Call] = lock.withLock {
            guard let call = calls[callID], call.state != .ended else { return [] }
            let all = (roomCalls[call.roomKey] ?? []).compactMap { calls[$0] }
            for c in all { c.transcript.append("[\(speaker)] \(text)") }
            return all
        }
        guard !targets.isEmpty else { return false }
        broadcast(JSON.encode(["type": "call_transcript", "speaker": speaker, "text": text]), to: targets)
        return true
    }

    /// Tells every call of the room of `callID` that the platform leg is gone (`bridge_disconnected`).
    public func reportBridgeDisconnected(callID: String) {
        let targets: [Call] = lock.withLock {
            guard let call = calls[callID] else { return [] }
            return (roomCalls[call.roomKey] ?? []).compactMap { calls[$0] }
        }
        broadcast(
            JSON.encode([
                "type": "call_error", "code": "bridge_disconnected",
                "message": "Bridge connection lost. Create the call again with the same meeting_url to reconnect.",
            ]), to: targets)
    }

    // MARK: engine events

    func route(_ event: EngineEvent) {
        switch event {
        case .markPlayed(let pid, let mark):
            let sessions = lock.withLock { callsByParticipant[pid].map { Array($0.sessions.values) } ?? [] }
            for s in sessions { s.markPlayed(mark) }
        case .cleared(let pid, _, _, let request):
            let ms = event.droppedMilliseconds ?? 0
            let (sessions, waiters): ([Session], [@Sendable (Int) -> Void]) = lock.withLock {
                guard let call = callsByParticipant[pid] else { return ([], []) }
                let ready = call.clearWaiters.filter { $0.request <= request }
                call.clearWaiters.removeAll { $0.request <= request }
                return (Array(call.sessions.values), ready.map(\.resume))
            }
            for w in waiters { w(ms) }
            for s in sessions { s.cleared(request: request, droppedMilliseconds: ms) }
        case .lateTick(let shard, let ns):
            logger.warning("late tick", metadata: ["shard": "\(shard)", "late_us": "\(ns / 1000)"])
        case .skippedTicks(let shard, let count):
            logger.warning("skipped ticks", metadata: ["shard": "\(shard)", "count": "\(count)"])
        }
    }

    /// Barge-in from HTTP: clears the call's queue and waits for the engine's answer (ms dropped).
    func stopSpeaking(_ call: Call) async -> Int {
        await withCheckedContinuation { (c: CheckedContinuation<Int, Never>) in
            let once = Once(c)
            let request = call.participant.requestClear()
            let registered = lock.withLock { () -> Bool in
                guard call.state != .ended else { return false }
                call.clearWaiters.append((request, { once.resume($0) }))
                return true
            }
            if !registered { once.resume(0) }
        }
    }

    /// Ends every call (shutdown).
    func endAll() {
        let all: [Call] = lock.withLock {
            stopping = true
            return calls.values.filter { $0.state != .ended }
        }
        for c in all { try? end(c) }
    }

    /// Every live call with the sessions that receive its audio, for the delivery thread (one lock
    /// per tick, not one per call or block).
    func receivingSessions() -> [(Call, [Session])] {
        lock.withLock {
            calls.values.compactMap { c in
                guard c.state != .ended else { return nil }
                let receivers = c.sessions.values.filter { $0.receiving }
                return receivers.isEmpty ? nil : (c, receivers)
            }
        }
    }

    static func randomToken(_ bytes: Int) -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }.joined()
    }
}

/// Resumes a continuation at most once.
final class Once<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, Never>?
    init(_ c: CheckedContinuation<T, Never>) { continuation = c }
    func resume(_ value: T) {
        let c = lock.withLock { () -> CheckedContinuation<T, Never>? in
            defer { continuation = nil }
            return continuation
        }
        c?.resume(returning: value)
    }
}

extension NSLock {
    /// `withLock` with typed throws.
    func sync<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        lock()
        defer { unlock() }
        return try body()
    }
}
