import ChamadeAudioFile
import ChamadeTesting
import Foundation
import Testing

@testable import ChamadeSpeech

/// PocketSphinx behind its one owner: the fixtures' espeak-ng sentences are recognized (measured
/// word accuracy 0.51 on the clean set decoded in sequence by one decoder), digital silence gives
/// no words, and the cepstral mean a pooled decoder hands from talker to talker round-trips.
@Suite struct RecognizerTests {
    static func sentences() throws -> [String] {
        try String(contentsOfFile: Fixtures.path("speech/sentences.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    }

    static func decode(_ rec: Recognizer, _ samples: [Int16]) -> String {
        samples.withUnsafeBufferPointer { b in
            var k = 0
            while k < b.count {
                rec.feed(UnsafeBufferPointer(rebasing: b[k..<min(b.count, k + 320)]))
                k += 320
            }
        }
        return rec.finish()
    }

    @Test func recognizesTheCleanFixtures() throws {
        let rec = try Recognizer()
        let refs = try Self.sentences()
        var hyps: [String] = []
        for i in 1...refs.count {
            let file = try AudioFile.read(Fixtures.path(String(format: "speech/clean16k_%02d.wav", i)))
            #expect(file.sampleRate == Recognizer.hertz)
            hyps.append(Self.decode(rec, file.samples))
        }
        let accuracy = WordAccuracy.of(hyps.joined(separator: " "), against: refs.joined(separator: " "))
        print("recognizer: word accuracy \(accuracy) on the clean fixtures")
        #expect(accuracy >= 0.3, "\(hyps)")
    }

    @Test func silenceHasNoWordsAndTheMeanRoundTrips() throws {
        let rec = try Recognizer()
        #expect(Self.decode(rec, [Int16](repeating: 0, count: 16000)) == "")
        #expect(rec.finish() == "")
        let mean = rec.cepstralMean
        #expect(mean.count == 13)
        let moved = mean.enumerated().map { $0.element + Float($0.offset) * 0.5 }
        rec.cepstralMean = moved
        #expect(rec.cepstralMean == moved)
    }

    @Test func aMissingModelIsAClearError() {
        #expect(throws: Recognizer.Error.self) { try Recognizer(modelDirectory: "/nonexistent") }
    }
}
