import ChamadeCore
import ChamadeSpeech
import ChamadeTesting
import Dispatch
import Foundation
import Testing

/// espeak-ng behind its one owner: speech of the expected length and level at the asked rate, the
/// words' positions in text and audio, the first audio long before the whole text is synthesized,
/// stopping on request, and syntheses from several threads at once (serialized, no crash).
@Suite struct SynthesizerTests {
    static let text = "Hello everyone, this is the bridge speaking. The meeting starts in five minutes."

    static func synthesize(_ synth: Synthesizer, _ text: String, rate: SampleRate) throws -> ([Int16], [Synthesizer.Word]) {
        var pcm: [Int16] = []
        var words: [Synthesizer.Word] = []
        let n = try synth.synthesize(text, rate: rate) { block, starting in
            pcm.append(contentsOf: block)
            words.append(contentsOf: starting)
            return true
        }
        #expect(n == pcm.count)
        return (pcm, words)
    }

    @Test(arguments: [8000, 16000, 48000])
    func speaksAtTheAskedRate(hertz: Int) throws {
        let synth = try Synthesizer()
        let rate = try SampleRate(hertz: hertz)
        let (pcm, words) = try Self.synthesize(synth, Self.text, rate: rate)
        // About 54 ms of speech per character (measured here), whole 20 ms blocks.
        let seconds = Double(pcm.count) / Double(hertz)
        let expected = 0.054 * Double(Self.text.unicodeScalars.count)
        #expect(seconds > 0.6 * expected && seconds < 1.6 * expected, "\(seconds) s for \(Self.text.count) characters")
        #expect(pcm.count % rate.blockSampleCount == 0)
        // Speech, -3 dB below espeak-ng's full-scale peaks: loud, never clipped.
        let peak = pcm.map { abs(Int($0)) }.max() ?? 0
        #expect(peak > 8000 && peak < 32000, "peak \(peak)")
        #expect(Analysis.rms(pcm) > 1000)
        // Words in order, each at a word's first character, inside the audio.
        let scalars = Array(Self.text.unicodeScalars)
        #expect(words.count >= 10, "\(words.count) word events")
        #expect(words.map(\.characterOffset) == words.map(\.characterOffset).sorted())
        #expect(words.map(\.sampleOffset) == words.map(\.sampleOffset).sorted())
        for w in words {
            #expect(w.sampleOffset >= 0 && w.sampleOffset < pcm.count)
            try #require(w.characterOffset >= 0 && w.characterOffset < scalars.count, "word at \(w.characterOffset) of \(scalars.count): \(words)")
            #expect(scalars[w.characterOffset].properties.isAlphabetic, "word at \(w.characterOffset)")
            #expect(w.characterOffset == 0 || !scalars[w.characterOffset - 1].properties.isAlphabetic)
        }
        // The last word ("minutes") starts in the last second of the audio.
        let last = try #require(words.last)
        #expect(String(String.UnicodeScalarView(scalars[last.characterOffset...])).hasPrefix("minutes"))
        #expect(Double(pcm.count - last.sampleOffset) / Double(hertz) < 1.0)
    }

    @Test func firstAudioComesFastAndStoppingStops() throws {
        let synth = try Synthesizer()
        let long = String(repeating: Self.text + " ", count: 40)  // about 3 minutes of speech
        let start = DispatchTime.now().uptimeNanoseconds
        var firstAt: UInt64?
        var blocks = 0
        let n = try synth.synthesize(long, rate: .hz16000) { _, _ in
            if firstAt == nil { firstAt = DispatchTime.now().uptimeNanoseconds }
            blocks += 1
            return blocks < 50  // one second, then stop
        }
        let first = Double(try #require(firstAt) - start) / 1e6
        #expect(first < 200, "first audio after \(first) ms")
        #expect(blocks == 50 && n == 50 * SampleRate.hz16000.blockSampleCount)
    }

    @Test func manyThreadsOneSynthesizer() async throws {
        let synth = try Synthesizer()
        let lengths = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<4 {
                group.addTask { try Self.synthesize(synth, Self.text, rate: .hz16000).0.count }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        // espeak-ng's output varies by a few hundred samples between runs (its state carries over).
        #expect(lengths.count == 4 && (lengths.max()! - lengths.min()!) < 16000 / 5, "\(lengths)")
    }
}
