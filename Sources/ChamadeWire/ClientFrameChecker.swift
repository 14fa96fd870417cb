/// Follows a client's WebSocket byte stream frame by frame (RFC 6455 §5.2) and stops it at the first
/// frame the server will not take (SPEC §9). It reads the frame headers only; payloads are skipped,
/// not copied. Run on the raw bytes before any WebSocket library sees them, so that no frame, not
/// even one sent in the same packet as the upgrade request, gets past it.
///
/// - 1002: a reserved bit (no extension is negotiated), an unknown opcode, an unmasked frame, a
///   fragmented or oversized (over 125 bytes) control frame, a length with its top bit set, a
///   continuation with no message begun, a new message before the last one ended;
/// - 1009: a message of more than 1,000 fragments or more than `maxMessageBytes`. A library that
///   counts bytes only let a stream of empty continuations grow the server without end.
public struct ClientFrameChecker: Sendable {
    public struct Violation: Error, Sendable, Equatable {
        /// The close code: 1002 (protocol error) or 1009 (message too big).
        public var code: UInt16
        public var reason: String
    }

    public static let maxFragments = 1000
    public let maxMessageBytes: Int

    /// The header being read (at most 14 bytes) and how many of it are needed.
    private var header: (UInt64, UInt64) = (0, 0)
    private var headerCount = 0
    private var payloadRemaining: UInt64 = 0
    private var inMessage = false
    private var fragments = 0
    private var messageBytes: UInt64 = 0
    public private(set) var violation: Violation?

    public init(maxMessageBytes: Int) { self.maxMessageBytes = maxMessageBytes }

    /// Follows `bytes`, the next part of the stream. Returns the first violation (and every later
    /// call returns it again: the stream is over).
    public mutating func consume(_ bytes: UnsafeRawBufferPointer) -> Violation? {
        if let violation { return violation }
        var i = 0
        let n = bytes.count
        while i < n {
            if payloadRemaining > 0 {
                let skip = Int(min(payloadRemaining, UInt64(n - i)))
                payloadRemaining -= UInt64(skip)
                i += skip
                continue
            }
            appendHeaderByte(bytes[i])
            i += 1
            guard let needed = neededHeaderBytes(), headerCount == needed else { continue }
            if let v = checkHeader() {
                violation = v
                return v
            }
            headerCount = 0
            header = (0, 0)
        }
        return nil
    }

    private mutating func appendHeaderByte(_ b: UInt8) {
        if headerCount < 8 {
            header.0 |= UInt64(b) << (8 * UInt64(headerCount))
        } else {
            header.1 |= UInt64(b) << (8 * UInt64(headerCount - 8))
        }
        headerCount += 1
    }

    private func headerByte(_ k: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: k < 8 ? header.0 >> (8 * UInt64(k)) : header.1 >> (8 * UInt64(k - 8)))
    }

    /// The header's full size once its first two bytes are known: 2, plus 2 or 8 of extended
    /// length, plus 4 of mask when masked (an unmasked frame is refused at 2 bytes).
    private func neededHeaderBytes() -> Int? {
        guard headerCount >= 2 else { return nil }
        let second = headerByte(1)
        guard second & 0x80 != 0 else { return 2 }
        switch second & 0x7F {
        case 126: return 2 + 2 + 4
        case 127: return 2 + 8 + 4
        default: return 2 + 4
        }
    }

    private mutating func checkHeader() -> Violation? {
        let first = headerByte(0), second = headerByte(1)
        let fin = first & 0x80 != 0
        let opcode = first & 0x0F
        guard first & 0x70 == 0 else { return Violation(code: 1002, reason: "reserved bits set: no extension was negotiated") }
        guard second & 0x80 != 0 else { return Violation(code: 1002, reason: "client frames must be masked") }
        var length = UInt64(second & 0x7F)
        if length == 126 {
            length = UInt64(headerByte(2)) << 8 | UInt64(headerByte(3))
        } else if length == 127 {
            length = (2..<10).reduce(0) { $0 << 8 | UInt64(headerByte($1)) }
            guard length >> 63 == 0 else { return Violation(code: 1002, reason: "a frame length with its top bit set") }
        }
        switch opcode {
        case 0x8, 0x9, 0xA:
            guard fin, length <= 125 else { return Violation(code: 1002, reason: "control frames are unfragmented and at most 125 bytes") }
        case 0x1, 0x2:
            guard !inMessage else { return Violation(code: 1002, reason: "a new message began before the last one ended") }
            inMessage = !fin
            fragments = 1
            messageBytes = length
        case 0x0:
            guard inMessage else { return Violation(code: 1002, reason: "a continuation frame with no message begun") }
            fragments += 1
            messageBytes += length
            if fin { inMessage = false }
        default:
            return Violation(code: 1002, reason: "unknown opcode \(opcode)")
        }
        guard fragments <= Self.maxFragments else { return Violation(code: 1009, reason: "a message of more than 1,000 fragments") }
        guard messageBytes <= UInt64(maxMessageBytes) else {
            return Violation(code: 1009, reason: "a message of more than \(maxMessageBytes >> 20) MiB")
        }
        payloadRemaining = length
        return nil
    }
}
