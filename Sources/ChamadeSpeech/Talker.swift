import ChamadeCore
import ChamadeDSP
import ChamadeEngine
import Synchronization

/// One talker of a transcribed room, on the transcriber's side: its blocks brought to 16 kHz, its
/// voice activity, the 300 ms before an onset (PocketSphinx loses words whose start is clipped:
/// measured 0.46 → 0.38 word accuracy without lead-in), and its utterance in progress.
///
/// Used only by the transcriber's one router thread (or the offline caller).
final class Talker {
    let id: ParticipantID
    private(set) var vad = VoiceActivity()
    /// The last tick accounted for (a block, or silence filled in for a tick it did not talk).
    var lastTick: UInt64
    /// The last tick it talked.
    private(set) var lastHeardTick: UInt64
    private(set) var utterance: Utterance?
    /// The last utterance sent to a recognizer: its final cepstral mean starts the next one.
    private var previous: Utterance?
    private var preRoll: [[Int16]] = []
    private var converter: SampleRateConverter?
    private var converterRate: SampleRate?
    private var floatIn: [Float] = []
    private var floatOut = [Float](repeating: 0, count: Recognizer.hertz / 50)
    private static let preRollFrames = 15
    private static let frameSamples = Recognizer.hertz / 50

    /// What the transcriber must do after a frame.
    enum Outcome {
        case speaking(Bool)
        case submit(Utterance)
        /// The utterance ended; the recognizer may finish it.
        case closed(Utterance)
    }

    init(id: ParticipantID, firstTick: UInt64) {
        self.id = id
        self.lastTick = firstTick &- 1
        self.lastHeardTick = firstTick &- 1
    }

    /// Whether the talker has anything in flight (silence must still be accounted for).
    var isActive: Bool { vad.inUtterance }

    /// One block the talker played at `tick`, at `rate`.
    /// `prior`: the cepstral mean to start from when the talker has none of its own yet, by band
    /// (see `Transcriber`).
    func take(
        _ block: UnsafeBufferPointer<Int16>, rate: SampleRate, tick: UInt64, maxPendingSamples: Int,
        prior: (_ narrowband: Bool) -> [Float]?, dropped: inout Int
    ) -> [Outcome] {
        let frame = to16k(block, rate: rate)
        // Between utterances silence is not fed to the detector: after a gap, blocks before it are
        // neither part of an onset nor pre-roll.
        if !vad.inUtterance, tick != lastHeardTick &+ 1 {
            vad.forgetRun()
            preRoll.removeAll()
        }
        lastTick = tick
        lastHeardTick = tick
        let change = frame.withUnsafeBufferPointer { vad.take($0) }
        let narrowband = rate.hertz < Recognizer.hertz
        let start = change == .started && previous == nil ? prior(narrowband) : nil
        return advance(
            frame: frame, change: change, tick: tick, maxPendingSamples: maxPendingSamples, narrowband: narrowband,
            prior: start, dropped: &dropped)
    }

    /// A tick the talker did not talk (or whose audio is not to be recognized).
    func takeSilence(tick: UInt64, maxPendingSamples: Int, dropped: inout Int) -> [Outcome] {
        lastTick = tick
        let change = vad.takeSilence()
        guard vad.inUtterance || change != nil else {
            if !preRoll.isEmpty { preRoll.removeAll() }
            return []
        }
        return advance(
            frame: [Int16](repeating: 0, count: Self.frameSamples), change: change, tick: tick,
            maxPendingSamples: maxPendingSamples, narrowband: false, prior: nil, dropped: &dropped)
    }

    private func advance(
        frame: [Int16], change: VoiceActivity.Change?, tick: UInt64, maxPendingSamples: Int, narrowband: Bool,
        prior: [Float]?, dropped: inout Int
    ) -> [Outcome] {
        switch change {
        case .started:
            // The onset was the frame before this one: the utterance starts with the pre-roll.
            let mean = previous?.finalMean.withLock { $0 } ?? previous?.initialMean ?? prior
            let u = Utterance(
                participant: id, startTick: tick &- 1, maxPendingSamples: maxPendingSamples, narrowband: narrowband,
                initialMean: mean)
            previous = u
            dropped += u.append(Array(preRoll.joined()) + frame)
            preRoll.removeAll()
            utterance = u
            return [.speaking(true), .submit(u)]
        case .ended:
            guard let u = utterance else { return [] }
            dropped += u.append(frame)
            // The last voiced frame was `endFrames` ticks ago.
            u.close(endTick: tick &- UInt64(VoiceActivity.endFrames))
            utterance = nil
            return [.closed(u)]
        case .stoppedSpeaking, .resumedSpeaking, nil:
            if let u = utterance {
                dropped += u.append(frame)
            } else {
                preRoll.append(frame)
                if preRoll.count > Self.preRollFrames { preRoll.removeFirst() }
            }
            if change == .stoppedSpeaking { return [.speaking(false)] }
            if change == .resumedSpeaking { return [.speaking(true)] }
            return []
        }
    }

    /// Ends what is in flight (the talker left or the room stopped being transcribed).
    func close() -> [Outcome] {
        var out: [Outcome] = []
        if vad.speaking { out.append(.speaking(false)) }
        if let u = utterance {
            u.close(endTick: lastTick)
            out.append(.closed(u))
            utterance = nil
        }
        vad = VoiceActivity()
        preRoll.removeAll()
        return out
    }

    /// The block at 16 kHz (through a streaming converter kept per talker while its rate stays).
    private func to16k(_ block: UnsafeBufferPointer<Int16>, rate: SampleRate) -> [Int16] {
        guard rate.hertz != Recognizer.hertz else { return Array(block) }
        if converterRate != rate {
            converter = try? SampleRateConverter(from: rate, to: .hz16000, quality: .default)
            converterRate = rate
            floatIn = [Float](repeating: 0, count: rate.blockSampleCount)
        }
        var out = [Int16](repeating: 0, count: Self.frameSamples)
        guard converter != nil, block.count == rate.blockSampleCount else { return out }
        floatIn.withUnsafeMutableBufferPointer { fin in
            floatOut.withUnsafeMutableBufferPointer { fout in
                out.withUnsafeMutableBufferPointer { o in
                    converter!.process(block, into: o, inputScratch: fin, outputScratch: fout)
                }
            }
        }
        return out
    }
}
