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
    /// CPU time this thread has used, ns (published each step).
    let cpuNanoseconds = Atomic<Int64>(0)
    let lateSteps = Atomic<Int>(0)
    private let onClosed: @Sendable (Endpoint) -> Void

    static let period: Int64 = 20_000_000

    /// What only the worker's thread touches (behind a lock that only it takes while running).
    struct Loop: ~Copyable {
        var consumer: SPSCRing<Command>.Consumer
        var legs: [LegPipeline] = []
    }

    init(index: Int, onClosed: @escaping @Sendable (Endpoint) -> Void) {
        self.index = index
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
            cpuNanoseconds.store(MonotonicClock.threadCPUTime(), ordering: .relaxed)
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
            cchamade_tick_enter()
            // By index: a for-in over the array of a ~Copyable struct borrowed in a closure
            // allocated an iterator box per step (seen by the allocation test).
            for i in 0..<loop.legs.count { loop.legs[i].step(now: now, realtimeOffset: realtimeOffset) }
            cchamade_tick_exit()
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

/// Delivers legs' events to their owners on one serial queue, off the media threads (an event
/// handler may take the server's locks and allocate).
enum MediaEvents {
    private static let queue = EventQueue()

    static func post(_ body: @escaping @Sendable () -> Void) { queue.post(body) }
}

/// A serial queue of closures run by one thread: posting takes a lock only posters and that thread
/// take, briefly. Events are rare (a DTMF digit, a timeout), so the allocation of a closure is fine.
final class EventQueue: Sendable {
    private let pending = Locked<[@Sendable () -> Void]>([])
    private let signal = TickSignal()

    init() {
        startDetachedThread { [self] in
            cchamade_set_thread_name("chamade-legevents")
            while true {
                _ = signal.wait(milliseconds: 1000)
                let work = pending.withLock { p -> [@Sendable () -> Void] in
                    defer { p.removeAll() }
                    return p
                }
                for w in work { w() }
            }
        }
    }

    func post(_ body: @escaping @Sendable () -> Void) {
        pending.withLock { $0.append(body) }
        signal.post()
    }
}
