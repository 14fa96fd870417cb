import ChamadeAudioFile
import ChamadeTesting
import Foundation
import Testing

@Suite("Audio files")
struct AudioFileTests {
    @Test func sixteenBitMonoRoundTripsBitForBit() throws {
        var rng = SeededRandom(seed: 9)
        let samples = (0..<12345).map { _ in Int16.random(in: .min ... .max, using: &rng) }
        let path = Fixtures.temporaryDirectory() + "/x.wav"
        try AudioFile.writeWAV(path, samples: samples, sampleRate: 22050)
        let back = try AudioFile.read(path)
        #expect(back.samples == samples)
        #expect(back.sampleRate == 22050)
        #expect(back.channelCount == 1)
    }

    @Test func fixtureReadsAtItsRate() throws {
        let speech = try AudioFile.read(Fixtures.path("speech_8k.wav"))
        #expect(speech.sampleRate == 8000)
        #expect(speech.samples.count > 8000)
        #expect(Analysis.rms(speech.samples) > 500)
    }

    /// A stereo file is down-mixed by averaging: 440 Hz on the left and 660 Hz on the right, each
    /// at −6 dBFS, become a mono mix holding each tone at half amplitude.
    @Test func stereoIsDownMixed() throws {
        let stereo = try AudioFile.read(Fixtures.path("stereo_440_660_44k1.wav"))
        #expect(stereo.channelCount == 2)
        #expect(stereo.sampleRate == 44100)
        let half = Signal.amplitude(dBFS: -6) / 2
        for f in [440.0, 660.0] {
            let a = Analysis.toneAmplitude(stereo.samples, frequency: f, sampleRate: 44100)
            #expect(abs(Analysis.dB(a, relativeTo: half)) < 0.5, "\(f) Hz at \(a), expected \(half)")
        }
    }

    @Test func missingFileIsAClearError() {
        #expect(throws: AudioFile.Error.self) { _ = try AudioFile.read("/nonexistent/nothing.wav") }
        do {
            _ = try AudioFile.read("/nonexistent/nothing.wav")
        } catch {
            #expect(error.description.contains("/nonexistent/nothing.wav"))
        }
    }

    @Test func unwritablePathIsAClearError() {
        #expect(throws: AudioFile.Error.self) {
            try AudioFile.writeWAV("/nonexistent-dir/out.wav", samples: [1, 2, 3], sampleRate: 8000)
        }
    }

    @Test func sameSamplesGiveSameBytes() throws {
        let dir = Fixtures.temporaryDirectory()
        let samples = Signal.sine(frequency: 300, sampleRate: 16000, count: 5000)
        try AudioFile.writeWAV(dir + "/a.wav", samples: samples, sampleRate: 16000)
        try AudioFile.writeWAV(dir + "/b.wav", samples: samples, sampleRate: 16000)
        let a = try Data(contentsOf: URL(fileURLWithPath: dir + "/a.wav"))
        let b = try Data(contentsOf: URL(fileURLWithPath: dir + "/b.wav"))
        #expect(a == b)
        #expect(a.count == 44 + 10000)
    }
}
