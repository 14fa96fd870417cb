/// ITU-T G.711 companding: PCMU (µ-law, RTP payload type 0) and PCMA (A-law, payload type 8).
///
/// The encoder is the ITU's own reference rule, ITU-T G.191 (STL) `ulaw_compress` / `alaw_compress`,
/// bit for bit: it takes the 14 (µ-law) or 13 (A-law) most significant bits of the 16-bit sample, one's
/// complement for negative values, and places it by G.711's decision values. ffmpeg's and sox's encoders
/// differ from it on 964 of the 65,536 inputs per law, always by one quantisation step: they cut at
/// the arithmetic midpoint between reconstruction values, which is not G.711's decision value at a
/// segment edge, and round negative ties the other way. The tests pin both facts exhaustively
/// (fixtures/g711/README.md). The decoder equals G.191, ffmpeg and sox on all 256 codes.
///
/// Everything here is bit code over integers: no tables behind lazy globals, so the first call on
/// the tick touches nothing new. Real-time safe.
public enum G711 {
    /// Which companding law.
    public enum Law: Sendable, Hashable {
        /// µ-law, RTP `PCMU`, static payload type 0.
        case mu
        /// A-law, RTP `PCMA`, static payload type 8.
        case a

        /// The static RTP payload type (RFC 3551): 0 for PCMU, 8 for PCMA.
        public var staticPayloadType: UInt8 { self == .mu ? 0 : 8 }

        /// One sample to its code. Real-time safe.
        @inlinable @inline(__always)
        public func encode(_ sample: Int16) -> UInt8 { self == .mu ? G711.encodeMuLaw(sample) : G711.encodeALaw(sample) }

        /// One code to its sample (16-bit, full scale). Real-time safe.
        @inlinable @inline(__always)
        public func decode(_ code: UInt8) -> Int16 { self == .mu ? G711.decodeMuLaw(code) : G711.decodeALaw(code) }

        /// Encodes `input.count` samples into the first `input.count` bytes of `output`
        /// (`output.count >= input.count`, else a precondition failure). Allocates nothing. Real-time safe.
        @inlinable
        public func encode(_ input: UnsafeBufferPointer<Int16>, into output: UnsafeMutableBufferPointer<UInt8>) {
            switch self {
            case .mu: G711.encodeMuLaw(input, into: output)
            case .a: G711.encodeALaw(input, into: output)
            }
        }

        /// Decodes `input.count` codes into the first `input.count` samples of `output`
        /// (`output.count >= input.count`, else a precondition failure). Allocates nothing. Real-time safe.
        @inlinable
        public func decode(_ input: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableBufferPointer<Int16>) {
            switch self {
            case .mu: G711.decodeMuLaw(input, into: output)
            case .a: G711.decodeALaw(input, into: output)
            }
        }
    }

    /// The 256 decoded samples of one law, indexed by code: 512 bytes inline, no heap, built once by
    /// its owner (not a lazy global). For hot loops that prefer a load to a few shifts. Real-time safe.
    public struct DecodeTable: Sendable {
        /// `samples[code]` is the decoded sample of `code`.
        public let samples: InlineArray<256, Int16>

        /// Builds the table of `law` from the bit code. Real-time safe (no allocation).
        public init(_ law: Law) {
            samples = InlineArray { law.decode(UInt8(truncatingIfNeeded: $0)) }
        }

        /// The sample of `code`. Real-time safe.
        @inlinable @inline(__always)
        public subscript(code: UInt8) -> Int16 { samples[Int(code)] }
    }

    // MARK: µ-law

    /// µ-law encode per G.191 `ulaw_compress` (14 MSBs, one's complement for negatives). Real-time safe.
    @inlinable @inline(__always)
    public static func encodeMuLaw(_ sample: Int16) -> UInt8 {
        let x = Int32(sample)
        let negative = x < 0
        // 33 is the bias that makes the segment the position of the leading one (G.191's comment:
        // "the difference value between the thresholds for A-law and u-law").
        let magnitude = min(((negative ? ~x : x) >> 2) + 33, 0x1FFF)  // 33...8191
        let segment = (32 - magnitude.leadingZeroBitCount) - 6  // 0...7
        let step = (magnitude >> Int32(segment + 1)) & 0xF
        let code = UInt8(truncatingIfNeeded: (Int32(segment) << 4) | step)
        return code ^ (negative ? 0x7F : 0xFF)
    }

    /// µ-law decode: 0xFF and 0x7F → 0, 0x80 → 32124, 0x00 → −32124. Real-time safe.
    @inlinable @inline(__always)
    public static func decodeMuLaw(_ code: UInt8) -> Int16 {
        let u = Int32(~code)
        let magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        return Int16(truncatingIfNeeded: (u & 0x80) != 0 ? 0x84 - magnitude : magnitude - 0x84)
    }

    /// Encodes `input.count` samples as µ-law into `output` (`output.count >= input.count`). Real-time safe.
    @inlinable
    public static func encodeMuLaw(_ input: UnsafeBufferPointer<Int16>, into output: UnsafeMutableBufferPointer<UInt8>) {
        let n = input.count
        precondition(output.count >= n, "output too short")
        guard n > 0 else { return }
        let i = input.baseAddress!
        let o = output.baseAddress!
        for k in 0..<n { o[k] = encodeMuLaw(i[k]) }
    }

    /// Decodes `input.count` µ-law codes into `output` (`output.count >= input.count`). Real-time safe.
    @inlinable
    public static func decodeMuLaw(_ input: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableBufferPointer<Int16>) {
        let n = input.count
        precondition(output.count >= n, "output too short")
        guard n > 0 else { return }
        let i = input.baseAddress!
        let o = output.baseAddress!
        for k in 0..<n { o[k] = decodeMuLaw(i[k]) }
    }

    // MARK: A-law

    /// A-law encode per G.191 `alaw_compress` (12-bit magnitude, one's complement for negatives, even
    /// bits toggled). Real-time safe.
    @inlinable @inline(__always)
    public static func encodeALaw(_ sample: Int16) -> UInt8 {
        let x = Int32(sample)
        let negative = x < 0
        let ix = (negative ? ~x : x) >> 4  // 0...2047
        var magnitude = ix
        if ix > 15 {
            let exponent = (32 - ix.leadingZeroBitCount) - 4  // 1...7
            magnitude = (Int32(exponent) << 4) | ((ix >> Int32(exponent - 1)) & 0xF)
        }
        let code = UInt8(truncatingIfNeeded: magnitude) | (negative ? 0 : 0x80)
        return code ^ 0x55
    }

    /// A-law decode: 0xD5 → 8, 0x55 → −8, 0xAA → 32256, 0x2A → −32256. Real-time safe.
    @inlinable @inline(__always)
    public static func decodeALaw(_ code: UInt8) -> Int16 {
        let a = Int32(code ^ 0x55)
        let segment = (a & 0x70) >> 4
        var t = (a & 0x0F) << 4
        switch segment {
        case 0: t += 8
        case 1: t += 0x108
        default: t = (t + 0x108) << (segment - 1)
        }
        return Int16(truncatingIfNeeded: (a & 0x80) != 0 ? t : -t)
    }

    /// Encodes `input.count` samples as A-law into `output` (`output.count >= input.count`). Real-time safe.
    @inlinable
    public static func encodeALaw(_ input: UnsafeBufferPointer<Int16>, into output: UnsafeMutableBufferPointer<UInt8>) {
        let n = input.count
        precondition(output.count >= n, "output too short")
        guard n > 0 else { return }
        let i = input.baseAddress!
        let o = output.baseAddress!
        for k in 0..<n { o[k] = encodeALaw(i[k]) }
    }

    /// Decodes `input.count` A-law codes into `output` (`output.count >= input.count`). Real-time safe.
    @inlinable
    public static func decodeALaw(_ input: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableBufferPointer<Int16>) {
        let n = input.count
        precondition(output.count >= n, "output too short")
        guard n > 0 else { return }
        let i = input.baseAddress!
        let o = output.baseAddress!
        for k in 0..<n { o[k] = decodeALaw(i[k]) }
    }
}
