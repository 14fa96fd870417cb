import CChamadeShims
import ChamadeCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

enum ShardCommand: Sendable {
    case addRoom(Unmanaged<RoomCore>)
    case removeRoom(RoomID)
}

/// One clock: a thread (or, with the virtual clock, the caller) ticking many rooms every 20 ms on
/// absolute deadlines. Rooms are added and removed through a command ring; the tick's own events
/// and telemetry leave through rings and relaxed atomics.
final class ClockShard: @unchecked Sendable {
    // SAFETY: tick-side fields are used only by the shard's clock thread (or the virtual-clock
    // caller); the command producer is behind a lock; event and retire consumers are used only
    // under the engine's housekeeping lock.
    let index: Int
    let roomCapacity: Int
    let rooms: UnsafeMutablePointer<Unmanaged<RoomCore>>
    var roomCount = 0

    let commands: SPSCRing<ShardCommand>
    let commandProducer: Locked<SPSCRing<ShardCommand>.Producer>
    var commandConsumer: SPSCRing<ShardCommand>.Consumer
    let retired: SPSCRing<Unmanaged<RoomCore>>
    var retireProducer: SPSCRing<Unmanaged<RoomCore>>.Producer
    var retireConsumer: SPSCRing<Unmanaged<RoomCore>>.Consumer

    let eventRing: SPSCRing<EngineEvent>
    var events: EventSink
    var eventConsumer: SPSCRing<EngineEvent>.Consumer
    /// Participants that got a fresh block, in tick order; drained by one delivery thread.
    let readyRing: SPSCRing<ParticipantID>
    let readyConsumer: Locked<SPSCRing<ParticipantID>.Consumer>
    /// Per-tick processing time in nanoseconds, for `Engine.drainTickTimes` (bench); a full ring
    /// simply stops recording.
    let tickTimeRing: SPSCRing<Int64>
    var tickTimeProducer: SPSCRing<Int64>.Producer
    var tickTimeConsumer: SPSCRing<Int64>.Consumer

    let telemetry = ShardTelemetry()
    /// Monotonic time of the last wake-up (0 before the first): the clock's heartbeat.
    let lastWake = Atomic<Int64>(0)
    /// Posted after every tick, for a delivery thread that sends the new blocks at once.
    let tickSignal: TickSignal
    var schedule: TickSchedule
    let running = Atomic<Bool>(false)
    /// See `Engine.Configuration.tickProbe`.
    let tickProbe: (@Sendable () -> Void)?

    init(index: Int, roomCapacity: Int, tickSignal: TickSignal, tickProbe: (@Sendable () -> Void)? = nil) {
        self.index = index
        self.tickProbe = tickProbe
        self.tickSignal = tickSignal
        self.roomCapacity = roomCapacity
        rooms = .allocate(capacity: roomCapacity)
        commands = SPSCRing(capacity: 2 * roomCapacity + 16)
        commandProducer = Locked(commands.takeProducer())
        commandConsumer = commands.takeConsumer()
        retired = SPSCRing(capacity: 2 * roomCapacity + 16, prefault: true)
        retireProducer = retired.takeProducer()
        retireConsumer = retired.takeConsumer()
        eventRing = SPSCRing(capacity: 65536, prefault: true)
        readyRing = SPSCRing(capacity: Self.readyCapacity, prefault: true)
        events = EventSink(producer: eventRing.takeProducer(), readyProducer: readyRing.takeProducer())
        eventConsumer = eventRing.takeConsumer()
        readyConsumer = Locked(readyRing.takeConsumer())
        tickTimeRing = SPSCRing(capacity: 1 << 16, prefault: true)
        tickTimeProducer = tickTimeRing.takeProducer()
        tickTimeConsumer = tickTimeRing.takeConsumer()
        schedule = TickSchedule(start: 0)
    }

    deinit {
        for i in 0..<roomCount { rooms[i].release() }
        while let r = retireConsumer.pop() { r.release() }
        while let c = commandConsumer.pop() {
            if case .addRoom(let r) = c { r.release() }
        }
        rooms.deallocate()
    }

    /// Ready entries a shard can hold between two drains: a tick of a full shard's receivers, twice.
    static let readyCapacity = 1 << 15

    func send(_ command: ShardCommand) -> Bool { commandProducer.withLock { $0.push(command) } }

    /// One tick of every room on this shard. Real-time safe.
    func tickRooms() {
        // The whole tick is a real-time section: with the RealtimeSanitizer runtime linked (`make
        // test-rtsan`) a malloc, a lock or a blocking call in it is reported; without it this is a
        // branch on a null weak symbol.
        cchamade_rtsan_enter()
        defer { cchamade_rtsan_exit() }
        while let command = commandConsumer.pop() {
            switch command {
            case .addRoom(let room):
                if roomCount < roomCapacity {
                    rooms[roomCount] = room
                    roomCount += 1
                } else {
                    _ = retireProducer.push(room)
                }
            case .removeRoom(let id):
                for i in 0..<roomCount where rooms[i]._withUnsafeGuaranteedRef({ $0.id == id }) {
                    let room = rooms[i]
                    roomCount -= 1
                    rooms[i] = rooms[roomCount]
                    _ = retireProducer.push(room)
                    break
                }
            }
        }
        cchamade_tick_enter()
        let start = MonotonicClock.now()
        for i in 0..<roomCount {
            rooms[i]._withUnsafeGuaranteedRef { $0.tick(events: &events) }
        }
        tickProbe?()
        let elapsed = MonotonicClock.now() - start
        cchamade_tick_exit()
        // A shard without rooms has nothing to report: its empty ticks would only dilute the figures.
        guard roomCount > 0 else { return }
        telemetry.record(tickNanoseconds: elapsed)
        _ = tickTimeProducer.push(elapsed)
    }

    /// The clock thread's loop: sleep to the deadline, tick, count lateness; until stopped.
    func run(realtimePriority: Bool) {
        cchamade_set_thread_name("chamade-clock\(index)")
        if realtimePriority { Self.raisePriority() }
        // Ticks fall on multiples of 20 ms of the monotonic clock, the same grid for every shard, so
        // that other threads (the media workers) can run half a period away from every tick.
        schedule = TickSchedule(start: (MonotonicClock.now() / schedulePeriod + 1) * schedulePeriod)
        // ORDERING: relaxed; `stop()` needs only eventual visibility, the loop wakes every 20 ms.
        while running.load(ordering: .relaxed) {
            MonotonicClock.sleep(until: schedule.deadline)
            let skippedBefore = schedule.skippedCount
            _ = schedule.begin(now: MonotonicClock.now())
            let skipped = schedule.skippedCount - skippedBefore
            if skipped > 0 {
                telemetry.skipped.wrappingAdd(skipped, ordering: .relaxed)
                events.post(.skippedTicks(shard: index, count: skipped))
            }
            let deadline = schedule.deadline
            // ORDERING: relaxed; a heartbeat read by health checks.
            lastWake.store(MonotonicClock.now(), ordering: .relaxed)
            tickRooms()
            tickSignal.post()
            let now = MonotonicClock.now()
            if schedule.end(now: now) {
                telemetry.late.wrappingAdd(1, ordering: .relaxed)
                events.post(.lateTick(shard: index, lateNanoseconds: now - deadline - schedulePeriod))
            }
        }
    }

    let schedulePeriod: Int64 = 20_000_000

    /// SCHED_FIFO when permitted (root); otherwise the thread keeps normal scheduling.
    static func raisePriority() {
        #if canImport(Glibc)
        var param = sched_param()
        param.sched_priority = 10
        _ = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param)
        #endif
    }
}

/// A counting semaphore the clock posts after each tick (`sem_post`: never blocks, no allocation),
/// so that an I/O-side delivery thread can send fresh blocks right after the tick instead of polling.
public final class TickSignal: @unchecked Sendable {
    // SAFETY: a POSIX semaphore, made for use across threads.
    private let semaphore: UnsafeMutablePointer<sem_t>

    public init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    /// Called by the clock. Real-time safe: does not post when a wake-up is already pending.
    package func post() {
        var value: Int32 = 0
        sem_getvalue(semaphore, &value)
        if value < 1 { sem_post(semaphore) }
    }

    /// Waits up to `milliseconds` for a tick; returns whether one came.
    public func wait(milliseconds: Int) -> Bool {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var ns = Int(ts.tv_nsec) + milliseconds * 1_000_000
        ts.tv_sec += ns / 1_000_000_000
        ns %= 1_000_000_000
        ts.tv_nsec = ns
        while true {
            if sem_timedwait(semaphore, &ts) == 0 { return true }
            if errno != EINTR { return false }
        }
    }
}

/// Counters and a tick-time histogram of one shard: relaxed atomics, written by the tick.
final class ShardTelemetry: Sendable {
    /// Upper bounds of the tick-time histogram buckets, in microseconds (the last is +Inf).
    static let bucketBoundsMicroseconds: [Int] = [50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000]
    let ticks = Atomic<Int>(0)
    let late = Atomic<Int>(0)
    let skipped = Atomic<Int>(0)
    let tickNanosecondsTotal = Atomic<Int>(0)
    let maxTickNanoseconds = Atomic<Int>(0)
    init() {
        bucketStorage = .allocate(capacity: Self.bucketBoundsMicroseconds.count + 1)
        for i in 0...Self.bucketBoundsMicroseconds.count { (bucketStorage + i).initialize(to: Atomic(0)) }
    }

    // Atomics are ~Copyable: kept in raw storage rather than an Array.
    nonisolated(unsafe) let bucketStorage: UnsafeMutablePointer<Atomic<Int>>

    deinit {
        bucketStorage.deinitialize(count: Self.bucketBoundsMicroseconds.count + 1)
        bucketStorage.deallocate()
    }

    func record(tickNanoseconds ns: Int64) {
        // ORDERING: relaxed throughout; statistics read eventually by other threads.
        ticks.wrappingAdd(1, ordering: .relaxed)
        tickNanosecondsTotal.wrappingAdd(Int(ns), ordering: .relaxed)
        maxTickNanoseconds.max(Int(ns), ordering: .relaxed)
        let us = Int(ns / 1000)
        var b = 0
        while b < Self.bucketBoundsMicroseconds.count && us > Self.bucketBoundsMicroseconds[b] { b += 1 }
        bucketStorage[b].wrappingAdd(1, ordering: .relaxed)
    }

    func bucketCounts() -> [Int] {
        (0...Self.bucketBoundsMicroseconds.count).map { bucketStorage[$0].load(ordering: .relaxed) }
    }
}
