/// One RFC 4733 telephone-event payload (§2.3): a DTMF event in progress or ending.
///
/// Four bytes on the wire: event, E bit, R bit, 6-bit volume, 16-bit duration. Value type. Real-time safe.
public struct TelephoneEvent: Sendable, Hashable {
    /// Why bytes are not a telephone-event payload.
    public enum ParseError: Error, Sendable, Hashable {
        /// Fewer than 4 bytes.
        case tooShort
    }

    /// The bytes of one payload.
    public static let byteCount = 4

    /// Event code (§3.2): 0–9 the digits, 10 `*`, 11 `#`, 12–15 `A`–`D`; other codes are other events.
    public var event: UInt8
    /// E bit: this packet ends the event (sent three times, RFC 4733 §2.5.1.4).
    public var end: Bool
    /// Power level as −dBm0, 0...63 (higher is quieter).
    public var volume: UInt8
    /// Duration so far, in RTP timestamp units from the event's start timestamp.
    public var duration: UInt16

    /// An event from its fields; `volume` is masked to 6 bits on write. Real-time safe.
    public init(event: UInt8, end: Bool = false, volume: UInt8 = 10, duration: UInt16) {
        self.event = event
        self.end = end
        self.volume = volume
        self.duration = duration
    }

    /// The DTMF digit of `event` as ASCII (`0`–`9`, `*`, `#`, `A`–`D`), nil for other events. Real-time safe.
    public var digit: UInt8? { Self.digit(ofEvent: event) }

    /// The event code of an ASCII DTMF digit (`a`–`d` accepted as `A`–`D`), nil for anything else. Real-time safe.
    public static func event(ofDigit ascii: UInt8) -> UInt8? {
        switch ascii {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): ascii - UInt8(ascii: "0")
        case UInt8(ascii: "*"): 10
        case UInt8(ascii: "#"): 11
        case UInt8(ascii: "A")...UInt8(ascii: "D"): ascii - UInt8(ascii: "A") + 12
        case UInt8(ascii: "a")...UInt8(ascii: "d"): ascii - UInt8(ascii: "a") + 12
        default: nil
        }
    }

    /// The ASCII digit of event code `event`, nil above 15. Real-time safe.
    public static func digit(ofEvent event: UInt8) -> UInt8? {
        switch event {
        case 0...9: UInt8(ascii: "0") + event
        case 10: UInt8(ascii: "*")
        case 11: UInt8(ascii: "#")
        case 12...15: UInt8(ascii: "A") + event - 12
        default: nil
        }
    }

    /// Parses the first 4 bytes of an RTP payload (the R bit is ignored, as §2.3.3 asks). Real-time safe.
    public static func parse(_ payload: UnsafeRawBufferPointer) throws(ParseError) -> TelephoneEvent {
        guard payload.count >= byteCount else { throw .tooShort }
        return TelephoneEvent(
            event: payload[0], end: payload[1] & 0x80 != 0, volume: payload[1] & 0x3F,
            duration: RTPBytes.load(UInt16.self, at: 2, in: payload))
    }

    /// Writes the 4-byte payload at the start of `buffer` (R bit 0); returns 4 or throws. Real-time safe.
    public func write(into buffer: UnsafeMutableRawBufferPointer) throws(RTPPacket.WriteError) -> Int {
        guard buffer.count >= Self.byteCount else { throw .bufferTooSmall }
        buffer[0] = event
        buffer[1] = (end ? 0x80 : 0) | (volume & 0x3F)
        RTPBytes.store(duration, at: 2, in: buffer)
        return Self.byteCount
    }
}
