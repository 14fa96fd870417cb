public import ChamadeCore
public import ChamadeDSP
import CChamadeShims
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The real-time audio engine: rooms ticking every 20 ms on a few clock threads ("shards"),
/// participants pushing and pulling audio from their own threads, and events delivered off the
/// real-time path.
///
/// With `clock: .realTime`, `start()` launches one thread per shard plus a housekeeping thread
/// that delivers events to `onEvent` and frees what ticks retired. With `clock: .virtual` nothing
/// runs by itself: `tick()` runs one tick of every room on the caller's thread and `drainEvents()`
/// delivers events, so tests are deterministic and never sleep.
public final class Engine: Sendable {
    public struct Configuration: Sendable {
        public enum Clock: Sendable { case realTime, virtual }
        public var clock: Clock
        /// Clock threads; rooms are spread over them. Default: one per core, at most 8.
        public var shardCount: Int
        public var quality: ConverterQuality
        /// Seconds of audio a participant's playout queue holds (at least; SPEC: 60).
        public var playoutSeconds: Int
        /// Ask for SCHED_FIFO on the clock threads (granted to root; ignored otherwise).
        public var realtimePriority: Bool
        /// Rooms per shard.
        public var roomsPerShard: Int
        /// Called inside every shard's tick, in its real-time section: tests put a deliberate
        /// violation there to prove the RealtimeSanitizer watches the tick. Nil in production.
        @_spi(Testing) public var tickProbe: (@Sendable () -> Void)? = nil

        public init(
            clock: Clock = .realTime, shardCount: Int? = nil, quality: ConverterQuality = .default,
            playoutSeconds: Int = 60, realtimePriority: Bool = true, roomsPerShard: Int = 4096
        ) {
            self.clock = clock
            #if canImport(Glibc)
            let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
            #else
            let cores = 2
            #endif
            self.shardCount = max(1, shardCount ?? min(max(cores, 1), 8))
            self.quality = quality
            self.playoutSeconds = playoutSeconds
            self.realtimePriority = realtimePriority
            self.roomsPerShard = roomsPerShard
        }
    }

    public let configuration: Configuration
    let shards: [ClockShard]
    let onEvent: @Sendable (EngineEvent) -> Void
    let ids = Atomic<UInt64>(0)

    struct Registry {
        var rooms: [RoomID: Room] = [:]
        var participants: [ParticipantID: Participant] = [:]
        var started = false
        var stopped = false
        var threads: [pthread_t] = []
    }
    let registry = Locked(Registry())
    /// Observers of events besides `onEvent` (a server over an engine its embedder made).
    let observers = Locked<[UInt64: @Sendable (EngineEvent) -> Void]>([:])
    /// Serialises housekeeping passes (event delivery, freeing): never taken by a tick.
    let housekeeping = Locked(())
    let housekeepingRunning = Atomic<Bool>(false)

    /// Posted after every tick of every shard (real-time clock): wait on it to deliver blocks as
    /// soon as they exist.
    public let tickSignal = TickSignal()

    public init(configuration: Configuration = Configuration(), onEvent: @escaping @Sendable (EngineEvent) -> Void = { _ in }) {
        self.configuration = configuration
        self.onEvent = onEvent
        let signal = tickSignal
        self.shards = (0..<configuration.shardCount).map {
            ClockShard(
                index: $0, roomCapacity: configuration.roomsPerShard, tickSignal: signal, tickProbe: configuration.tickProbe)
        }
    }

    /// Whether every clock shard has woken within the last 100 ms (real-time clock).
    public var clocksRunning: Bool {
        let now = MonotonicClock.now()
        // ORDERING: relaxed; a heartbeat.
        return shards.allSatisfy { now - $0.lastWake.load(ordering: .relaxed) < 100_000_000 }
    }

    deinit { shutdown() }

    func nextParticipantID() -> ParticipantID {
        ParticipantID(rawValue: ids.wrappingAdd(1, ordering: .relaxed).newValue)
    }

    func register(_ p: Participant) { registry.withLock { $0.participants[p.id] = p } }
    func unregister(_ id: ParticipantID) { _ = registry.withLock { $0.participants.removeValue(forKey: id) } }

    /// Starts the clock threads and the housekeeping thread (real-time clock only; a no-op with
    /// the virtual clock or when already started).
    public func start() {
        guard configuration.clock == .realTime else { return }
        let go = registry.withLock { r -> Bool in
            guard !r.started && !r.stopped else { return false }
            r.started = true
            return true
        }
        guard go else { return }
        var threads: [pthread_t] = []
        for shard in shards {
            shard.running.store(true, ordering: .relaxed)
            let priority = configuration.realtimePriority
            threads.append(spawnThread { shard.run(realtimePriority: priority) })
        }
        housekeepingRunning.store(true, ordering: .relaxed)
        threads.append(spawnThread { [self] in
            cchamade_set_thread_name("chamade-house")
            while housekeepingRunning.load(ordering: .relaxed) {
                _ = drainEvents()
                usleep(2000)
            }
        })
        registry.withLock { $0.threads = threads }
    }

    /// Stops the clocks (every room stops ticking), delivers the last events and frees everything
    /// retired. Idempotent.
    public func shutdown() {
        let threads = registry.withLock { r -> [pthread_t] in
            guard !r.stopped else { return [] }
            r.stopped = true
            defer { r.threads = [] }
            return r.threads
        }
        for shard in shards { shard.running.store(false, ordering: .relaxed) }
        housekeepingRunning.store(false, ordering: .relaxed)
        for t in threads { pthread_join(t, nil) }
        _ = drainEvents()
    }

    /// Creates a room at `nativeRate` for up to `capacity` participants, on the least loaded
    /// shard. Its buffers are allocated now; it ticks from the shard's next tick.
    public func createRoom(nativeRate: SampleRate, capacity: Int = 256) throws(EngineError) -> Room {
        guard capacity > 0 else { throw .invalidCapacity(capacity) }
        return try registry.withLock { (r: inout Registry) throws(EngineError) -> Room in
            guard !r.stopped else { throw .engineStopped }
            var load = [Int](repeating: 0, count: shards.count)
            for room in r.rooms.values { load[room.shardIndex] += 1 }
            let shard = load.indices.min { load[$0] < load[$1] } ?? 0
            let id = RoomID(rawValue: ids.wrappingAdd(1, ordering: .relaxed).newValue)
            let room = Room(id: id, nativeRate: nativeRate, capacity: capacity, engine: self, shardIndex: shard)
            guard shards[shard].send(.addRoom(Unmanaged.passRetained(room.core))) else {
                throw .roomFull(capacity: configuration.roomsPerShard)
            }
            r.rooms[id] = room
            return room
        }
    }

    /// Stops ticking `room` and forgets it; its participants leave with it.
    public func removeRoom(_ room: Room) {
        room.close()
        _ = shards[room.shardIndex].send(.removeRoom(room.id))
        registry.withLock { r in
            r.rooms.removeValue(forKey: room.id)
            for (id, p) in r.participants where p.room === room { r.participants.removeValue(forKey: id) }
        }
    }

    /// The rooms alive.
    public var rooms: [Room] { registry.withLock { Array($0.rooms.values) } }

    /// Virtual clock only: runs one tick of every room of every shard on the calling thread.
    public func tick() {
        precondition(configuration.clock == .virtual, "tick() drives the virtual clock only")
        for shard in shards { shard.tickRooms() }
    }

    /// Adds `observer`, called with every event after `onEvent`, on the thread that delivers
    /// events (housekeeping, or the caller of `drainEvents()`). Returns a token for
    /// `removeEventObserver`. Lets a server observe an engine that its embedder created.
    public func addEventObserver(_ observer: @escaping @Sendable (EngineEvent) -> Void) -> UInt64 {
        let token = ids.wrappingAdd(1, ordering: .relaxed).newValue
        observers.withLock { $0[token] = observer }
        return token
    }

    public func removeEventObserver(_ token: UInt64) {
        _ = observers.withLock { $0.removeValue(forKey: token) }
    }

    /// Delivers pending events to `onEvent` and frees what ticks retired. Not real-time; called by
    /// the housekeeping thread, or by the caller with the virtual clock. Returns events delivered.
    @discardableResult
    public func drainEvents() -> Int {
        let rooms = self.rooms
        let observers = self.observers.withLock { Array($0.values) }
        return housekeeping.withLock { _ in
            var delivered = 0
            for shard in shards {
                while let event = shard.eventConsumer.pop() {
                    onEvent(event)
                    for o in observers { o(event) }
                    delivered += 1
                }
                while let room = shard.retireConsumer.pop() {
                    room._withUnsafeGuaranteedRef { $0.dispose() }
                    room.release()
                }
            }
            for room in rooms { room.core.drainRetired() }
            return delivered
        }
    }

    /// Hands `body` every participant that got a fresh block of mix-minus since the last call, in
    /// tick order per shard (a participant appears once per block). Meant for one delivery thread,
    /// woken by `tickSignal`, that moves blocks to the network: it visits only the participants with
    /// work, never every participant. Not real-time (takes a lock the clock never takes).
    public func drainReadyParticipants(_ body: (ParticipantID) -> Void) {
        for shard in shards {
            shard.readyConsumer.withLock { consumer in
                while let id = consumer.pop() { body(id) }
            }
        }
    }

    /// Hands every recorded tick processing time (nanoseconds) to `body`, oldest first. Each tick is
    /// recorded once (a ring of 65,536 per shard; older records are lost if nobody drains).
    public func drainTickTimes(_ body: (Int64) -> Void) {
        housekeeping.withLock { _ in
            for shard in shards {
                while let t = shard.tickTimeConsumer.pop() { body(t) }
            }
        }
    }

    /// Engine-wide counters.
    public struct Statistics: Sendable {
        public var rooms: Int
        public var participants: Int
        public var ticks: Int
        public var lateTicks: Int
        public var skippedTicks: Int
        public var lostEvents: Int
        /// Ready-list entries lost to a full ready ring (their blocks waited for the next entry).
        public var lostReadyEntries: Int
        public var tickNanosecondsTotal: Int
        public var maxTickNanoseconds: Int
        /// Tick-time histogram: counts per bucket with upper bounds `tickHistogramBoundsMicroseconds`
        /// (the last bucket is unbounded).
        public var tickHistogram: [Int]
        public var tickHistogramBoundsMicroseconds: [Int]
        public var droppedBlocks: Int
        public var overflowSamples: Int
        public var bytesIn: Int
        public var blocksOut: Int
    }

    public func statistics() -> Statistics {
        let (roomCount, participants) = registry.withLock { ($0.rooms.count, Array($0.participants.values)) }
        var s = Statistics(
            rooms: roomCount, participants: participants.count, ticks: 0, lateTicks: 0, skippedTicks: 0,
            lostEvents: 0, lostReadyEntries: 0, tickNanosecondsTotal: 0, maxTickNanoseconds: 0,
            tickHistogram: [Int](repeating: 0, count: ShardTelemetry.bucketBoundsMicroseconds.count + 1),
            tickHistogramBoundsMicroseconds: ShardTelemetry.bucketBoundsMicroseconds,
            droppedBlocks: 0, overflowSamples: 0, bytesIn: 0, blocksOut: 0)
        for shard in shards {
            let t = shard.telemetry
            // ORDERING: relaxed loads of statistics.
            s.ticks += t.ticks.load(ordering: .relaxed)
            s.lateTicks += t.late.load(ordering: .relaxed)
            s.skippedTicks += t.skipped.load(ordering: .relaxed)
            s.lostEvents += shard.events.lost.load(ordering: .relaxed)
            s.lostReadyEntries += shard.events.lostReady.load(ordering: .relaxed)
            s.tickNanosecondsTotal += t.tickNanosecondsTotal.load(ordering: .relaxed)
            s.maxTickNanoseconds = max(s.maxTickNanoseconds, t.maxTickNanoseconds.load(ordering: .relaxed))
            for (i, c) in t.bucketCounts().enumerated() { s.tickHistogram[i] += c }
        }
        for p in participants {
            let ps = p.statistics()
            s.droppedBlocks += ps.droppedBlockCount
            s.overflowSamples += ps.overflowSampleCount
            s.bytesIn += ps.bytesIn
            s.blocksOut += ps.blocksOut
        }
        return s
    }

    /// Allocations made on clock threads during ticks, counted only when the malloc counter is
    /// linked into the process (`chamade`, the tests); see `isCountingTickAllocations`.
    public static var tickAllocationCount: UInt64 { cchamade_tick_allocation_count() }

    /// Allocations counted during ticks run on the calling thread (the virtual clock's caller).
    public static var tickAllocationCountOnThisThread: UInt64 { cchamade_tick_allocation_count_on_this_thread() }

    /// Whether this process counts allocations on the tick.
    public static var isCountingTickAllocations: Bool { cchamade_allocation_counting_available() != 0 }
}

/// Starts a joinable POSIX thread running `body` (a real thread, not a task: the clock must not
/// share a cooperative pool).
func spawnThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { raw in
        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    return thread
}

/// Starts a detached POSIX thread running `body`, for the other modules' long-lived threads (media
/// workers) that no one joins.
package func startDetachedThread(_ body: @escaping @Sendable () -> Void) {
    pthread_detach(spawnThread(body))
}
