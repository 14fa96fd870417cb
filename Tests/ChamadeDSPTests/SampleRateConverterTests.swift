import ChamadeCore
import ChamadeDSP
import ChamadeTesting
import Testing

/// Runs `input` through a block converter, block by block; returns the output in Int16 or Float.
func convertBlocks(
    _ input: [Float], from a: SampleRate, to b: SampleRate, quality: ConverterQuality = .default
) throws -> (output: [Float], delay: Int, underruns: Int) {
    var converter = try SampleRateConverter(from: a, to: b, quality: quality)
    let blocks = input.count / a.blockSampleCount
    var out = [Float](repeating: 0, count: blocks * b.blockSampleCount)
    for k in 0..<blocks {
        input.withUnsafeBufferPointer { i in
            out.withUnsafeMutableBufferPointer { o in
                converter.process(
                    UnsafeBufferPointer(rebasing: i[(k * a.blockSampleCount)..<((k + 1) * a.blockSampleCount)]),
                    into: UnsafeMutableBufferPointer(rebasing: o[(k * b.blockSampleCount)..<((k + 1) * b.blockSampleCount)]))
            }
        }
    }
    return (out, converter.delaySampleCount, converter.underrunCount)
}

let mainRates: [SampleRate] = [.hz8000, .hz16000, .hz24000, .hz48000]
let ratePairs: [(SampleRate, SampleRate)] =
    mainRates.flatMap { a in mainRates.filter { $0 != a }.map { (a, $0) } } + [(try! SampleRate(hertz: 22050), .hz48000)]

@Suite("Sample-rate converter")
struct SampleRateConverterTests {
    /// A 1 kHz sine at −6 dBFS keeps an SNR of at least 80 dB through the default converter, for
    /// every pair of 8/16/24/48 kHz and 22.05 → 48 kHz; block output is exact and never underruns.
    @Test(arguments: ratePairs)
    func sineSNR(pair: (SampleRate, SampleRate)) throws {
        let (a, b) = pair
        let input = Signal.sineFloat(frequency: 1000, dBFS: -6, sampleRate: a.hertz, count: 50 * a.blockSampleCount)
        let (out, delay, underruns) = try convertBlocks(input, from: a, to: b)
        #expect(underruns == 0)
        #expect(out.count == 50 * b.blockSampleCount)
        // Skip the start (filter warm-up and the pre-fill) and the last block.
        let settled = Array(out[(b.blockSampleCount * 2 + delay)..<(out.count - b.blockSampleCount)])
        let fit = Analysis.fitSine(settled, frequency: 1000, sampleRate: b.hertz)
        #expect(fit.snrDB >= 80, "\(a) → \(b): SNR \(fit.snrDB) dB")
        #expect(abs(Analysis.dB(fit.amplitude, relativeTo: 0.5)) < 0.1, "level \(fit.amplitude)")
    }

    /// The same through 16-bit samples (what the engine does): 16-bit quantisation caps the SNR
    /// near 92 dB for a −6 dBFS tone; the converter must stay above 80 dB there too.
    @Test(arguments: ratePairs)
    func sineSNRThroughInt16(pair: (SampleRate, SampleRate)) throws {
        let (a, b) = pair
        var converter = try SampleRateConverter(from: a, to: b)
        let input = Signal.sine(frequency: 1000, dBFS: -6, sampleRate: a.hertz, count: 30 * a.blockSampleCount)
        var out = [Int16]()
        var fIn = [Float](repeating: 0, count: a.blockSampleCount)
        var fOut = [Float](repeating: 0, count: b.blockSampleCount)
        var block = [Int16](repeating: 0, count: b.blockSampleCount)
        for k in 0..<30 {
            input.withUnsafeBufferPointer { i in
                converter.process(
                    UnsafeBufferPointer(rebasing: i[(k * a.blockSampleCount)..<((k + 1) * a.blockSampleCount)]),
                    into: block.withUnsafeMutableBufferPointer { $0 },
                    inputScratch: fIn.withUnsafeMutableBufferPointer { $0 },
                    outputScratch: fOut.withUnsafeMutableBufferPointer { $0 })
            }
            out += block
        }
        let settled = Array(out[(2 * b.blockSampleCount)...])
        let fit = Analysis.fitSine(settled, frequency: 1000, sampleRate: b.hertz)
        #expect(fit.snrDB >= 80, "\(a) → \(b): SNR \(fit.snrDB) dB")
    }

    /// Block-by-block output equals one-shot output, shifted by the converter's fixed delay, within
    /// float rounding: state carries across blocks, so there is no click at any boundary.
    @Test(arguments: ratePairs)
    func blocksEqualOneShot(pair: (SampleRate, SampleRate)) throws {
        let (a, b) = pair
        var rng = SeededRandom(seed: 11)
        // Speech-like: a few tones plus noise, so every boundary sees a different waveform.
        let count = 40 * a.blockSampleCount
        let tone = Signal.sineFloat(frequency: 440, dBFS: -12, sampleRate: a.hertz, count: count)
        let tone2 = Signal.sineFloat(frequency: 1700, dBFS: -18, sampleRate: a.hertz, count: count)
        let input = (0..<count).map { tone[$0] + tone2[$0] + Float.random(in: -0.05...0.05, using: &rng) }
        let (blocks, delay, _) = try convertBlocks(input, from: a, to: b)
        let whole = try SampleRateConverter.convertWhole(input, from: a, to: b)
        var worst: Float = 0
        // Compare away from the flushed tail of the one-shot run.
        for t in 0..<(whole.count - 3 * b.blockSampleCount) {
            worst = max(worst, abs(blocks[t + delay] - whole[t]))
        }
        #expect(worst < 1e-5, "\(a) → \(b): worst difference \(worst)")
        // And the pre-fill is silence: nothing is heard before the converter's delay.
        #expect(blocks[0..<delay].allSatisfy { $0 == 0 })
    }

    /// Ten simulated minutes: every block is exact and the FIFO never runs dry (no drift).
    @Test(.timeLimit(.minutes(3)), arguments: [(SampleRate.hz16000, SampleRate.hz48000), (try! SampleRate(hertz: 22050), SampleRate.hz16000)])
    func exactCountsOverTenMinutes(pair: (SampleRate, SampleRate)) throws {
        let (a, b) = pair
        var converter = try SampleRateConverter(from: a, to: b)
        let input = Signal.sineFloat(frequency: 300, dBFS: -10, sampleRate: a.hertz, count: a.blockSampleCount)
        var out = [Float](repeating: 0, count: b.blockSampleCount)
        let blocks = 10 * 60 * 50
        for _ in 0..<blocks {
            input.withUnsafeBufferPointer { i in
                out.withUnsafeMutableBufferPointer { o in converter.process(i, into: o) }
            }
        }
        let underruns = converter.underrunCount
        #expect(underruns == 0)
    }

    @Test func equalRatesPassThroughBitForBit() throws {
        var converter = try SampleRateConverter(from: .hz16000, to: .hz16000)
        let passthrough = converter.isPassthrough
        let delay = converter.delaySampleCount
        #expect(passthrough)
        #expect(delay == 0)
        var rng = SeededRandom(seed: 5)
        let input = (0..<320).map { _ in Int16.random(in: .min ... .max, using: &rng) }
        var output = [Int16](repeating: 0, count: 320)
        var s1 = [Float](repeating: 0, count: 320)
        var s2 = [Float](repeating: 0, count: 320)
        input.withUnsafeBufferPointer { i in
            converter.process(
                i, into: output.withUnsafeMutableBufferPointer { $0 },
                inputScratch: s1.withUnsafeMutableBufferPointer { $0 }, outputScratch: s2.withUnsafeMutableBufferPointer { $0 })
        }
        #expect(output == input)
    }

    @Test(arguments: [0, 7999, 8025, 44101, 96000, -1])
    func badRatesAreTypedErrors(hertz: Int) {
        #expect(throws: SampleRateConverter.Error.unsupportedRate(hertz: hertz)) {
            _ = try SampleRateConverter(fromHertz: hertz, toHertz: 48000)
        }
        #expect(throws: SampleRateConverter.Error.unsupportedRate(hertz: hertz)) {
            _ = try SampleRateConverter(fromHertz: 16000, toHertz: hertz)
        }
    }

    /// SPEC §5: a 1 kHz sine at −6 dBFS through 24 → 48 → 16 kHz keeps an SNR of at least 70 dB.
    @Test func chain24to48to16() throws {
        let input = Signal.sineFloat(frequency: 1000, dBFS: -6, sampleRate: 24000, count: 40 * 480)
        let (mid, _, _) = try convertBlocks(input, from: .hz24000, to: .hz48000)
        let (out, _, _) = try convertBlocks(mid, from: .hz48000, to: .hz16000)
        let fit = Analysis.fitSine(Array(out[(3 * 320)...]), frequency: 1000, sampleRate: 16000)
        #expect(fit.snrDB >= 70, "SNR \(fit.snrDB)")
    }

    /// The measurement behind the default: every band-limited type on the 1 kHz tone, with its delay.
    /// FASTEST must already clear 80 dB; the better types are no worse.
    @Test(arguments: [ConverterQuality.best, .medium, .fastest])
    func qualityTable(quality: ConverterQuality) throws {
        let input = Signal.sineFloat(frequency: 1000, dBFS: -6, sampleRate: 16000, count: 30 * 320)
        let (out, delay, _) = try convertBlocks(input, from: .hz16000, to: .hz48000, quality: quality)
        let fit = Analysis.fitSine(Array(out[(3 * 960 + delay)...]), frequency: 1000, sampleRate: 48000)
        #expect(fit.snrDB >= 80, "\(quality): SNR \(fit.snrDB) dB, delay \(delay) samples")
    }

    /// `reset()` forgets history: the next output equals that of a new converter.
    @Test func resetForgetsHistory() throws {
        let a = SampleRate.hz24000
        let b = SampleRate.hz16000
        let noise = Signal.sineFloat(frequency: 3000, dBFS: -3, sampleRate: a.hertz, count: a.blockSampleCount)
        let tone = Signal.sineFloat(frequency: 500, dBFS: -6, sampleRate: a.hertz, count: a.blockSampleCount)
        var used = try SampleRateConverter(from: a, to: b)
        var fresh = try SampleRateConverter(from: a, to: b)
        var o1 = [Float](repeating: 0, count: b.blockSampleCount)
        var o2 = [Float](repeating: 0, count: b.blockSampleCount)
        for _ in 0..<3 {
            noise.withUnsafeBufferPointer { i in o1.withUnsafeMutableBufferPointer { used.process(i, into: $0) } }
        }
        used.reset()
        tone.withUnsafeBufferPointer { i in o1.withUnsafeMutableBufferPointer { used.process(i, into: $0) } }
        tone.withUnsafeBufferPointer { i in o2.withUnsafeMutableBufferPointer { fresh.process(i, into: $0) } }
        #expect(o1 == o2)
    }
}
