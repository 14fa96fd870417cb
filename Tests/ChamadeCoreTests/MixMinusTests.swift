import ChamadeCore
import ChamadeTesting
import Testing

@Suite("Mix-minus kernel")
struct MixMinusTests {
    func mix(_ rows: [Int16], n: Int, samples: Int) -> [Int16] {
        var total = [Int32](repeating: 0, count: samples)
        var out = [Int16](repeating: 0, count: n * samples)
        rows.withUnsafeBufferPointer { r in
            total.withUnsafeMutableBufferPointer { t in
                out.withUnsafeMutableBufferPointer { o in
                    MixMinus.mix(rows: r, participantCount: n, sampleCount: samples, total: t, outputs: o)
                }
            }
        }
        return out
    }

    func reference(_ rows: [Int16], n: Int, samples: Int) -> [Int16] {
        var out = [Int16](repeating: 0, count: n * samples)
        rows.withUnsafeBufferPointer { r in
            out.withUnsafeMutableBufferPointer { o in
                MixMinus.referenceMix(rows: r, participantCount: n, sampleCount: samples, outputs: o)
            }
        }
        return out
    }

    /// Equals the O(N²) definition exactly on random full-scale inputs (which saturate often).
    @Test(arguments: 1...64)
    func equalsReference(n: Int) {
        var rng = SeededRandom(seed: UInt64(n))
        let samples = 160
        let loud = (0..<(n * samples)).map { _ in Int16.random(in: .min ... .max, using: &rng) }
        #expect(mix(loud, n: n, samples: samples) == reference(loud, n: n, samples: samples))
        let quiet = (0..<(n * samples)).map { _ in Int16.random(in: -300...300, using: &rng) }
        #expect(mix(quiet, n: n, samples: samples) == reference(quiet, n: n, samples: samples))
    }

    @Test func saturatesAtFullScale() {
        let n = 3
        let rows: [Int16] = [30000, -30000, 30000, -30000, 30000, -30000]  // 3 rows of 2 samples
        let out = mix(rows, n: n, samples: 2)
        #expect(out == [32767, -32768, 32767, -32768, 32767, -32768])
        #expect(MixMinus.saturate(Int32(40000)) == 32767)
        #expect(MixMinus.saturate(Int32(-40000)) == -32768)
        #expect(MixMinus.saturate(Int32(-32768)) == -32768)
        #expect(MixMinus.saturate(Int32(12345)) == 12345)
    }

    /// Only one participant makes sound: it hears nothing, every other hears exactly its signal.
    @Test(arguments: [2, 5, 17])
    func nobodyHearsThemselves(n: Int) {
        let samples = 48
        for talker in 0..<n {
            var rows = [Int16](repeating: 0, count: n * samples)
            let signal = (0..<samples).map { Int16($0 * 97 - 2000) }
            rows.replaceSubrange((talker * samples)..<((talker + 1) * samples), with: signal)
            let out = mix(rows, n: n, samples: samples)
            for p in 0..<n {
                let heard = Array(out[(p * samples)..<((p + 1) * samples)])
                #expect(heard == (p == talker ? [Int16](repeating: 0, count: samples) : signal))
            }
        }
    }
}
