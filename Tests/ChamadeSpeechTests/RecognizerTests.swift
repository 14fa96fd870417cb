import ChamadeAudioFile
import ChamadeTesting
import Foundation
import Testing

@testable import ChamadeSpeech

@Suite struct RecognizerTests {
    @Test func decodesAWholeFixture() throws {
        let rec = try Recognizer()
        for i in 1...12 {
            let file = try AudioFile.read(Fixtures.path(String(format: "speech/clean16k_%02d.wav", i)))
            file.samples.withUnsafeBufferPointer { b in
                var k = 0
                while k < b.count {
                    rec.feed(UnsafeBufferPointer(rebasing: b[k..<min(b.count, k + 320)]))
                    k += 320
                }
            }
            print("HYP", i, rec.finish())
        }
    }
}
