import ChamadeTesting
import ChamadeTools
import Foundation
import Testing

/// `chamade replay --transcript`: the room transcribed offline as `serve` transcribes it, each
/// input a talker named after its file, with times; the same inputs give the same transcript.
@Suite struct ReplayTranscriptTests {
    static func sentence(_ n: Int) throws -> String {
        try String(contentsOfFile: Fixtures.path("speech/sentences.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init)[n - 1]
    }

    /// Lines `START END [speaker] text`, parsed.
    static func parse(_ path: String) throws -> [(start: Double, end: Double, speaker: String, text: String)] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { line in
            let parts = line.split(separator: " ", maxSplits: 3).map(String.init)
            let speaker = String(parts[2].dropFirst().dropLast())
            return (Double(parts[0])!, Double(parts[1])!, speaker, parts.count > 3 ? parts[3] : "")
        }
    }

    @Test func twoTalkersAtOnceAreTranscribedApartAndTheSameEveryRun() throws {
        // Two talkers at once, at two rates (16 kHz clean, 8 kHz phone) in a 48 kHz room.
        let inputs = ["speech/clean16k_10.wav", "speech/phone8k_06.wav"].map(Fixtures.path)
        let (ref10, ref06) = (try Self.sentence(10), try Self.sentence(6))
        var transcripts: [String] = []
        for run in 0..<2 {
            let dir = Fixtures.temporaryDirectory()
            let path = dir + "/transcript-\(run).txt"
            let summary = try Replay.run(.init(inputs: inputs, outputDirectory: dir, transcriptPath: path))
            #expect(summary.transcript.count >= 2)
            transcripts.append(try String(contentsOfFile: path, encoding: .utf8))
            let lines = try Self.parse(path)
            let a = lines.filter { $0.speaker == "clean16k_10" }.map(\.text).joined(separator: " ")
            let b = lines.filter { $0.speaker == "phone8k_06" }.map(\.text).joined(separator: " ")
            #expect(Set(lines.map(\.speaker)) == ["clean16k_10", "phone8k_06"], "\(lines)")
            // Each talker's words are its own sentence's, not the other's.
            #expect(WordAccuracy.of(a, against: ref10) > WordAccuracy.of(a, against: ref06), "\(a)")
            #expect(WordAccuracy.of(b, against: ref06) > WordAccuracy.of(b, against: ref10), "\(b)")
            #expect(WordAccuracy.of(a, against: ref10) >= 0.3, "\(a)")
            // Both files start speaking 0.4 s in and last about 2 s more.
            for speaker in ["clean16k_10", "phone8k_06"] {
                let first = try #require(lines.first { $0.speaker == speaker })
                #expect(abs(first.start - 0.4) <= 0.1, "\(first)")
                #expect(first.end > first.start + 1 && first.end < first.start + 3.5, "\(first)")
            }
        }
        #expect(transcripts[0] == transcripts[1])
    }
}
