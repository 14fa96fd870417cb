public import ChamadeCore
public import ChamadeDSP
public import ChamadeEngine
import Synchronization

/// What a leg is made of: codec, payload types, where its far end is, and its limits.
public struct RTPLegConfiguration: Sendable {
    public var codec: MediaCodec
    /// The payload type of the audio, both ways.
    public var payloadType: UInt8
    /// The telephone-event (RFC 4733) payload type, both ways.
    public var telephoneEventPayloadType: UInt8
    /// Where to send until packets arrive (then: their source, symmetric RTP).
    public var remote: Endpoint
    /// The Opus encoder's settings (SPEC §6: in-band FEC on, 32 kb/s).
    public var opus: Opus.Settings

    /// 32 kb/s, complexity 5, FEC on, expecting 10 % loss. Measured (ConcealmentQualityTests and
    /// libopus 1.3.1 here): at 32 kb/s the encoder codes no in-band FEC at all when told to expect
    /// 5 % loss or less, so "FEC on" with a lower figure would be FEC in name only. A leg raises the
    /// figure when the far end's RTCP reports more loss (never lowers it below 10 %).
    public static let defaultOpus = Opus.Settings(bitRate: 32_000, complexity: 5, inbandFEC: true, expectedPacketLossPercent: 10)
    /// No RTP or RTCP for this long ends the leg (`RTPLegEvent.timedOut`).
    public var timeoutNanoseconds: Int64
    /// The CNAME of its RTCP reports.
    public var canonicalName: String
    /// Audio per packet sent, ms: 20, or for G.711 40 or 60 when the far end asks (SDP `ptime`);
    /// Opus always sends 20 ms packets. Any packet duration from 10 to 60 ms is received.
    public var packetMilliseconds: Int {
        get { codec == .opus ? 20 : requestedPacketMilliseconds }
        set { requestedPacketMilliseconds = [20, 40, 60].contains(newValue) ? newValue : 20 }
    }
    private var requestedPacketMilliseconds = 20

    public init(
        codec: MediaCodec, remote: Endpoint, payloadType: UInt8? = nil, telephoneEventPayloadType: UInt8 = 101,
        opus: Opus.Settings = RTPLegConfiguration.defaultOpus,
        timeoutSeconds: Double = 10, canonicalName: String = "chamade"
    ) {
        self.codec = codec
        self.remote = remote
        self.payloadType = payloadType ?? codec.defaultPayloadType
        self.telephoneEventPayloadType = telephoneEventPayloadType
        self.opus = opus
        self.timeoutNanoseconds = Int64(timeoutSeconds * 1e9)
        self.canonicalName = canonicalName
    }
}

/// What a leg tells its owner, on the runtime's event queue (never on the media thread).
public enum RTPLegEvent: Sendable, Equatable {
    /// A telephone-event (RFC 4733) was received: the digit (`0`–`9`, `*`, `#`, `A`–`D`) and its
    /// duration.
    case digit(Character, durationMilliseconds: Int)
    /// No RTP or RTCP arrived for the configured timeout: the leg has stopped; close it.
    case timedOut
}

/// A snapshot of a leg's counters (SPEC §6's `leg` object, and more).
public struct RTPLegStatistics: Sendable, Equatable {
    public var packetsReceived = 0
    public var packetsLost = 0
    public var packetsLate = 0
    /// Datagrams that were not RTP of this leg: malformed, truncated, unknown payload type.
    public var packetsInvalid = 0
    public var packetsSent = 0
    public var telephoneEventsReceived = 0
    /// Interarrival jitter (RFC 3550 A.8), ms.
    public var jitterMilliseconds = 0.0
    /// Audio held in the jitter buffer, ms.
    public var jitterBufferMilliseconds = 0.0
    public var concealedMilliseconds = 0.0
    /// From the far end's RTCP reports about our stream (nil before the first).
    public var remoteFractionLost: Double?
    public var remoteJitterMilliseconds: Double?
    public var rtcpReceived = 0
    public var rtcpSent = 0

    public init() {}
}

/// Why a leg could not be opened or digits not queued.
public enum RTPLegError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Every port of the range is taken.
    case noFreePort(ClosedRange<Int>)
    case socket(SocketError)
    case codec(String)
    case engine(EngineError)
    /// The leg is closed.
    case closed
    /// Bad digits (SPEC: `invalid_dtmf`), or more than the queue can take.
    case invalidDigits(TelephoneEventSender.EnqueueError)

    public var description: String {
        switch self {
        case .noFreePort(let r): "no free RTP port pair in \(r.lowerBound)-\(r.upperBound)"
        case .socket(let e): e.description
        case .codec(let e): "codec: \(e)"
        case .engine(let e): e.description
        case .closed: "the leg is closed"
        case .invalidDigits(let e): "\(e)"
        }
    }
}

/// A platform leg over plain RTP: a participant of a room whose audio comes from and goes to the
/// network (SPEC §6). Made by `MediaRuntime.openLeg`; its media runs on one of the runtime's media
/// threads. Thread-safe; `close` is idempotent.
public final class RTPLeg: Sendable {
    public let configuration: RTPLegConfiguration
    /// Where it receives RTP (RTCP on the next port).
    public let local: Endpoint
    /// Its participant in the room.
    public let participantID: ParticipantID
    let shared: LegShared
    private let worker: MediaWorker

    init(configuration: RTPLegConfiguration, local: Endpoint, participantID: ParticipantID, shared: LegShared, worker: MediaWorker) {
        self.configuration = configuration
        self.local = local
        self.participantID = participantID
        self.shared = shared
        self.worker = worker
    }

    /// Where it sends now: the configured remote until packets arrive, then their source.
    public var remote: Endpoint { shared.remote }

    public var statistics: RTPLegStatistics { shared.snapshot() }

    /// Whether it has stopped (closed, or timed out).
    public var isFinished: Bool { shared.finished.load(ordering: .relaxed) }

    /// Queues `digits` (1–64 of `0-9 * # A-D`) as RFC 4733 events behind those already queued.
    /// Returns how long, in ms, everything queued now takes to send.
    @discardableResult
    public func sendDigits(_ digits: String) throws(RTPLegError) -> Int {
        guard !isFinished else { throw .closed }
        // Validated exactly as the sender will take them, before anything is queued.
        var probe = try! TelephoneEventSender(clockRate: configuration.codec.clockRate)
        do throws(TelephoneEventSender.EnqueueError) { try probe.enqueue(digits) } catch { throw .invalidDigits(error) }
        return try shared.queueDigits(Array(digits.utf8))
    }

    /// Where to send from now on (a SIP re-INVITE moved the far end); packets arriving from
    /// elsewhere later still move it (symmetric RTP).
    public func redirect(to remote: Endpoint) { shared.setRemote(remote) }

    /// Hold and resume (SIP `a=` directions, SPEC §6): `sending` false sends no RTP (the timeline
    /// runs on, so sequence numbers and timestamps stay continuous); `receiving` false does not
    /// count on RTP arriving, so the timeout is paused (and counts again from the resume). What
    /// arrives is still played.
    public func setDirection(sending: Bool, receiving: Bool) {
        shared.sending.store(sending, ordering: .relaxed)
        shared.receiving.store(receiving, ordering: .relaxed)
    }

    /// Stops the leg: an RTCP BYE is sent, its sockets close and its participant leaves the room.
    public func close() {
        guard !shared.closing.exchange(true, ordering: .relaxed) else { return }
        worker.remove(shared)
    }
}

/// What a leg's media worker and its owner's threads share: lock-free counters the worker
/// publishes, the latched remote, and the digit queue (an SPSC ring whose producer end is behind a
/// lock only API threads take).
final class LegShared: Sendable {
    let id: UInt64
    let onEvent: @Sendable (RTPLegEvent) -> Void
    let counters = Counters()
    let finished = Atomic<Bool>(false)
    let closing = Atomic<Bool>(false)
    /// The direction of the media (`RTPLeg.setDirection`); relaxed: a step sees a change within 20 ms.
    let sending = Atomic<Bool>(true)
    let receiving = Atomic<Bool>(true)
    private let remoteBits: Atomic<UInt64>
    private let digitProducer: Locked<SPSCRing<UInt8>.Producer>
    let digitRing: SPSCRing<UInt8>
    /// Milliseconds one queued digit takes: 100 ms of event and 60 ms to the next (TelephoneEventSender).
    static let millisecondsPerDigit = 20 * (TelephoneEventSender.eventTicks + TelephoneEventSender.gapTicks)

    final class Counters: Sendable {
        let packetsReceived = Atomic<Int>(0), packetsLost = Atomic<Int>(0), packetsLate = Atomic<Int>(0)
        let packetsInvalid = Atomic<Int>(0), packetsSent = Atomic<Int>(0), eventsReceived = Atomic<Int>(0)
        let jitterMicroseconds = Atomic<Int>(0), bufferMicroseconds = Atomic<Int>(0), concealedMicroseconds = Atomic<Int>(0)
        /// Fraction lost × 256 and jitter µs from the far end's reports; −1 before the first.
        let remoteFraction = Atomic<Int>(-1), remoteJitterMicroseconds = Atomic<Int>(-1)
        let rtcpReceived = Atomic<Int>(0), rtcpSent = Atomic<Int>(0)
        /// Digits waiting in the worker's sender (not in the ring).
        let digitsInSender = Atomic<Int>(0)
    }

    init(id: UInt64, remote: Endpoint, onEvent: @escaping @Sendable (RTPLegEvent) -> Void) {
        self.id = id
        self.onEvent = onEvent
        remoteBits = Atomic(Self.pack(remote))
        digitRing = SPSCRing(capacity: 256)
        digitProducer = Locked(digitRing.takeProducer())
    }

    private static func pack(_ e: Endpoint) -> UInt64 { UInt64(e.address) << 16 | UInt64(e.port) }

    // ORDERING: relaxed everywhere below: independent counters and a gauge-like address, read for
    // reports; nothing is published through them.
    var remote: Endpoint {
        let bits = remoteBits.load(ordering: .relaxed)
        return Endpoint(address: UInt32(truncatingIfNeeded: bits >> 16), port: UInt16(truncatingIfNeeded: bits))
    }

    func setRemote(_ e: Endpoint) { remoteBits.store(Self.pack(e), ordering: .relaxed) }

    func queueDigits(_ digits: [UInt8]) throws(RTPLegError) -> Int {
        let queued = try digitProducer.withLock { (p: inout SPSCRing<UInt8>.Producer) throws(RTPLegError) -> Int in
            let free = p.availableToWrite()
            let waiting = p.capacity - free
            guard free >= digits.count else { throw .invalidDigits(.queueFull(queued: waiting)) }
            for d in digits { _ = p.push(d) }
            return waiting + digits.count
        }
        return (queued + counters.digitsInSender.load(ordering: .relaxed)) * Self.millisecondsPerDigit
    }

    func snapshot() -> RTPLegStatistics {
        let c = counters
        var s = RTPLegStatistics()
        s.packetsReceived = c.packetsReceived.load(ordering: .relaxed)
        s.packetsLost = c.packetsLost.load(ordering: .relaxed)
        s.packetsLate = c.packetsLate.load(ordering: .relaxed)
        s.packetsInvalid = c.packetsInvalid.load(ordering: .relaxed)
        s.packetsSent = c.packetsSent.load(ordering: .relaxed)
        s.telephoneEventsReceived = c.eventsReceived.load(ordering: .relaxed)
        s.jitterMilliseconds = Double(c.jitterMicroseconds.load(ordering: .relaxed)) / 1000
        s.jitterBufferMilliseconds = Double(c.bufferMicroseconds.load(ordering: .relaxed)) / 1000
        s.concealedMilliseconds = Double(c.concealedMicroseconds.load(ordering: .relaxed)) / 1000
        let fraction = c.remoteFraction.load(ordering: .relaxed)
        if fraction >= 0 { s.remoteFractionLost = Double(fraction) / 256 }
        let jitter = c.remoteJitterMicroseconds.load(ordering: .relaxed)
        if jitter >= 0 { s.remoteJitterMilliseconds = Double(jitter) / 1000 }
        s.rtcpReceived = c.rtcpReceived.load(ordering: .relaxed)
        s.rtcpSent = c.rtcpSent.load(ordering: .relaxed)
        return s
    }
}
