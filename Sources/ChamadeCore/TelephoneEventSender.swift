/// The sending side of RFC 4733 DTMF for one RTP stream: a queue of digits turned into one
/// telephone-event packet (or none) per 20 ms tick, per SPEC §6.
///
/// **Timeline of one digit**, in ticks of 20 ms (B = clock rate / 50 RTP units per tick), the event
/// starting at the media timestamp `t` of its first tick:
///
/// | tick | packet                                             |
/// |------|----------------------------------------------------|
/// | 0    | marker, timestamp `t`, duration B                  |
/// | 1–3  | timestamp `t`, duration 2B, 3B, 4B                 |
/// | 4    | E bit, timestamp `t`, duration 5B (100 ms)         |
/// | 5, 6 | the same end packet again (``Packet/isRetransmission``) |
/// | 7    | nothing                                            |
///
/// and the next queued digit starts at tick 8. So each event lasts 100 ms of media time and events
/// are 60 ms apart: SPEC's 50 ms rounded up to whole ticks, because an event must start at a tick's
/// media timestamp (it replaces that tick's audio) and 40 ms would be too short.
///
/// **The three end packets** go one per tick (ticks 4, 5, 6), not three in one tick: RFC 4733
/// §2.5.1.4 asks that the final packet be sent three times "at the interval used by the source for
/// updates", so that a burst loss (the usual kind) cannot take all three. The two copies fall in
/// ticks after the event's 100 ms: they describe no media of their tick, so the caller may send the
/// tick's audio as well (``Packet/isRetransmission`` is true) or instead of it; ticks 0–4 replace
/// the tick's audio.
///
/// **Queue.** ``enqueue(_:)`` appends a whole request (1–64 digits, SPEC §3) behind the digits
/// already queued or being sent, or refuses it whole with a typed ``EnqueueError``. The queue holds
/// ``capacity`` digits (a full request behind another full one) in inline storage.
///
/// Value type with no references and no heap storage (`_isPOD`), so nothing it does can allocate;
/// every operation is O(1) except `enqueue`, which is O(digits). Real-time safe. Not thread-safe:
/// one owner (the leg's sending side) calls `enqueue` and `next`.
public struct TelephoneEventSender: Sendable {
    /// Why a sender cannot be made.
    public enum ConfigurationError: Error, Equatable, Sendable {
        /// Not a positive multiple of 50 whose 100 ms fits the 16-bit duration field (≤ 655 350).
        case clockRate(Int)
        /// Not 0...127.
        case payloadType(Int)
        /// Not 0...63 (−dBm0).
        case volume(Int)
    }

    /// Why a request of digits was refused (nothing of it is queued).
    public enum EnqueueError: Error, Equatable, Sendable {
        /// No digits.
        case empty
        /// More than ``maximumRequestLength`` digits.
        case tooManyDigits(Int)
        /// A character other than `0`–`9`, `*`, `#`, `A`–`D` (`a`–`d`), at this UTF-8 offset.
        case invalidDigit(offset: Int)
        /// The queue cannot take the whole request: ``capacity`` minus the digits queued is less
        /// than its length.
        case queueFull(queued: Int)
    }

    /// One telephone-event packet to send on a tick.
    public struct Packet: Sendable, Hashable {
        /// The RTP marker bit: set on the first packet of each event.
        public var marker: Bool
        /// The RTP timestamp: the event's start, the same for all its packets.
        public var timestamp: UInt32
        /// The telephone-event payload type negotiated for the stream.
        public var payloadType: UInt8
        /// The 4-byte payload; write it with `event.write(into:)`.
        public var event: TelephoneEvent
        /// True for the second and third copies of the end packet, which fall after the event's
        /// media time: the tick's audio may be sent too.
        public var isRetransmission: Bool

        public init(
            marker: Bool, timestamp: UInt32, payloadType: UInt8, event: TelephoneEvent, isRetransmission: Bool
        ) {
            self.marker = marker
            self.timestamp = timestamp
            self.payloadType = payloadType
            self.event = event
            self.isRetransmission = isRetransmission
        }
    }

    /// Digits one request may hold (SPEC §3: 1–64).
    public static let maximumRequestLength = 64
    /// Digits the queue holds, the one being sent excluded.
    public static let capacity = 128
    /// Ticks an event lasts (100 ms).
    public static let eventTicks = 5
    /// Ticks from an event's end to the next event's start (60 ms ≥ SPEC's 50 ms).
    public static let gapTicks = 3
    /// Copies of the end packet, one per tick from the event's last tick.
    public static let endPacketCount = 3

    /// RTP clock rate of the stream.
    public let clockRate: Int
    /// Telephone-event payload type.
    public let payloadType: UInt8
    /// Volume written in every packet, −dBm0.
    public let volume: UInt8
    let unitsPerTick: UInt16

    // The queue: a ring of event codes (0–15) in inline storage (128 bytes, no heap).
    typealias Storage = (
        UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
        UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64
    )
    var storage: Storage = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    var head = 0
    var count = 0

    // The event in progress: its code, start timestamp and tick index (nil when idle).
    var currentEvent: UInt8 = 0
    var currentStart: UInt32 = 0
    var currentTick: Int?

    /// A sender for a stream at `clockRate` (8000 for G.711, 48000 for Opus) with the
    /// telephone-event payload type `payloadType` (SPEC §6 default 101). Real-time safe.
    public init(clockRate: Int, payloadType: Int = 101, volume: Int = 10) throws(ConfigurationError) {
        guard clockRate > 0, clockRate % 50 == 0, clockRate / 10 <= Int(UInt16.max) else {
            throw .clockRate(clockRate)
        }
        guard (0...127).contains(payloadType) else { throw .payloadType(payloadType) }
        guard (0...63).contains(volume) else { throw .volume(volume) }
        self.clockRate = clockRate
        self.payloadType = UInt8(payloadType)
        self.volume = UInt8(volume)
        unitsPerTick = UInt16(clockRate / 50)
        precondition(MemoryLayout<Storage>.size == Self.capacity)
    }

    /// Digits queued and not yet started.
    public var queuedDigitCount: Int { count }

    /// True while an event or the gap after it is in progress or digits are queued.
    public var isBusy: Bool { currentTick != nil || count > 0 }

    /// Queues `digits` (`0`–`9`, `*`, `#`, `A`–`D`, `a`–`d`; 1–64 of them) behind the digits already
    /// queued or being sent, or refuses the whole request. Real-time safe (no allocation: it reads
    /// the UTF-8 view).
    public mutating func enqueue(_ digits: some StringProtocol) throws(EnqueueError) {
        var length = 0
        for byte in digits.utf8 {
            guard TelephoneEvent.event(ofDigit: byte) != nil else { throw .invalidDigit(offset: length) }
            length += 1
        }
        guard length > 0 else { throw .empty }
        guard length <= Self.maximumRequestLength else { throw .tooManyDigits(length) }
        guard length <= Self.capacity - count else { throw .queueFull(queued: count) }
        withUnsafeMutableBytes(of: &storage) { bytes in
            var slot = (head + count) % Self.capacity
            for byte in digits.utf8 {
                // Validated above.
                bytes[slot] = TelephoneEvent.event(ofDigit: byte) ?? 0
                slot = (slot + 1) % Self.capacity
            }
        }
        count += length
    }

    /// Drops the queued digits; an event in progress still ends properly (its end packets are sent).
    /// Real-time safe.
    public mutating func removeQueued() {
        head = 0
        count = 0
    }

    /// The telephone-event packet for the 20 ms tick whose media starts at `tickTimestamp`, or nil
    /// (send the tick's audio). Call exactly once per tick, with the timestamp the tick's audio
    /// packet would carry. Real-time safe, O(1).
    public mutating func next(at tickTimestamp: UInt32) -> Packet? {
        if currentTick == nil {
            guard count > 0 else { return nil }
            currentEvent = withUnsafeBytes(of: &storage) { $0[head] }
            head = (head + 1) % Self.capacity
            count -= 1
            currentStart = tickTimestamp
            currentTick = 0
        }
        guard let tick = currentTick else { return nil }
        currentTick = tick + 1 < Self.eventTicks + Self.gapTicks ? tick + 1 : nil
        guard tick < Self.eventTicks - 1 + Self.endPacketCount else { return nil }
        let end = tick >= Self.eventTicks - 1
        let ticksSoFar = UInt16(min(tick, Self.eventTicks - 1) + 1)
        return Packet(
            marker: tick == 0, timestamp: currentStart, payloadType: payloadType,
            event: TelephoneEvent(event: currentEvent, end: end, volume: volume, duration: ticksSoFar * unitsPerTick),
            isRetransmission: tick >= Self.eventTicks)
    }
}
