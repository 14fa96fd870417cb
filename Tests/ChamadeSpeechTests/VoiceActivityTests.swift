import ChamadeCore
import ChamadeTesting
import Testing

@testable import ChamadeSpeech

/// The energy detector behind `call_speaking` and the end of utterances: onsets need two voiced
/// frames, speaking goes off after 300 ms of quiet and the utterance ends after 600 ms, a pause
/// shorter than that keeps the utterance, and steady noise stops counting as voice.
@Suite struct VoiceActivityTests {
    /// Runs `frames` 20 ms frames at 16 kHz through a detector; returns the changes by frame index.
    static func run(_ vad: inout VoiceActivity, _ frames: [[Int16]]) -> [(Int, VoiceActivity.Change)] {
        var out: [(Int, VoiceActivity.Change)] = []
        for (i, f) in frames.enumerated() {
            if let c = f.withUnsafeBufferPointer({ vad.take($0) }) { out.append((i, c)) }
        }
        return out
    }

    static func tone(_ frames: Int, dBFS: Double) -> [[Int16]] {
        let s = Signal.sine(frequency: 440, dBFS: dBFS, sampleRate: 16000, count: 320 * frames)
        return (0..<frames).map { Array(s[($0 * 320)..<(($0 + 1) * 320)]) }
    }

    static func quiet(_ frames: Int) -> [[Int16]] { Array(repeating: [Int16](repeating: 0, count: 320), count: frames) }

    @Test func anUtteranceStartsStopsSpeakingAndEnds() {
        var vad = VoiceActivity()
        let changes = Self.run(&vad, Self.quiet(10) + Self.tone(50, dBFS: -20) + Self.quiet(40))
        #expect(changes.map(\.1) == [.started, .stoppedSpeaking, .ended])
        // On the second voiced frame; 300 ms (15 frames) and 600 ms (30) after the last one.
        #expect(changes.map(\.0) == [11, 59 + 15, 59 + 30])
    }

    @Test func aClickIsNotSpeechAndQuietSpeechIsNot() {
        var vad = VoiceActivity()
        #expect(Self.run(&vad, Self.quiet(5) + Self.tone(1, dBFS: -10) + Self.quiet(40)).isEmpty)
        // Below −45 dBFS: not voice, however steady.
        #expect(Self.run(&vad, Self.tone(100, dBFS: -50)).isEmpty)
    }

    @Test func aShortPauseKeepsTheUtterance() {
        var vad = VoiceActivity()
        // 400 ms of quiet: speaking stops (hang-over 300 ms) and resumes; the utterance goes on.
        let frames = Self.tone(30, dBFS: -20) + Self.quiet(20) + Self.tone(30, dBFS: -20) + Self.quiet(31)
        #expect(Self.run(&vad, frames).map(\.1) == [.started, .stoppedSpeaking, .resumedSpeaking, .stoppedSpeaking, .ended])
    }

    @Test func steadyNoiseStopsCountingAndSpeechOverItStillDoes() {
        var vad = VoiceActivity()
        var rng = SeededRandom(seed: 5)
        func noise(_ frames: Int) -> [[Int16]] {
            (0..<frames).map { _ in (0..<320).map { _ in Int16.random(in: -600...600, using: &rng) } }  // about −40 dBFS
        }
        // At most one false start while the floor learns the noise (2 s), then nothing for 6 s.
        let learning = Self.run(&vad, noise(150))
        #expect(learning.filter { $0.1 == .started }.count <= 1)
        #expect(!vad.inUtterance)
        #expect(Self.run(&vad, noise(300)).isEmpty)
        // A talker 20 dB above the noise is heard.
        let speech = zip(Self.tone(40, dBFS: -20), noise(40)).map { t, n in zip(t, n).map { $0 &+ $1 } }
        #expect(Self.run(&vad, speech).map(\.1) == [.started])
    }
}
