import ChamadeCore
import Testing

/// `count` samples of a sine at `frequency` Hz and 8 kHz.
private func tone(_ frequency: Double, amplitude: Double = 8000, count: Int) -> [Int16] {
    (0..<count).map { Int16((amplitude * sin(2 * Double.pi * frequency * Double($0) / 8000)).rounded()) }
}

/// Plays `signal` in blocks of `block` samples through a concealer, the blocks in `lost` lost.
private func conceal(_ signal: [Int16], block: Int = 160, lost: Set<Int>) -> [Int16] {
    var plc = G711Concealment()
    var out = [Int16](repeating: 0, count: signal.count)
    signal.withUnsafeBufferPointer { input in
        out.withUnsafeMutableBufferPointer { output in
            for b in 0..<(signal.count / block) {
                let range = (b * block)..<((b + 1) * block)
                let destination = UnsafeMutableBufferPointer(rebasing: output[range])
                if lost.contains(b) {
                    plc.lost(into: destination)
                } else {
                    plc.received(UnsafeBufferPointer(rebasing: input[range]), into: destination)
                }
            }
        }
    }
    return out
}

/// The largest |x[i] − x[i−1]| over `range`.
private func largestStep(_ x: [Int16], in range: Range<Int>) -> Int {
    range.dropFirst().map { abs(Int(x[$0]) - Int(x[$0 - 1])) }.max() ?? 0
}

/// Normalised cross-correlation of two equal-length slices.
private func correlation(_ a: ArraySlice<Int16>, _ b: ArraySlice<Int16>) -> Double {
    var ab = 0.0
    var aa = 0.0
    var bb = 0.0
    for (x, y) in zip(a, b) {
        ab += Double(x) * Double(y)
        aa += Double(x) * Double(x)
        bb += Double(y) * Double(y)
    }
    return aa > 0 && bb > 0 ? ab / (aa * bb).squareRoot() : 0
}

private func peak(_ x: ArraySlice<Int16>) -> Int { x.map { abs(Int($0)) }.max() ?? 0 }

/// libm's sin without Foundation.
@_silgen_name("sin") private func sin(_ x: Double) -> Double

@Suite("G.711 concealment")
struct G711ConcealmentTests {
    @Test("received blocks pass through bit for bit", arguments: [160, 80, 480])
    func passThrough(block: Int) {
        let signal = tone(440, count: 30 * 160)
        #expect(conceal(signal, block: block, lost: []) == signal)
    }

    @Test(
        "one lost block of a steady tone: correlates with the missing audio, no step in or out",
        arguments: [440.0, 200.0])
    func oneLostBlock(frequency: Double) {
        let signal = tone(frequency, count: 14 * 160)
        let out = conceal(signal, lost: [8])
        let lost = (8 * 160)..<(9 * 160)
        #expect(correlation(out[lost], signal[lost]) > 0.9)
        let bound = Int((Double(largestStep(signal, in: 0..<signal.count)) * 1.2).rounded(.up)) + 4
        // From the last good block before the loss through the first after it (the crossfade).
        #expect(largestStep(out, in: (7 * 160)..<(10 * 160)) <= bound)
        // Untouched before the loss, and after the 4 ms crossfade.
        #expect(out[..<lost.lowerBound] == signal[..<lost.lowerBound])
        let crossfadeEnd = lost.upperBound + G711Concealment.crossfadeLength
        #expect(out[crossfadeEnd...] == signal[crossfadeEnd...])
        // The fade: about 1 → 0.67 over the block.
        #expect(peak(out[lost.prefix(40)]) > 7000)
        let endPeak = peak(out[lost.suffix(20)])
        #expect(endPeak > 5200 && endPeak < 5700)
    }

    @Test("consecutive losses fade linearly and reach exact silence by 60 ms", arguments: [3, 4, 7])
    func fadeToSilence(lostCount: Int) {
        let signal = tone(200, count: (10 + lostCount + 4) * 160)
        let first = 10
        let out = conceal(signal, lost: Set(first..<(first + lostCount)))
        let start = first * 160
        // Concealment, not silence, at first; 1 → 0.67 → 0.33 → 0 at the ends of the three blocks.
        #expect(peak(out[start..<(start + 40)]) > 7000)
        let second = peak(out[(start + 160 - 20)..<(start + 160)])
        let third = peak(out[(start + 320 - 20)..<(start + 320)])
        #expect(second > 5200 && second < 5700)
        #expect(third > 2500 && third < 3050)
        // The 480th sample after the loss began is 0, and so is everything concealed after it.
        let silentFrom = start + G711Concealment.fadeLength - 1
        #expect(out[silentFrom..<((first + lostCount) * 160)].allSatisfy { $0 == 0 })
        // Recovery from silence: a 4 ms fade-in, no step larger than the tone's own.
        let bound = Int((Double(largestStep(signal, in: 0..<signal.count)) * 1.2).rounded(.up)) + 4
        #expect(largestStep(out, in: ((first - 1) * 160)..<out.count) <= bound)
    }

    @Test(
        "recovery after losses of 1 to 5 blocks has no step",
        arguments: [(440.0, 1), (440.0, 2), (200.0, 2), (440.0, 3), (200.0, 5)])
    func recovery(frequency: Double, lostCount: Int) {
        let signal = tone(frequency, count: (8 + lostCount + 3) * 160)
        let out = conceal(signal, lost: Set(8..<(8 + lostCount)))
        let bound = Int((Double(largestStep(signal, in: 0..<signal.count)) * 1.2).rounded(.up)) + 4
        #expect(largestStep(out, in: 0..<out.count) <= bound)
        // The first good block ends as the real audio.
        let recovered = (8 + lostCount) * 160 + G711Concealment.crossfadeLength
        #expect(out[recovered...] == signal[recovered...])
    }

    @Test("silence in, silence out; a loss before any audio is silence")
    func silence() {
        let zeros = [Int16](repeating: 0, count: 20 * 160)
        #expect(conceal(zeros, lost: [5, 6, 12]) == zeros)
        #expect(conceal(zeros, lost: [0, 1]) == zeros)
        let late = [Int16](repeating: 0, count: 4 * 160) + tone(440, count: 4 * 160)
        #expect(conceal(late, lost: [0, 1]) == late)
    }

    @Test("blocks of other lengths: 10 ms losses conceal and fade on the same 60 ms clock")
    func otherBlockLengths() {
        let signal = tone(200, count: 40 * 80)
        let out = conceal(signal, block: 80, lost: Set(20..<27))
        let start = 20 * 80
        #expect(correlation(out[start..<(start + 160)], signal[start..<(start + 160)]) > 0.9)
        #expect(out[(start + G711Concealment.fadeLength - 1)..<(27 * 80)].allSatisfy { $0 == 0 })
        let bound = Int((Double(largestStep(signal, in: 0..<signal.count)) * 1.2).rounded(.up)) + 4
        #expect(largestStep(out, in: 0..<out.count) <= bound)
    }

    @Test("a full-scale tone saturates nothing and keeps its shape")
    func fullScale() {
        let signal = tone(300, amplitude: 32767, count: 12 * 160)
        let out = conceal(signal, lost: [8])
        let lost = (8 * 160)..<(9 * 160)
        #expect(correlation(out[lost], signal[lost]) > 0.9)
        #expect(peak(out[lost]) <= 32767)
    }
}
