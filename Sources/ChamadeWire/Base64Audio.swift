/// Strict base64 (RFC 4648 §4) for the `audio` field of a WebSocket `audio` message (SPEC §4).
///
/// Foundation's decoder accepts input a strict one refuses (padding past the block, `==` tacked on
/// after a full one). Audio arrives at up to 50 messages a second per agent, so this one decodes in
/// one pass over the UTF-8 bytes with a table, and refuses before decoding anything too large.
public enum Base64Audio {
    public enum Invalid: Error, Sendable, Equatable {
        /// Not a multiple of 4 characters, a character outside the alphabet, padding anywhere but
        /// the last one or two places, or non-zero bits under the padding (not the canonical form).
        case malformed
        /// More than `limit` bytes once decoded.
        case tooLarge(byteCount: Int)
    }

    /// The bytes `text` encodes, at most `limit` of them.
    public static func decode(_ text: String, limit: Int) throws(Invalid) -> [UInt8] {
        var text = text
        // A String from JSON is native UTF-8, so this never copies; a bridged one is made native.
        let result = text.withUTF8 { utf8 in Result { () throws(Invalid) in try decode(UnsafeRawBufferPointer(utf8), limit: limit) } }
        return try result.get()
    }

    public static func decode(_ chars: UnsafeRawBufferPointer, limit: Int) throws(Invalid) -> [UInt8] {
        let n = chars.count
        guard n % 4 == 0 else { throw .malformed }
        if n == 0 { return [] }
        let padding = chars[n - 1] == pad ? (chars[n - 2] == pad ? 2 : 1) : 0
        let byteCount = n / 4 * 3 - padding
        guard byteCount <= limit else { throw .tooLarge(byteCount: byteCount) }
        var out = [UInt8](repeating: 0, count: byteCount)
        var bad: UInt8 = 0
        out.withUnsafeMutableBufferPointer { out in
            var o = 0
            var i = 0
            // Whole quads; the last one is handled apart because of its padding.
            while i < n - 4 {
                let a = table[Int(chars[i])], b = table[Int(chars[i + 1])]
                let c = table[Int(chars[i + 2])], d = table[Int(chars[i + 3])]
                bad |= (a | b | c | d) & invalidBit
                let v = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
                out[o] = UInt8(truncatingIfNeeded: v >> 16)
                out[o + 1] = UInt8(truncatingIfNeeded: v >> 8)
                out[o + 2] = UInt8(truncatingIfNeeded: v)
                i += 4
                o += 3
            }
            let a = table[Int(chars[i])], b = table[Int(chars[i + 1])]
            let c = padding == 2 ? 0 : table[Int(chars[i + 2])]
            let d = padding >= 1 ? 0 : table[Int(chars[i + 3])]
            bad |= (a | b | c | d) & invalidBit
            let v = UInt32(a & 63) << 18 | UInt32(b & 63) << 12 | UInt32(c & 63) << 6 | UInt32(d & 63)
            // The bits under the padding must be zero: one encoding per byte string.
            let spare: UInt32 = padding == 2 ? 0xFFFF : padding == 1 ? 0xFF : 0
            if v & spare != 0 { bad |= invalidBit }
            out[o] = UInt8(truncatingIfNeeded: v >> 16)
            if padding < 2 { out[o + 1] = UInt8(truncatingIfNeeded: v >> 8) }
            if padding < 1 { out[o + 2] = UInt8(truncatingIfNeeded: v) }
        }
        guard bad == 0 else { throw .malformed }
        return out
    }

    private static let pad = UInt8(ascii: "=")
    private static let invalidBit: UInt8 = 0x80
    /// Each byte's 6-bit value, or `invalidBit` (padding included: it is valid only where handled).
    private static let table: [UInt8] = {
        var t = [UInt8](repeating: 0x80, count: 256)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        for (value, char) in alphabet.enumerated() { t[Int(char)] = UInt8(value) }
        return t
    }()
}
