import ChamadeAudioFile
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

    /// A WAV of fixture sentences one after the other.
    static func talker(_ kind: String, _ sentences: [Int], in dir: String, name: String) throws -> String {
        var samples: [Int16] = []
        var rate = 0
        for n in sentences {
            let f = try AudioFile.read(Fixtures.path(String(format: "speech/\(kind)_%02d.wav", n)))
            samples += f.samples
            rate = f.sampleRate
        }
        let path = dir + "/\(name).wav"
        var w = try AudioFile.WAVWriter(path: path, sampleRate: rate)
        try samples.withUnsafeBufferPointer { try w.write($0) }
        try w.close()
        return path
    }

    @Test func twoTalkersAtOnceAreTranscribedApartAndTheSameEveryRun() throws {
        // Two talkers at once, at two rates (16 kHz clean, 8 kHz phone) in a 48 kHz room.
        let inputs = Fixtures.temporaryDirectory()
        let a = try Self.talker("clean16k", [5, 9, 10], in: inputs, name: "alice")
        let b = try Self.talker("phone8k", [6, 12, 8], in: inputs, name: "bob")
        let refA = try [5, 9, 10].map(Self.sentence).joined(separator: " ")
        let refB = try [6, 12, 8].map(Self.sentence).joined(separator: " ")
        var transcripts: [String] = []
        for run in 0..<2 {
            let dir = Fixtures.temporaryDirectory()
            let path = dir + "/transcript-\(run).txt"
            let summary = try Replay.run(.init(inputs: [a, b], outputDirectory: dir, transcriptPath: path))
            transcripts.append(try String(contentsOfFile: path, encoding: .utf8))
            let lines = try Self.parse(path)
            #expect(summary.transcript.count == lines.count)
            #expect(Set(lines.map(\.speaker)) == ["alice", "bob"], "\(lines)")
            let heardA = lines.filter { $0.speaker == "alice" }.map(\.text).joined(separator: " ")
            let heardB = lines.filter { $0.speaker == "bob" }.map(\.text).joined(separator: " ")
            print("replay transcript:\n" + transcripts[run])
            // Each talker's words are its own sentences', not the other's.
            #expect(WordAccuracy.of(heardA, against: refA) > WordAccuracy.of(heardA, against: refB), "\(heardA)")
            #expect(WordAccuracy.of(heardB, against: refB) > WordAccuracy.of(heardB, against: refA), "\(heardB)")
            #expect(WordAccuracy.of(heardA, against: refA) >= 0.3, "\(heardA)")
            // Both start speaking 0.4 s in; lines come in the order they started.
            for speaker in ["alice", "bob"] {
                let first = try #require(lines.first { $0.speaker == speaker })
                #expect(abs(first.start - 0.4) <= 0.1, "\(first)")
                #expect(first.end > first.start + 1 && first.end < first.start + 3.5, "\(first)")
            }
            #expect(lines.map(\.start) == lines.map(\.start).sorted())
        }
        #expect(transcripts[0] == transcripts[1])
    }
}
