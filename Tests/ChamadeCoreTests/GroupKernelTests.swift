import ChamadeCore
import Testing

@Suite("Rate-group kernels")
struct GroupKernelTests {
    /// Inside 16-bit range, rounding to Int32 is exactly the Int16 path's rounding (so a single
    /// talker's group share equals its private row); beyond it nothing saturates and the error is
    /// at most half an LSB, up to the clamp near 2^31.
    @Test func toInt32MatchesToInt16InRangeAndDoesNotSaturate() {
        var v: Float = -1.0
        while v <= 1.0 {
            #expect(Int32(SampleConversion.toInt16(v)) == SampleConversion.toInt32(v) || v * 32768 > 32767)
            v += 1 / 65536.5
        }
        #expect(SampleConversion.toInt32(2.5) == 81920)
        #expect(SampleConversion.toInt32(-40) == -1_310_720)
        for x in [Float(130.25), 300.75, -500.125, 60000] {
            let exact = Double(x) * 32768
            #expect(abs(Double(SampleConversion.toInt32(x)) - exact) <= 0.5)
        }
        #expect(SampleConversion.toInt32(1e9) == 2_147_483_520)
    }

    /// 32-bit add and sum, and total − share converted to Float, are exact.
    @Test func addSumAndDifference() {
        let a: [Int32] = [1, -2, 100_000, Int32.max - 1]
        let b: [Int32] = [3, 4, -100_000, 1]
        var t = a
        b.withUnsafeBufferPointer { bb in t.withUnsafeMutableBufferPointer { MixMinus.add(bb, into: $0) } }
        #expect(t == [4, 2, 0, Int32.max])
        var s = [Int32](repeating: 0, count: 4)
        a.withUnsafeBufferPointer { aa in
            b.withUnsafeBufferPointer { bb in s.withUnsafeMutableBufferPointer { MixMinus.sum(aa, bb, into: $0) } }
        }
        #expect(s == t)
        var f = [Float](repeating: 0, count: 4)
        t.withUnsafeBufferPointer { tt in
            b.withUnsafeBufferPointer { bb in
                f.withUnsafeMutableBufferPointer { SampleConversion.toFloat(tt, minus: bb, into: $0) }
            }
        }
        #expect(f[0] == Float(1) / 32768 && f[1] == Float(-2) / 32768 && f[2] == Float(100_000) / 32768)
    }
}
