import ArgumentParser
import ChamadeCore
import ChamadeTools
import Foundation

/// A failure that is not the user's usage: exit code 1.
struct RunFailure: Error, CustomStringConvertible {
    var description: String
}

struct Chamade: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chamade",
        abstract: "Chamade: the real-time audio bridge engine of an AI-agent meeting gateway.",
        subcommands: [ReplayCommand.self]
    )
}

struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Run a room offline with each input file as a participant; write each one's mix-minus and the room mix."
    )

    @Argument(help: "Input audio files (any format libsndfile reads; several channels are down-mixed).")
    var inputs: [String] = []

    @Option(name: .long, help: "Output directory (created if missing).")
    var out: String

    @Option(name: .long, help: "The room's native rate in Hz (multiple of 50, 8000–48000).")
    var rate: Int = 48000

    func validate() throws {
        guard !inputs.isEmpty else { throw ValidationError("give at least one input file") }
        guard SampleRate.isSupported(rate) else {
            throw ValidationError("--rate \(rate): unsupported sample rate (use a multiple of 50 from 8000 to 48000)")
        }
    }

    func run() throws {
        let options = Replay.Options(inputs: inputs, outputDirectory: out, nativeRate: try SampleRate(hertz: rate))
        let started = ContinuousClock.now
        let summary: Replay.Summary
        do {
            summary = try Replay.run(options) { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        } catch {
            throw RunFailure(description: error.description)
        }
        let elapsed = ContinuousClock.now - started
        let speed = summary.seconds / max(1e-9, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        print("replayed \(String(format: "%.2f", summary.seconds)) s of a \(rate) Hz room with \(inputs.count) participants in \(elapsed.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow))) (\(String(format: "%.0f", speed))x real time)")
        for path in summary.mixMinusPaths { print("  \(path)") }
        print("  \(summary.roomPath)")
    }
}

@main
enum Entry {
    static func main() {
        do {
            var command = try Chamade.parseAsRoot()
            try command.run()
        } catch let failure as RunFailure {
            fail("chamade: \(failure.description)", code: 1)
        } catch {
            let code = Chamade.exitCode(for: error)
            if code == .success {
                print(Chamade.fullMessage(for: error))
                exit(0)
            }
            // Usage errors: ArgumentParser's own code is 64; the contract says 2, with one line.
            let message = Chamade.message(for: error).split(separator: "\n").first.map(String.init) ?? "bad usage"
            fail("chamade: \(message) (see chamade --help)", code: 2)
        }
    }

    static func fail(_ line: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data((line + "\n").utf8))
        exit(code)
    }
}
