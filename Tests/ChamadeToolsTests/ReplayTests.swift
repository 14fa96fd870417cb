import ChamadeAudioFile
import ChamadeCore
import ChamadeTesting
import ChamadeTools
import Foundation
import Testing

@Suite("Replay")
struct ReplayTests {
    static let meeting = ["speech_16k.wav", "speech_24k.wav", "speech_48k.wav", "tone_1k_24k.wav", "silence_8k.wav"]
    static let phone = ["speech_8k.wav", "tone_440_16k.wav", "chirp_48k.wav"]

    func replay(_ names: [String], rate: SampleRate) throws -> (String, Replay.Summary) {
        let dir = Fixtures.temporaryDirectory("replay")
        let summary = try Replay.run(.init(inputs: names.map(Fixtures.path), outputDirectory: dir, nativeRate: rate))
        return (dir, summary)
    }

    /// The golden outputs in fixtures/expected reproduce: same rate, same length, every sample
    /// within 1 LSB (float rounding may move a sample by one if the converters' sharing changes).
    @Test(arguments: [("meeting48k", meeting, SampleRate.hz48000), ("phone16k", phone, SampleRate.hz16000)])
    func goldenOutputsReproduce(scenario: (String, [String], SampleRate)) throws {
        let (name, inputs, rate) = scenario
        let (dir, summary) = try replay(inputs, rate: rate)
        let files = inputs.map { Replay.participantName($0) + ".mixminus.wav" } + ["room.wav"]
        #expect(summary.mixMinusPaths.count == inputs.count)
        for file in files {
            let got = try AudioFile.read(dir + "/" + file)
            let want = try AudioFile.read(Fixtures.path("expected/\(name)/\(file)"))
            #expect(got.sampleRate == want.sampleRate, "\(file)")
            #expect(got.samples.count == want.samples.count, "\(file)")
            let worst = zip(got.samples, want.samples).map { abs(Int($0) - Int($1)) }.max() ?? 0
            #expect(worst <= 1, "\(name)/\(file): worst difference \(worst) LSB")
        }
    }

    @Test func twoRunsAreByteIdentical() throws {
        let (a, _) = try replay(Self.meeting, rate: .hz48000)
        let (b, _) = try replay(Self.meeting, rate: .hz48000)
        for file in Self.meeting.map({ Replay.participantName($0) + ".mixminus.wav" }) + ["room.wav"] {
            let x = try Data(contentsOf: URL(fileURLWithPath: a + "/" + file))
            let y = try Data(contentsOf: URL(fileURLWithPath: b + "/" + file))
            #expect(x == y, "\(file) differs between runs")
        }
    }

    /// Each output is at its participant's rate, as long as the room ran.
    @Test func outputsAreAtEachParticipantsRate() throws {
        let (dir, summary) = try replay(Self.meeting, rate: .hz48000)
        for (input, path) in zip(Self.meeting, summary.mixMinusPaths) {
            let inFile = try AudioFile.read(Fixtures.path(input))
            let out = try AudioFile.read(path)
            #expect(out.sampleRate == inFile.sampleRate)
            #expect(out.samples.count == summary.tickCount * inFile.sampleRate / 50)
        }
        let room = try AudioFile.read(dir + "/room.wav")
        #expect(room.sampleRate == 48000)
    }

    /// A tone participant is absent (≥ 60 dB down) from its own mix-minus and present in the others'.
    @Test func participantNeverHearsItself() throws {
        let inputs = ["tone_1k_24k.wav", "tone_440_16k.wav", "silence_8k.wav"]
        let (dir, _) = try replay(inputs, rate: .hz48000)
        func level(_ name: String, _ f: Double) throws -> Double {
            let file = try AudioFile.read(dir + "/" + name + ".mixminus.wav")
            // Skip the first block (converter warm-up).
            let s = Array(file.samples[(file.sampleRate / 50)...])
            return Analysis.toneAmplitude(s, frequency: f, sampleRate: file.sampleRate)
        }
        let full = Signal.amplitude(dBFS: -6)
        // 1 kHz: absent for its owner, present for the others.
        let own1k = try level("tone_1k_24k", 1000)
        for other in ["tone_440_16k", "silence_8k"] {
            let heard = try level(other, 1000)
            #expect(abs(Analysis.dB(heard, relativeTo: full)) < 1, "\(other) hears 1 kHz at \(heard)")
            #expect(Analysis.dB(own1k, relativeTo: heard) <= -60, "owner hears itself at \(own1k)")
        }
        // 440 Hz likewise.
        let own440 = try level("tone_440_16k", 440)
        for other in ["tone_1k_24k", "silence_8k"] {
            let heard = try level(other, 440)
            #expect(abs(Analysis.dB(heard, relativeTo: full)) < 1)
            #expect(Analysis.dB(own440, relativeTo: heard) <= -60)
        }
    }

    @Test func errorsAreClear() throws {
        let dir = Fixtures.temporaryDirectory("replay-errors")
        #expect(throws: Replay.Error.self) { _ = try Replay.run(.init(inputs: [], outputDirectory: dir)) }
        #expect(throws: Replay.Error.self) {
            _ = try Replay.run(.init(inputs: ["/no/such/file.wav"], outputDirectory: dir))
        }
        // 11025 Hz is not a multiple of 50: refused with the path in the message.
        let odd = dir + "/odd.wav"
        try AudioFile.writeWAV(odd, samples: [Int16](repeating: 0, count: 1000), sampleRate: 11025)
        do {
            _ = try Replay.run(.init(inputs: [odd], outputDirectory: dir))
            Issue.record("11025 Hz accepted")
        } catch {
            #expect(error.description.contains("11025"))
            #expect(error.description.contains("odd.wav"))
        }
        #expect(throws: Replay.Error.self) {
            _ = try Replay.run(.init(inputs: [Fixtures.path("speech_8k.wav")], outputDirectory: "/proc/no-such-dir"))
        }
    }
}

/// The `chamade` binary itself: exit codes and one-line messages per SPEC §2.
@Suite("chamade replay command")
struct ReplayCommandTests {
    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("chamade").path
    }

    func run(_ arguments: [String]) throws -> (code: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    @Test func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "\(Self.binary)")
    }

    @Test func successWritesOutputsAndSaysWhere() throws {
        let dir = Fixtures.temporaryDirectory("cli")
        let r = try run(["replay", Fixtures.path("speech_8k.wav"), Fixtures.path("tone_1k_24k.wav"), "--out", dir])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.out.contains(dir + "/speech_8k.mixminus.wav"))
        #expect(r.out.contains(dir + "/room.wav"))
        #expect(FileManager.default.fileExists(atPath: dir + "/tone_1k_24k.mixminus.wav"))
    }

    @Test(arguments: [["replay", "--out", "/tmp/x"], ["replay", "a.wav"], ["replay", "a.wav", "--out", "/tmp", "--rate", "44101"], ["nonsense"]])
    func badUsageExitsTwo(arguments: [String]) throws {
        let r = try run(arguments)
        #expect(r.code == 2)
        #expect(r.err.split(separator: "\n").count == 1, "one line: \(r.err)")
    }

    @Test func missingFileExitsOne() throws {
        let r = try run(["replay", "/no/such.wav", "--out", Fixtures.temporaryDirectory("cli")])
        #expect(r.code == 1)
        #expect(r.err.contains("/no/such.wav"))
        #expect(r.err.split(separator: "\n").count == 1)
    }

    @Test func unwritableOutputExitsOne() throws {
        let r = try run(["replay", Fixtures.path("speech_8k.wav"), "--out", "/proc/chamade-cannot"])
        #expect(r.code == 1)
        #expect(r.err.split(separator: "\n").count == 1, "\(r.err)")
    }
}
