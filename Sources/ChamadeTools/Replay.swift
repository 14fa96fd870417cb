public import ChamadeCore
public import ChamadeDSP
public import ChamadeEngine
public import ChamadeAudioFile
public import ChamadeSpeech
import Foundation

/// `chamade replay`: runs a room offline, faster than real time, with each input file as one
/// participant, through the live engine's own tick, driven by its virtual clock.
///
/// Writes `<out>/<input-name>.mixminus.wav` (what that participant hears, at its own rate) and
/// `<out>/room.wav` (the full mix at the room's rate), all 16-bit mono. The room runs until the
/// longest input ends, plus `tailBlockCount` blocks so the converters' delay does not cut the end.
/// Deterministic: the same inputs give byte-identical outputs.
///
/// With `transcriptPath`, the room is also transcribed as `serve` transcribes it (SPEC §7: per
/// talker, voice activity, PocketSphinx), offline on this thread, and the lines are written there,
/// one per utterance in the order they started: `START END [speaker] text`, times in seconds from
/// the start of the inputs, the speaker being the input's name. Deterministic too.
public enum Replay {
    /// Blocks run after the longest input ends: two conversions of SINC_FASTEST delay about 2 ms,
    /// SINC_BEST about 20 ms, so two blocks cover every converter type.
    public static let tailBlockCount = 2

    public struct Options: Sendable {
        public var inputs: [String]
        public var outputDirectory: String
        public var nativeRate: SampleRate
        public var quality: ConverterQuality
        public var transcriptPath: String?

        public init(
            inputs: [String], outputDirectory: String, nativeRate: SampleRate = .hz48000,
            quality: ConverterQuality = .default, transcriptPath: String? = nil
        ) {
            self.transcriptPath = transcriptPath
            self.inputs = inputs
            self.outputDirectory = outputDirectory
            self.nativeRate = nativeRate
            self.quality = quality
        }
    }

    public enum Error: Swift.Error, CustomStringConvertible, Sendable {
        case noInputs
        case duplicateName(String)
        case unsupportedInputRate(path: String, hertz: Int)
        case audioFile(AudioFile.Error)
        case cannotCreateDirectory(path: String, reason: String)
        case engine(EngineError)
        case speech(Recognizer.Error)
        case cannotWrite(path: String, reason: String)

        public var description: String {
            switch self {
            case .noInputs: "no input files"
            case .duplicateName(let name):
                "two inputs are named \(name); their outputs would collide (rename one)"
            case .unsupportedInputRate(let path, let hertz):
                "\(path): unsupported sample rate \(hertz) Hz (use a multiple of 50 from 8000 to 48000)"
            case .audioFile(let e): e.description
            case .cannotCreateDirectory(let path, let reason): "cannot create output directory \(path): \(reason)"
            case .engine(let e): e.description
            case .speech(let e): e.description
            case .cannotWrite(let path, let reason): "cannot write \(path): \(reason)"
            }
        }
    }

    public struct Summary: Sendable {
        /// One path per input, in input order.
        public var mixMinusPaths: [String]
        public var roomPath: String
        public var tickCount: Int
        /// The transcript's lines, when asked for.
        public var transcript: [String]
        /// Seconds of audio produced (ticks × 20 ms).
        public var seconds: Double { Double(tickCount) / Double(SampleRate.blocksPerSecond) }
    }

    /// The output name for an input path: its file name without the extension.
    public static func participantName(_ path: String) -> String {
        URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
    }

    /// Runs the replay. `progress` receives a line now and then for inputs longer than 30 s.
    public static func run(_ options: Options, progress: ((String) -> Void)? = nil) throws(Error) -> Summary {
        guard !options.inputs.isEmpty else { throw .noInputs }
        var seen = Set<String>()
        for path in options.inputs {
            let name = participantName(path)
            guard seen.insert(name).inserted else { throw .duplicateName(name) }
        }
        var tracks: [AudioFile.Contents] = []
        var rates: [SampleRate] = []
        for path in options.inputs {
            let contents: AudioFile.Contents
            do { contents = try AudioFile.read(path) } catch { throw .audioFile(error) }
            guard let rate = try? SampleRate(hertz: contents.sampleRate) else {
                throw .unsupportedInputRate(path: path, hertz: contents.sampleRate)
            }
            tracks.append(contents)
            rates.append(rate)
        }
        do {
            try FileManager.default.createDirectory(
                atPath: options.outputDirectory, withIntermediateDirectories: true)
        } catch {
            throw .cannotCreateDirectory(path: options.outputDirectory, reason: error.localizedDescription)
        }

        let blocksPerTrack = zip(tracks, rates).map { track, rate in
            (track.samples.count + rate.blockSampleCount - 1) / rate.blockSampleCount
        }
        let tickCount = (blocksPerTrack.max() ?? 0) + tailBlockCount

        // The live engine, driven by its virtual clock: the same tick as `chamade serve`. The room
        // mix is what a silent listener at the native rate hears, so a hidden one records it.
        let engine = Engine(configuration: .init(clock: .virtual, shardCount: 1, quality: options.quality))
        defer { engine.shutdown() }
        let participants: [Participant]
        let recorder: Participant
        let room: Room
        do throws(EngineError) {
            room = try engine.createRoom(nativeRate: options.nativeRate, capacity: rates.count + 1)
            var joined: [Participant] = []
            for rate in rates { joined.append(try room.join(rate: rate)) }
            participants = joined
            recorder = try room.join(rate: options.nativeRate)
        } catch {
            throw .engine(error)
        }
        let lines = TranscriptLines()
        var transcriber: Transcriber?
        if options.transcriptPath != nil {
            var settings = Transcriber.Settings()
            settings.offline = true
            do throws(Recognizer.Error) {
                transcriber = try Transcriber(settings: settings) { event in lines.take(event) }
            } catch {
                throw .speech(error)
            }
            transcriber?.attach(room)
        }
        defer { transcriber?.stop() }
        // Installs everyone; the blocks of this tick precede any audio and are not written.
        engine.tick()
        for p in participants + [recorder] { p.discardReadyBlocks() }

        let outDir = URL(fileURLWithPath: options.outputDirectory)
        let mixMinusPaths = options.inputs.map {
            outDir.appendingPathComponent(participantName($0) + ".mixminus.wav").path
        }
        let roomPath = outDir.appendingPathComponent("room.wav").path
        // One writer per participant plus the room: ~Copyable writers live in a fixed buffer.
        let writers = UnsafeMutablePointer<AudioFile.WAVWriter>.allocate(capacity: rates.count + 1)
        var opened = 0
        defer {
            writers.deinitialize(count: opened)
            writers.deallocate()
        }
        var block = [Int16](repeating: 0, count: SampleRate.hz48000.blockSampleCount)
        do throws(AudioFile.Error) {
            for (i, path) in mixMinusPaths.enumerated() {
                (writers + i).initialize(to: try AudioFile.WAVWriter(path: path, sampleRate: rates[i].hertz))
                opened += 1
            }
            (writers + rates.count).initialize(to: try AudioFile.WAVWriter(path: roomPath, sampleRate: options.nativeRate.hertz))
            opened += 1

            let reportEvery = tickCount > 30 * SampleRate.blocksPerSecond ? max(1, tickCount / 10) : Int.max
            for tick in 0..<tickCount {
                for (p, participant) in participants.enumerated() {
                    let n = rates[p].blockSampleCount
                    let start = tick * n
                    if start < tracks[p].samples.count {
                        let end = min(tracks[p].samples.count, start + n)
                        tracks[p].samples[start..<end].withUnsafeBytes { _ = participant.push($0) }
                    }
                }
                engine.tick()
                transcriber?.pump()
                for (i, participant) in (participants + [recorder]).enumerated() {
                    let n = participant.sampleRate.blockSampleCount
                    let pulled = block.withUnsafeMutableBufferPointer {
                        participant.pullBlock(into: UnsafeMutableBufferPointer(rebasing: $0[0..<n]))
                    }
                    precondition(pulled, "the virtual clock delivers one block per tick")
                    try block.withUnsafeBufferPointer { (b) throws(AudioFile.Error) in
                        try writers[i].write(UnsafeBufferPointer(rebasing: b[0..<n]))
                    }
                }
                engine.drainEvents()
                if (tick + 1) % reportEvery == 0, let progress {
                    let done = Double(tick + 1) / Double(SampleRate.blocksPerSecond)
                    let all = Double(tickCount) / Double(SampleRate.blocksPerSecond)
                    progress("replay: \((tick + 1) * 100 / tickCount)% (\(String(format: "%.1f", done)) of \(String(format: "%.1f", all)) s)")
                }
            }
            for i in 0..<opened { try writers[i].close() }
        } catch {
            throw .audioFile(error)
        }
        var transcript: [String] = []
        if let transcriber, let path = options.transcriptPath {
            transcriber.finish()
            // Block k of the inputs played at tick k + 2 (the first tick installs the participants).
            let names = Dictionary(uniqueKeysWithValues: zip(participants.map(\.id), options.inputs.map(participantName)))
            transcript = lines.sorted().map { u in
                let start = Double(max(0, u.start - 40)) / 1000
                let end = Double(max(0, u.end - 40)) / 1000
                return String(format: "%.2f %.2f [%@] %@", start, end, names[u.participant] ?? "?", u.text)
            }
            do {
                try (transcript.map { $0 + "\n" }.joined()).write(toFile: path, atomically: true, encoding: .utf8)
            } catch {
                throw .cannotWrite(path: path, reason: error.localizedDescription)
            }
        }
        return Summary(mixMinusPaths: mixMinusPaths, roomPath: roomPath, tickCount: tickCount, transcript: transcript)
    }

    /// Copies block `block` of `samples` into `destination`, zero-padding past the end.
    private static func fill(_ destination: UnsafeMutableBufferPointer<Int16>, from samples: [Int16], block: Int) {
        let start = block * destination.count
        let available = max(0, min(destination.count, samples.count - start))
        samples.withUnsafeBufferPointer { source in
            if available > 0 { destination.baseAddress!.update(from: source.baseAddress! + start, count: available) }
        }
        if available < destination.count {
            (destination.baseAddress! + available).update(repeating: 0, count: destination.count - available)
        }
    }
}

/// The utterances a replay's transcriber reported (on the replay's own thread, offline).
final class TranscriptLines: @unchecked Sendable {
    // SAFETY: offline transcription reports on the thread that pumps it, the replay's.
    struct Line {
        var participant: ParticipantID
        var text: String
        var start: Int
        var end: Int
    }
    private var lines: [Line] = []

    func take(_ event: Transcriber.Event) {
        if case .utterance(let p, let text, let start, let end) = event {
            lines.append(Line(participant: p, text: text, start: start, end: end))
        }
    }

    /// In the order the utterances started (then by participant, for a tie).
    func sorted() -> [Line] {
        lines.sorted { ($0.start, $0.participant.rawValue) < ($1.start, $1.participant.rawValue) }
    }
}
