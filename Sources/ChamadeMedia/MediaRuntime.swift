public import ChamadeEngine
import CChamadeShims
import ChamadeCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The media plane of platform legs: the local port range, the media worker threads, and the
/// opening of RTP legs on rooms.
///
/// A gateway that embeds the engine makes one, beside its `Engine`, and attaches legs to rooms it
/// created; `chamade serve` makes one for its `rtp` and `sip` rooms. Legs are spread over the
/// workers (one per core by default), each leg wholly on one worker.
public final class MediaRuntime: Sendable {
    public struct Configuration: Sendable {
        /// The address legs bind and report as `local_rtp` (an IPv4 literal).
        public var bindAddress: String
        /// Local ports (`--rtp-ports`, SPEC default 20000–29999).
        public var ports: ClosedRange<Int>
        /// Media threads.
        public var workerCount: Int

        public init(bindAddress: String = "127.0.0.1", ports: ClosedRange<Int> = 20000...29999, workerCount: Int? = nil) {
            self.bindAddress = bindAddress
            self.ports = ports
            self.workerCount = workerCount ?? Self.coreCount
        }

        static var coreCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
    }

    public let configuration: Configuration
    private let bind: Endpoint
    private let pool: PortPool
    private let workers: [MediaWorker]
    private let ids = Atomic<UInt64>(0)
    private let stopped = StopFlag()
    /// Wakes the event thread when a worker posts an event.
    private let eventWake = TickSignal()

    public init(configuration: Configuration = Configuration()) throws(RTPLegError) {
        guard let bind = Endpoint(host: configuration.bindAddress, port: 0) else {
            throw .socket(SocketError(operation: "bind address \(configuration.bindAddress) is not an IPv4 literal", code: EINVAL))
        }
        self.configuration = configuration
        self.bind = bind
        let pool = PortPool(range: configuration.ports)
        self.pool = pool
        let wake = eventWake
        workers = (0..<max(1, configuration.workerCount)).map { i in
            MediaWorker(index: i, wake: wake) { local in pool.release(Int(local.port)) }
        }
        for w in workers { w.start() }
        // The event thread: runs legs' handlers off the media threads, until shutdown.
        let sinks = workers.map(\.events)
        let stopped = self.stopped
        startDetachedThread {
            cchamade_set_thread_name("chamade-legevents")
            // ORDERING: relaxed; polled at least every 100 ms.
            while !stopped.isSet {
                _ = wake.wait(milliseconds: 100)
                for sink in sinks { sink.deliver() }
            }
            for sink in sinks { sink.deliver() }
        }
    }

    deinit { shutdown() }

    /// Stops the media threads; their legs are closed (BYE sent, participants leave).
    public func shutdown() {
        guard stopped.set() else { return }
        for w in workers { w.stop() }
    }

    /// Binds a free RTP/RTCP port pair for a leg opened later (a SIP offer names its port before
    /// the answer says which codec the leg will have). Dropping the reservation unused gives the
    /// ports back.
    public func reservePorts() throws(RTPLegError) -> RTPPortReservation {
        guard !stopped.isSet else { throw .closed }
        var lastError: SocketError?
        let bind = self.bind
        let sockets: (UDPSocketPair, Int)? = pool.acquire { port in
            do throws(SocketError) {
                return (try UDPSocketPair(bind.address, port: port), port)
            } catch {
                lastError = error
                return nil
            }
        }
        guard let (pair, port) = sockets else {
            if let lastError, lastError.code != EADDRINUSE { throw .socket(lastError) }
            throw .noFreePort(configuration.ports)
        }
        let pool = self.pool
        return RTPPortReservation(pair: pair, local: Endpoint(address: bind.address, port: UInt16(port))) { pool.release(port) }
    }

    /// Opens an RTP leg on `room`: binds a port pair, joins the room as a participant at the
    /// codec's rate for the room (SPEC §6), and starts its media on the least loaded worker.
    /// `onEvent` is called on the runtime's event thread for received digits and the timeout.
    ///
    /// `ports`, if given, is a pair reserved earlier with `reservePorts()` (consumed here).
    public func openLeg(
        room: Room, configuration leg: RTPLegConfiguration, ports: RTPPortReservation? = nil,
        onEvent: @escaping @Sendable (RTPLegEvent) -> Void
    ) throws(RTPLegError) -> RTPLeg {
        guard !stopped.isSet else { throw .closed }
        let reserved: RTPPortReservation
        if let ports { reserved = ports } else { reserved = try reservePorts() }
        guard let pair = reserved.take() else { throw .closed }
        let port = Int(reserved.local.port)
        let rate = leg.codec.mediaRate(inRoomOf: room.nativeRate)
        let participant: Participant
        do throws(EngineError) { participant = try room.join(rate: rate, receiving: true) } catch {
            pool.release(port)
            throw .engine(error)
        }
        let shared = LegShared(id: ids.add(1, ordering: .relaxed).newValue, remote: leg.remote, onEvent: onEvent)
        let worker = workers.min { $0.legCount.load(ordering: .relaxed) < $1.legCount.load(ordering: .relaxed) }!
        let pipeline: LegPipeline
        do throws(RTPLegError) {
            pipeline = try LegPipeline(
                shared: shared, events: worker.events, configuration: leg, participant: participant, rtp: pair.takeRTP(), rtcp: pair.takeRTCP(),
                rate: rate, now: MonotonicClock.now())
        } catch {
            participant.leave()
            pool.release(port)
            throw error
        }
        let handle = RTPLeg(
            configuration: leg, local: Endpoint(address: bind.address, port: UInt16(port)), participantID: participant.id,
            shared: shared, worker: worker)
        guard worker.add(pipeline) else {
            participant.leave()
            pool.release(port)
            throw .closed
        }
        return handle
    }

    /// Steps that overran their 20 ms (the media threads are overloaded).
    public var lateSteps: Int { workers.reduce(0) { $0 + $1.lateSteps.load(ordering: .relaxed) } }

    /// Allocations counted inside media steps so far (0 unless a malloc counter is linked; must
    /// stay 0).
    public var stepAllocationCount: Int { workers.reduce(0) { $0 + $1.stepAllocations.load(ordering: .relaxed) } }

    /// Legs open now.
    public var legCount: Int { workers.reduce(0) { $0 + $1.legCount.load(ordering: .relaxed) } }
}

/// A port pair bound for a leg not opened yet (`MediaRuntime.reservePorts`). `openLeg` consumes it;
/// unused, it gives the ports back when it goes.
public final class RTPPortReservation: Sendable {
    /// Where the leg will receive RTP (RTCP on the next port).
    public let local: Endpoint
    private let pair: Locked<UDPSocketPair?>
    private let giveBack: @Sendable () -> Void

    init(pair: UDPSocketPair, local: Endpoint, giveBack: @escaping @Sendable () -> Void) {
        self.pair = Locked(pair)
        self.local = local
        self.giveBack = giveBack
    }

    /// The sockets, once; from then on the leg owns the port.
    func take() -> UDPSocketPair? { pair.withLock { $0.take() } }

    deinit { if pair.withLock({ $0 != nil }) { giveBack() } }
}

/// The two sockets of a leg, bound together (RTP on an even port, RTCP on the next). Owned by one
/// thread at a time: a reservation, then the leg's worker.
final class UDPSocketPair: @unchecked Sendable {
    private var rtp: UDPSocket?
    private var rtcp: UDPSocket?

    init(_ address: UInt32, port: Int) throws(SocketError) {
        let first = try UDPSocket(binding: Endpoint(address: address, port: UInt16(port)))
        let second = try UDPSocket(binding: Endpoint(address: address, port: UInt16(port + 1)))
        rtp = consume first
        rtcp = consume second
    }

    func takeRTP() -> UDPSocket { rtp.take()! }
    func takeRTCP() -> UDPSocket { rtcp.take()! }
}

/// A flag set once, shared with a thread.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    // ORDERING: relaxed; the threads polling it need only eventual visibility.
    var isSet: Bool { value.load(ordering: .relaxed) }
    /// Sets it; false if it was set already.
    func set() -> Bool { !value.exchange(true, ordering: .relaxed) }
}
