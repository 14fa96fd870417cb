import CChamadeShims
import ChamadeCore
import ChamadeEngine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A media thread: every 20 ms it runs one step of each of its legs (receive, jitter buffer,
/// decode, into the room; the room's mix-minus for the leg, encode, send; RTCP; timeouts).
///
/// Why a thread of its own and not the tick: an Opus encode at complexity 10 costs ≈ 260 µs per
/// block, so 50 legs would take 13 ms of a 20 ms tick, and a leg's codec must never delay a room.
/// Why not a NIO event loop: the step must run on the 20 ms grid whatever the traffic; the kernel's
/// receive timestamps let it drain its sockets once per step with exact arrival times, with no
/// per-packet wake-up, no per-packet allocation and no hand-off between an I/O thread and the
/// jitter buffer's owner.
///
/// Its steps run on the engine's tick grid (ticks fall on multiples of 20 ms of the monotonic
/// clock) shifted by half a period, as far as possible from every tick: a block the tick made is
/// always there at the next step, and a block the step pushed is always there at the next tick.
/// Legs come and go through an SPSC command ring (the producer end behind a lock only API threads
/// take). A step allocates nothing; closing a leg (rare) frees it on this thread.
final class MediaWorker: Sendable {
    enum Command {
        case add(LegPipeline)
        case remove(LegShared)
    }

    let index: Int
    private let commands: SPSCRing<Command>
    private let producer: Locked<SPSCRing<Command>.Producer>
    private let state: Locked<Loop>
    let running = Atomic<Bool>(false)
    /// Legs on this worker (for placement).
    let legCount = Atomic<Int>(0)
    let lateSteps = Atomic<Int>(0)
    /// Allocations made inside steps, counted on this thread (only with the malloc counter linked).
    let stepAllocations = Atomic<Int>(0)
    let events: LegEventSink
    private let onClosed: @Sendable (Endpoint) -> Void

    static let period: Int64 = 20_000_000

    /// What only the worker's thread touches (behind a lock that only it takes while running).
    struct Loop: ~Copyable {
        var consumer: SPSCRing<Command>.Consumer
        var legs: [LegPipeline] = []
    }

    init(index: Int, wake: TickSignal, onClosed: @escaping @Sendable (Endpoint) -> Void) {
        self.index = index
        events = LegEventSink(wake: wake)
        self.onClosed = onClosed
        commands = SPSCRing(capacity: 4096)
        producer = Locked(commands.takeProducer())
        var loop = Loop(consumer: commands.takeConsumer())
        loop.legs.reserveCapacity(1024)
        state = Locked(loop)
    }

    func add(_ leg: LegPipeline) -> Bool {
        let ok = producer.withLock { $0.push(.add(leg)) }
        if ok { legCount.add(1, ordering: .relaxed) }
        return ok
    }

    func remove(_ leg: LegShared) {
        // The ring holds 4096 commands; if a burst ever filled it, retry until the worker drains it.
        while !producer.withLock({ $0.push(.remove(leg)) }) { usleep(1000) }
    }

    func start() {
        // ORDERING: relaxed; the thread is started after the store.
        running.store(true, ordering: .relaxed)
        startDetachedThread { [self] in run() }
    }

    /// Stops the thread and waits until it has closed its legs (BYE sent, participants gone), so
    /// that nothing of a leg outlives the runtime or touches an engine shut down after it.
    func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        _ = exited.wait(milliseconds: 2000)
    }

    /// Posted once by the thread when it has closed everything.
    private let exited = TickSignal()

    private func run() {
        cchamade_set_thread_name("chamade-media\(index)")
        var deadline = (MonotonicClock.now() / Self.period + 1) * Self.period + Self.period / 2
        // ORDERING: relaxed; stop needs only eventual visibility, the loop wakes every 20 ms.
        while running.load(ordering: .relaxed) {
            MonotonicClock.sleep(until: deadline)
            step(now: MonotonicClock.now())
            deadline += Self.period
            let now = MonotonicClock.now()
            if now > deadline {
                // A step overran a whole period: count it and return to the grid.
                lateSteps.add(1, ordering: .relaxed)
                deadline = (now / Self.period + 1) * Self.period + Self.period / 2
            }
        }
        state.withLock { loop in
            while let command = loop.consumer.pop() {
                switch command {
                case .add(let leg): loop.legs.append(leg)
                case .remove: break
                }
            }
            for leg in loop.legs { close(leg) }
            loop.legs.removeAll()
        }
        exited.post()
    }

    /// One step of every leg, after applying the queued commands. Also the entry point of tests
    /// that drive a worker without its thread.
    func step(now: Int64) {
        var real = timespec()
        clock_gettime(CLOCK_REALTIME, &real)
        let realtimeOffset = Int64(real.tv_sec) * 1_000_000_000 + Int64(real.tv_nsec) - MonotonicClock.now()
        state.withLock { loop in
            while let command = loop.consumer.pop() {
                switch command {
                case .add(let leg):
                    loop.legs.append(leg)
                case .remove(let shared):
                    if let i = loop.legs.firstIndex(where: { $0.shared === shared }) {
                        close(loop.legs.remove(at: i))
                    }
                }
            }
            // The steps are held to the tick's rule (no allocation), and counted by the same
            // malloc counter when one is linked.
            let before = cchamade_tick_allocation_count_on_this_thread()
            cchamade_tick_enter()
            // By index: a for-in over the array of a ~Copyable struct borrowed in a closure
            // allocated an iterator box per step (seen by the allocation test).
            for i in 0..<loop.legs.count { loop.legs[i].step(now: now, realtimeOffset: realtimeOffset) }
            cchamade_tick_exit()
            let made = cchamade_tick_allocation_count_on_this_thread() - before
            if made > 0 { stepAllocations.add(Int(made), ordering: .relaxed) }
        }
    }

    private func close(_ leg: LegPipeline) {
        leg.sendBye()
        leg.shared.finished.store(true, ordering: .relaxed)
        leg.participant.leave()
        legCount.subtract(1, ordering: .relaxed)
        onClosed(leg.rtp.local)
    }
}

/// Events of one worker's legs on their way to the owners: the worker pushes them into an SPSC
/// ring (no allocation, no lock on the media thread) and wakes the runtime's event thread, which
/// calls the handlers (they may take locks and allocate).
final class LegEventSink: @unchecked Sendable {
    // SAFETY: `producer` is used by the worker's thread only (inside steps); `consumer` only under
    // its lock, by the event thread.
    private let ring: SPSCRing<(LegShared, RTPLegEvent)>
    private var producer: SPSCRing<(LegShared, RTPLegEvent)>.Producer
    private let consumer: Locked<SPSCRing<(LegShared, RTPLegEvent)>.Consumer>
    private let wake: TickSignal
    /// Events that found the ring full (never expected: 1024 between two wakes of the event thread).
    let lost = Atomic<Int>(0)

    init(wake: TickSignal) {
        self.wake = wake
        ring = SPSCRing(capacity: 1024, prefault: true)
        producer = ring.takeProducer()
        consumer = Locked(ring.takeConsumer())
    }

    /// From the worker's thread. Real-time safe.
    func post(_ leg: LegShared, _ event: RTPLegEvent) {
        if producer.push((leg, event)) { wake.post() } else { lost.add(1, ordering: .relaxed) }
    }

    /// From the event thread: runs the handlers of everything posted so far.
    func deliver() {
        consumer.withLock { c in
            while let (leg, event) = c.pop() { leg.onEvent(event) }
        }
    }
}
