/// The bounds of what a client may send in one message (SPEC §4, §5), shared by the WebSocket and
/// the HTTP API so that both refuse the same things.
public enum WireLimits {
    /// Largest audio chunk in one WebSocket message, binary or base64-decoded (`frame_too_large`).
    public static let audioBytes = 1 << 20
    /// Longest mark name, in bytes (`invalid_message` beyond).
    public static let markNameBytes = 256
    /// Chat and say text, in Unicode scalar values: the contract's "characters". A scalar is at most
    /// 4 UTF-8 bytes, so this also caps the text at 40,000 bytes.
    public static let textScalars = 10_000
    /// DTMF digits in one request.
    public static let dtmfDigits = 64

    /// Counts text the way the contract does: Unicode scalar values, not grapheme clusters (an "a"
    /// followed by 400,000 combining accents is 400,001 scalars, not 1 character).
    public static func isValidText(_ text: String) -> Bool {
        // Stops counting past the limit: a 10 MB text costs no more than a 40 KB one.
        var count = 0
        for _ in text.unicodeScalars {
            count += 1
            if count > textScalars { return false }
        }
        return count >= 1
    }

    /// 1 to 64 of `0-9 * # A-D`.
    public static func isValidDTMF(_ digits: String) -> Bool {
        var count = 0
        for b in digits.utf8 {
            count += 1
            guard count <= dtmfDigits, dtmfByte(b) else { return false }
        }
        return count >= 1
    }

    private static func dtmfByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || b == 0x2A || b == 0x23 || (b >= 0x41 && b <= 0x44)
    }
}
