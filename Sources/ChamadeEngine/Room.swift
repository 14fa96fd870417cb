public import ChamadeCore
public import ChamadeDSP
import Synchronization

/// Why the engine refused.
public enum EngineError: Swift.Error, Hashable, Sendable, CustomStringConvertible {
    case roomFull(capacity: Int)
    case roomClosed
    case participantLeft
    case engineStopped
    case converter(SampleRateConverter.Error)
    case invalidCapacity(Int)

    public var description: String {
        switch self {
        case .roomFull(let c): "the room is full (\(c) participants)"
        case .roomClosed: "the room is closed"
        case .participantLeft: "the participant has left"
        case .engineStopped: "the engine is stopped"
        case .converter(let e): e.description
        case .invalidCapacity(let c): "invalid room capacity \(c)"
        }
    }
}

/// A room: a native rate, a fixed capacity, and the participants in it. Its tick runs on one of
/// the engine's clock shards. Methods may be called from any thread; none of them is the tick.
public final class Room: Sendable {
    public let id: RoomID
    public let nativeRate: SampleRate
    public let capacity: Int
    let core: RoomCore
    unowned let engine: Engine
    let shardIndex: Int

    /// What the I/O side knows of the room, kept in step with the commands it sends (all sent
    /// under this lock, so the tick applies them in the same order).
    struct Mirror {
        var participants = 0
        var participantsPerRate: [Int: Int] = [:]
        var closed = false
    }
    let mirror = Locked(Mirror())

    init(id: RoomID, nativeRate: SampleRate, capacity: Int, engine: Engine, shardIndex: Int) {
        self.id = id
        self.nativeRate = nativeRate
        self.capacity = capacity
        self.core = RoomCore(id: id, native: nativeRate, capacity: capacity)
        self.engine = engine
        self.shardIndex = shardIndex
    }

    /// Participants in the room (or joining).
    public var participantCount: Int { mirror.withLock { $0.participants } }

    /// Ticks this room has run.
    public var tickCount: UInt64 { core.publishedTick.load(ordering: .relaxed) }

    /// Converter calls made by this room's ticks so far (`src_process` per block).
    public var converterCallCount: Int { core.converterCalls.load(ordering: .relaxed) }

    /// Adds a participant at `rate`, receiving its mix-minus if `receiving`. It takes part from the
    /// room's next tick. Allocates its rings and converters (not for the tick).
    public func join(rate: SampleRate, receiving: Bool = true) throws(EngineError) -> Participant {
        let id = engine.nextParticipantID()
        let state = try makeState(id: id, rate: rate, receiving: receiving)
        try mirror.withLock { (m: inout Mirror) throws(EngineError) in
            guard !m.closed else { throw .roomClosed }
            guard m.participants < capacity else { throw .roomFull(capacity: capacity) }
            let group = try groupIfNeeded(for: rate, in: m)
            _ = core.send(.add(Unmanaged.passRetained(state), group: group.map { Unmanaged.passRetained($0) }))
            m.participants += 1
            m.participantsPerRate[rate.hertz, default: 0] += 1
        }
        let participant = Participant(id: id, room: self, state: state)
        engine.register(participant)
        return participant
    }

    /// A participant's tick-side state. Its conversions belong to its rate group, so this makes no
    /// converter and cannot fail today; it keeps its throwing signature for `Participant`.
    func makeState(id: ParticipantID, rate: SampleRate, receiving: Bool) throws(EngineError) -> ParticipantState {
        ParticipantState(
            id: id, rate: rate, native: nativeRate, receiving: receiving,
            playoutSeconds: engine.configuration.playoutSeconds)
    }

    /// A new rate group for `rate` when the room has nobody at that rate (as far as commands sent so
    /// far say), else nil. The tick keeps the offer only if it has no group for the rate, not even
    /// one still draining; otherwise it retires it.
    private func groupIfNeeded(for rate: SampleRate, in m: borrowing Mirror) throws(EngineError) -> RateGroup? {
        guard rate != nativeRate, m.participantsPerRate[rate.hertz, default: 0] == 0 else { return nil }
        do {
            return try RateGroup(native: nativeRate, rate: rate, quality: engine.configuration.quality)
        } catch {
            throw .converter(error)
        }
    }

    func sendReplace(old: ParticipantState, new: ParticipantState) throws(EngineError) {
        try mirror.withLock { (m: inout Mirror) throws(EngineError) in
            guard !m.closed else { throw .roomClosed }
            m.participantsPerRate[old.rate.hertz, default: 1] -= 1
            // The tick removes `old` (its group, if left empty, drains and then goes) before
            // installing `new` in its new rate's group.
            let group = try groupIfNeeded(for: new.rate, in: m)
            _ = core.send(
                .replace(old: old.id, new: Unmanaged.passRetained(new), group: group.map { Unmanaged.passRetained($0) }))
            m.participantsPerRate[new.rate.hertz, default: 0] += 1
        }
    }

    func sendRemove(_ state: ParticipantState) {
        mirror.withLock { m in
            m.participants -= 1
            m.participantsPerRate[state.rate.hertz, default: 1] -= 1
            _ = core.send(.remove(state.id))
        }
        engine.unregister(state.id)
    }

    /// Starts copying every talker's blocks to `tap` from the next tick (nil: stops), replacing any
    /// tap the room had. Any thread. False if the room's command ring was full (the tap is not
    /// kept).
    @discardableResult
    public func setTap(_ tap: RoomTap?) -> Bool {
        mirror.withLock { _ in
            let retained = tap.map { Unmanaged.passRetained($0) }
            guard core.send(.tap(retained)) else {
                retained?.release()
                return false
            }
            return true
        }
    }

    /// Closes the room: no more joins. The engine stops ticking it (`Engine.removeRoom`).
    func close() { mirror.withLock { $0.closed = true } }
}
