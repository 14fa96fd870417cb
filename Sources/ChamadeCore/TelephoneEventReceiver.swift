/// The receiving side of RFC 4733 DTMF for one RTP stream: turns its telephone-event packets into
/// one report per event (SPEC §6: `call_dtmf` "once per event").
///
/// An event is identified by its RTP timestamp (all its packets carry the event's start). It is
/// reported at its first end packet (E bit), with the duration that packet gives; the two copies
/// of the end packet that follow are ignored. When a new event starts before the previous one was
/// reported (every end packet lost), the previous one is reported then, with the longest duration
/// seen. Packets of an event older than the current one (reordered copies) are ignored.
///
/// Value type, no heap storage, O(1) per packet. Real-time safe. Not thread-safe: one owner.
public struct TelephoneEventReceiver: Sendable {
    /// One event, reported once.
    public struct Report: Sendable, Hashable {
        /// The digit as ASCII (`0`–`9`, `*`, `#`, `A`–`D`).
        public var digit: UInt8
        /// Its duration in RTP clock units.
        public var duration: Int
        public init(digit: UInt8, duration: Int) { (self.digit, self.duration) = (digit, duration) }
    }

    private var timestamp: UInt32 = 0
    private var event: UInt8 = 0
    private var duration = 0
    private var active = false
    private var reported = false

    public init() {}

    /// Takes one telephone-event packet of the stream (its payload parsed, and its RTP timestamp).
    /// Returns the event this packet completes, if any: the current one at its first end packet, or
    /// the previous one, never reported, when this packet starts a new event. Events that are not
    /// DTMF digits (RFC 4733 §3.2: codes above 15) are tracked but never reported. Real-time safe.
    public mutating func receive(_ packet: TelephoneEvent, timestamp packetTimestamp: UInt32) -> Report? {
        if active && packetTimestamp == timestamp {
            duration = max(duration, Int(packet.duration))
            guard packet.end, !reported else { return nil }
            reported = true
            return report()
        }
        // A packet of an older event: a reordered or late copy.
        if active && Int32(bitPattern: packetTimestamp &- timestamp) < 0 { return nil }
        let previous = active && !reported ? report() : nil
        (timestamp, event, duration, active) = (packetTimestamp, packet.event, Int(packet.duration), true)
        reported = packet.end
        if packet.end, previous == nil { return report() }
        return previous
    }

    private func report() -> Report? {
        TelephoneEvent.digit(ofEvent: event).map { Report(digit: $0, duration: duration) }
    }
}
