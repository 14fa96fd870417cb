/// Conversions between the engine's Int16 samples and libsamplerate's Float samples.
///
/// Full scale is 32768: Int16 → Float divides by it, Float → Int16 multiplies, rounds to nearest
/// (ties to even) and saturates to [-32768, 32767]. The rounding uses the 1.5 × 2^23 trick rather
/// than `rounded()`, which on baseline x86-64 (no SSE4.1) is a libm call per sample; this form
/// vectorises (FACTS.md: libsamplerate's own helpers are 20× slower than a vector loop).
///
/// Real-time safe.
public enum SampleConversion {
    public static let fullScale: Float = 32768

    @inlinable
    public static func toFloat(_ input: UnsafeBufferPointer<Int16>, into output: UnsafeMutableBufferPointer<Float>) {
        let n = input.count
        precondition(output.count >= n, "output too short")
        guard n > 0 else { return }
        let i = input.baseAddress!
        let o = output.baseAddress!
        let scale: Float = 1 / fullScale
        for k in 0..<n { o[k] = Float(i[k]) * scale }
    }

    @inlinable
    public static func toFloat(_ input: UnsafeBufferPointer<Int32>, into output: UnsafeMutableBufferPointer<Float>) {
        let n = input.count
        precondition(output.count >= n, "output too short")
        guard n > 0 else { return }
        let i = input.baseAddress!
        let o = output.baseAddress!
        let scale: Float = 1 / fullScale
        for k in 0..<n { o[k] = Float(i[k]) * scale }
    }

    /// out = Float(a − b) / full scale: a room's total minus one group's share, exact in 32 bits
    /// before the one rounding to Float.
    @inlinable
    public static func toFloat(
        _ a: UnsafeBufferPointer<Int32>, minus b: UnsafeBufferPointer<Int32>, into output: UnsafeMutableBufferPointer<Float>
    ) {
        let n = a.count
        precondition(b.count >= n && output.count >= n, "buffers too short")
        guard n > 0 else { return }
        let x = a.baseAddress!
        let y = b.baseAddress!
        let o = output.baseAddress!
        let scale: Float = 1 / fullScale
        for k in 0..<n { o[k] = Float(x[k] &- y[k]) * scale }
    }

    /// Rounds one scaled value to Int32 without 16-bit saturation (sums of many inputs are
    /// saturated once, at the end of the mix). Rounds to nearest, ties to even, below 128 × full
    /// scale (2^22), the same result as `toInt16` inside the 16-bit range; beyond that a Float's
    /// spacing is already ≥ 0.5 and the value is truncated (within half an LSB).
    @inlinable @inline(__always)
    public static func toInt32(_ x: Float) -> Int32 {
        // Largest Float below 2^31: converting it cannot trap.
        let v = min(max(x * fullScale, -2_147_483_520), 2_147_483_520)
        let magic: Float = 12_582_912
        let rounded = (v + magic) - magic
        return Int32(abs(v) < 4_194_304 ? rounded : v)
    }

    @inlinable
    public static func toInt32(_ input: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Int32>) {
        let n = input.count
        precondition(output.count >= n, "output too short")
        guard n > 0 else { return }
        let i = input.baseAddress!
        let o = output.baseAddress!
        for k in 0..<n { o[k] = toInt32(i[k]) }
    }

    /// Rounds one scaled value to Int16 with saturation.
    @inlinable @inline(__always)
    public static func toInt16(_ x: Float) -> Int16 {
        let clamped = min(max(x * fullScale, -32768), 32767)
        // Adding and removing 1.5 × 2^23 rounds to nearest-even for |v| < 2^22.
        let magic: Float = 12_582_912
        return Int16(truncatingIfNeeded: Int32((clamped + magic) - magic))
    }

    @inlinable
    public static func toInt16(_ input: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Int16>) {
        let n = input.count
        precondition(output.count >= n, "output too short")
        guard n > 0 else { return }
        let i = input.baseAddress!
        let o = output.baseAddress!
        for k in 0..<n { o[k] = toInt16(i[k]) }
    }
}
