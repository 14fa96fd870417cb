public import ChamadeCore
import CEspeakNG
import ChamadeDSP
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Text to speech with espeak-ng (SPEC §7): one owner for the process.
///
/// espeak-ng is neither thread-safe nor re-entrant (two threads in `espeak_Synth` corrupt its heap)
/// and its voice and rate are process-global, so every synthesis runs on one serial queue, in
/// order. It synthesizes about 1000× faster than real time, so one is plenty: a 10,000-character
/// text (9 minutes of speech) takes about half a second.
///
/// The audio is delivered as it is made (the first part within milliseconds), resampled from
/// espeak-ng's 22,050 Hz to the caller's rate and lowered by 3 dB (espeak-ng peaks at full scale),
/// with the words' start positions: where in the text each word starts, and at which sample of
/// the delivered audio.
public final class Synthesizer: Sendable {
    /// A word of the text: its first character (an offset in Unicode scalars, 0-based) and the
    /// sample, at the synthesis's rate and counted from its first delivered sample, where it starts.
    public struct Word: Sendable, Equatable {
        public var characterOffset: Int
        public var sampleOffset: Int
    }

    public enum Error: Swift.Error, Sendable, Equatable, CustomStringConvertible {
        /// espeak-ng could not start (its data missing): `hosted_tts` unavailable.
        case unavailable(String)
        /// A synthesis failed with espeak-ng's status.
        case failed(Int32)

        public var description: String {
            switch self {
            case .unavailable(let why): "espeak-ng unavailable: \(why)"
            case .failed(let code): "espeak-ng synthesis failed (status \(code))"
            }
        }
    }

    /// espeak-ng's output rate.
    public static let nativeHertz = 22050
    /// The one queue of the process that touches espeak-ng, whatever the number of `Synthesizer`s.
    private static let queue = DispatchQueue(label: "chamade.espeak")
    private var queue: DispatchQueue { Self.queue }
    /// espeak-ng's start, once for the process, and the voice it got.
    nonisolated(unsafe) private static var started: Result<String, Error>?

    /// The process's synthesizer with `voice` (espeak-ng starts with the first; the voice is
    /// process-global, so a later one asking for another voice is refused).
    public init(voice: String = "en-us") throws(Error) {
        let result: Result<Void, Error> = Self.queue.sync {
            // SAFETY: `started` is read and written on the espeak queue only.
            if let started = Self.started {
                return started.flatMap { $0 == voice ? .success(()) : .failure(.unavailable("the voice is \($0) for the process")) }
            }
            let outcome = Self.start(voice: voice)
            Self.started = outcome.map { voice }
            return outcome
        }
        try result.get()
    }

    private static func start(voice: String) -> Result<Void, Error> {
        espeak_ng_InitializePath(nil)
        var context: espeak_ng_ERROR_CONTEXT?
        var status = espeak_ng_Initialize(&context)
        guard status == ENS_OK else { return .failure(.unavailable("initialize: status \(status.rawValue)")) }
        status = espeak_ng_InitializeOutput(ENOUTPUT_MODE_SYNCHRONOUS, 0, nil)
        guard status == ENS_OK else { return .failure(.unavailable("output: status \(status.rawValue)")) }
        guard espeak_ng_GetSampleRate() == Int32(Self.nativeHertz) else {
            return .failure(.unavailable("sample rate \(espeak_ng_GetSampleRate()), expected \(Self.nativeHertz)"))
        }
        status = espeak_ng_SetVoiceByName(voice)
        guard status == ENS_OK else { return .failure(.unavailable("voice \(voice): status \(status.rawValue)")) }
        espeak_SetSynthCallback { wav, count, events in
            guard let events, let user = events.pointee.user_data else { return 0 }
            let job = Unmanaged<Job>.fromOpaque(user).takeUnretainedValue()
            return job.take(wav: wav, count: Int(count), events: events) ? 0 : 1
        }
        return .success(())
    }

    /// Synthesizes `text` at `rate`, calling `deliver` (on the synthesis queue) with each part of the
    /// audio and the words that start in it, in order; `deliver` returns false to stop. Returns the
    /// samples delivered. Blocks until done: call it off any real-time or event-loop thread.
    @discardableResult
    public func synthesize(
        _ text: String, rate: SampleRate, deliver: (UnsafeBufferPointer<Int16>, [Word]) -> Bool
    ) throws(Error) -> Int {
        let result: Result<Int, Error> = withoutActuallyEscaping(deliver) { deliver in
            queue.sync {
                let job: Job
                do { job = try Job(rate: rate, deliver: deliver) } catch { return .failure(.failed(-1)) }
                let status = text.withCString { p in
                    espeak_Synth(
                        p, strlen(p) + 1, 0, POS_CHARACTER, 0, UInt32(espeakCHARS_UTF8), nil,
                        Unmanaged.passUnretained(job).toOpaque())
                }
                guard status == EE_OK || job.stopped else { return .failure(.failed(Int32(status.rawValue))) }
                if !job.stopped { job.flush() }
                return .success(job.delivered)
            }
        }
        return try result.get()
    }
}

/// One synthesis: espeak-ng's 22,050 Hz PCM gathered into 20 ms blocks, each resampled to the
/// caller's rate and delivered with the words that start in it. Lives on the synthesis queue.
private final class Job {
    let rate: SampleRate
    let deliver: (UnsafeBufferPointer<Int16>, [Synthesizer.Word]) -> Bool
    var converter: SampleRateConverter
    static let native = try! SampleRate(hertz: Synthesizer.nativeHertz)
    /// espeak-ng's samples not yet a whole block.
    var pending: [Int16] = []
    /// Native samples received so far, and output samples delivered.
    var received = 0
    var delivered = 0
    /// Words whose start (in native samples) is not delivered yet.
    var words: [(character: Int, nativeSample: Int)] = []
    var stopped = false
    let inScratch: UnsafeMutableBufferPointer<Float>
    let outScratch: UnsafeMutableBufferPointer<Float>
    var out: [Int16]
    /// -3 dB.
    static let gain: Float = 0.708

    init(rate: SampleRate, deliver: @escaping (UnsafeBufferPointer<Int16>, [Synthesizer.Word]) -> Bool) throws {
        self.rate = rate
        self.deliver = deliver
        converter = try SampleRateConverter(from: Self.native, to: rate)
        inScratch = .allocate(capacity: Self.native.blockSampleCount)
        outScratch = .allocate(capacity: rate.blockSampleCount)
        out = [Int16](repeating: 0, count: rate.blockSampleCount)
    }

    deinit {
        inScratch.deallocate()
        outScratch.deallocate()
    }

    /// espeak-ng's callback: PCM and events (words). False asks it to stop.
    func take(wav: UnsafeMutablePointer<Int16>?, count: Int, events: UnsafeMutablePointer<espeak_EVENT>) -> Bool {
        guard !stopped else { return false }
        var e = events
        while e.pointee.type != espeakEVENT_LIST_TERMINATED {
            // text_position is 1-based, in characters; `sample` is the exact native index. A clause
            // boundary gives a word event at position 0 with no length: not a word.
            if e.pointee.type == espeakEVENT_WORD, e.pointee.text_position >= 1, e.pointee.length > 0 {
                words.append((Int(e.pointee.text_position) - 1, Int(e.pointee.sample)))
            }
            e += 1
        }
        if let wav, count > 0 {
            pending.append(contentsOf: UnsafeBufferPointer(start: wav, count: count))
            received += count
        }
        let block = Self.native.blockSampleCount
        var used = 0
        while pending.count - used >= block {
            if !emit(pending[used..<(used + block)]) { return false }
            used += block
        }
        if used > 0 { pending.removeFirst(used) }
        return true
    }

    /// The last part, padded to a whole block.
    func flush() {
        guard !pending.isEmpty else { return }
        let block = Self.native.blockSampleCount
        let tail = pending + [Int16](repeating: 0, count: block - pending.count)
        pending = []
        _ = emit(tail[...])
    }

    /// Resamples one native block and delivers it with the words starting in it.
    private func emit(_ input: ArraySlice<Int16>) -> Bool {
        for (i, s) in input.enumerated() { inScratch[i] = Float(s) / 32768 * Self.gain }
        converter.process(UnsafeBufferPointer(inScratch), into: outScratch)
        out.withUnsafeMutableBufferPointer { SampleConversion.toInt16(UnsafeBufferPointer(outScratch), into: $0) }
        // Native sample n plays at output sample n·rate/22050 plus the converter's fixed delay.
        let end = delivered + out.count
        var starting: [Synthesizer.Word] = []
        while let w = words.first {
            let at = w.nativeSample * rate.hertz / Synthesizer.nativeHertz + converter.delaySampleCount
            guard at < end else { break }
            starting.append(Synthesizer.Word(characterOffset: w.character, sampleOffset: max(delivered, at)))
            words.removeFirst()
        }
        let keepGoing = out.withUnsafeBufferPointer { deliver($0, starting) }
        delivered = end
        if !keepGoing { stopped = true }
        return keepGoing
    }
}
