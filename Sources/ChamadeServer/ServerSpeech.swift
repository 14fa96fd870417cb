import ChamadeCore
import ChamadeEngine
import ChamadeSpeech
import Dispatch
import Foundation
import HTTPTypes
import Logging
import NIOConcurrencyHelpers
import Synchronization

/// The server's built-in speech (SPEC §7): `say` with espeak-ng, fed into the call's playout like
/// agent audio, and transcripts of rooms with PocketSphinx.
///
/// A say is synthesized in parts (sentences, at most `partCharacters` each) as the playout needs
/// them, keeping about `feedAheadSeconds` queued: a 10,000-character text (9 minutes) starts
/// playing within milliseconds and never overflows the 60 s queue. While a say is being fed, what
/// the agent sends after it (audio, marks, more says) waits behind it, so the order is the order
/// sent (`CallSpeech`). The words' positions give `spoken_text` on a clear, and the say writes its
/// own transcript line when it has played (only the heard part when cleared).
final class ServerSpeech: Sendable {
    let synthesizer: Synthesizer?
    let transcriber: Transcriber?
    /// Why there is no STT, when `--stt pocketsphinx` could not start.
    let sttProblem: String?
    /// Set once the store exists (the transcriber's events need it).
    private let store = NIOLockedValueBox<CallStore?>(nil)
    let logger: Logger

    /// Says started and the CPU time their synthesis took (ns), for `/metrics`.
    let says = Atomic<Int>(0)
    let synthesisNanoseconds = Atomic<Int>(0)
    /// Time from a say's request to its first audio queued, last value (ns; a say held behind
    /// another counts its wait).
    let firstAudioNanoseconds = Atomic<Int>(0)

    static let feedAheadSeconds = 20
    static let partCharacters = 400
    /// A part that fills the queue this far pauses at its next word; this far it stops.
    static let pauseAtSeconds = 50
    static let stopAtSeconds = 58
    /// What a say held behind another answers at once, per character (measured: about 54 ms).
    static let estimatedMillisecondsPerCharacter = 54

    init(configuration: ServerConfiguration, logger: Logger) {
        self.logger = logger
        var synthesizer: Synthesizer?
        if configuration.tts {
            do throws(Synthesizer.Error) { synthesizer = try Synthesizer() } catch {
                logger.error("TTS unavailable: \(error)")
            }
        }
        self.synthesizer = synthesizer
        var transcriber: Transcriber?
        var problem: String?
        if configuration.stt {
            var settings = Transcriber.Settings()
            settings.workers = configuration.sttWorkers
            settings.maxRecognizers = configuration.sttRecognizers
            let box = store
            do throws(Recognizer.Error) {
                transcriber = try Transcriber(settings: settings) { event in
                    box.withLockedValue { $0 }?.transcriberEvent(event)
                }
            } catch {
                problem = error.description
                logger.error("STT unavailable: \(error)")
            }
        }
        self.transcriber = transcriber
        self.sttProblem = problem
    }

    func bind(_ store: CallStore) { self.store.withLockedValue { $0 = store } }

    func stop() { transcriber?.stop() }

    // MARK: - say

    /// Speaks `text` into `call`'s playout after whatever the call sent before; returns the
    /// milliseconds queued (for a text longer than the feed-ahead, the part synthesized so far
    /// plus the rest estimated at the rate measured on that part).
    func say(_ text: String, on call: Call) async throws(APIError) -> Int {
        try checkSay(on: call)
        let result = await withCheckedContinuation { (c: CheckedContinuation<Result<Int, APIError>, Never>) in
            let once = Once(c)
            enqueueSay(text, on: call) { once.resume($0) }
        }
        return try result.get()
    }

    /// Whether `call` can say something now (a TTS, a call not ended).
    func checkSay(on call: Call) throws(APIError) {
        guard synthesizer != nil else {
            throw APIError.badRequest("tts_not_configured", "no TTS is configured on this server (--tts none): synthesize locally and send PCM")
        }
        guard call.participant != nil else { throw APIError.callEnded }
    }

    /// Queues a say in the call's order at once (a socket's later messages go after it); `answer`
    /// gets its `queued_ms` once it is queued, or an error.
    func enqueueSay(_ text: String, on call: Call, answer: @escaping @Sendable (Result<Int, APIError>) -> Void) {
        let request = PendingSay(text: text, requested: MonotonicClock.now(), answer: answer)
        // Behind a say still being fed (possibly minutes of it), the answer cannot wait for this
        // one's turn: it comes now, its length estimated from the text; errors go unreported then.
        let held = PendingSay(text: text, requested: request.requested, answer: { _ in })
        if call.holdOrStartSay(request, held: held) {
            answer(.success(text.unicodeScalars.count * Self.estimatedMillisecondsPerCharacter))
        } else {
            Task { await self.feed(request, on: call) }
        }
    }

    /// Feeds `first`, then what waited behind it, in order, until nothing is held.
    private func feed(_ first: PendingSay, on call: Call) async {
        var next: PendingSay? = first
        while let request = next {
            next = nil
            await feedOne(request, on: call)
            while next == nil {
                let (item, overflows) = call.releaseHeld()
                for (session, ms) in overflows {
                    session.error("playout_overflow", "the playout queue holds 60 s; \(ms) ms of audio beyond it were dropped")
                }
                guard let item else { break }
                switch item {
                case .mark(let session, let name): session.placeMark(name)
                case .say(let r): next = r
                case .audio: break
                }
            }
        }
    }

    private func feedOne(_ request: PendingSay, on call: Call) async {
        guard let synthesizer, let participant = call.participant else {
            request.answer(.failure(.callEnded))
            return
        }
        let requested = request.requested
        let rate = participant.sampleRate
        let generation = call.withLock { $0.speech.generation }
        let scalars = Array(request.text.unicodeScalars)
        let total = scalars.count
        let segmentID = call.withLock { m -> UInt64 in
            let id = m.speech.nextSegmentID
            m.speech.nextSegmentID += 1
            let start = participant.writtenSampleCount()
            m.speech.segments.append(SaySegment(id: id, hertz: rate.hertz, text: request.text, start: start, end: start))
            // Says whose line is written are kept a while for `spoken_text`; the others until then.
            while m.speech.segments.count > CallSpeech.keptSegments,
                let oldest = m.speech.segments.firstIndex(where: \.lined)
            {
                m.speech.segments.remove(at: oldest)
            }
            return id
        }
        says.add(1, ordering: .relaxed)
        var answered = false
        var fedSamples = 0
        var fedCharacters = 0
        func answer() {
            guard !answered else { return }
            answered = true
            // The rest at the pace of what was synthesized (espeak-ng: about 54 ms per character).
            let rest = fedCharacters > 0 ? (total - fedCharacters) * fedSamples / fedCharacters : 0
            request.answer(.success((fedSamples + rest) * 1000 / rate.hertz))
        }
        let softLimit = Self.pauseAtSeconds * rate.hertz
        let hardLimit = Self.stopAtSeconds * rate.hertz
        var cancelled = false
        var offset = 0
        while offset < total {
            while participant.queuedSampleCount() > Self.feedAheadSeconds * rate.hertz {
                answer()
                if call.withLock({ $0.speech.generation != generation || $0.state.isFinal }) { break }
                try? await Task.sleep(for: .milliseconds(200))
            }
            if call.withLock({ $0.speech.generation != generation || $0.state.isFinal }) {
                cancelled = true
                break
            }
            let part = Self.part(of: scalars, from: offset)
            let started = MonotonicClock.now()
            let isFirstPart = fedSamples == 0
            // (samples pushed, their words, where to go on from when the queue filled up mid-part)
            let synthesized: Result<(Int, [SaySegment.Word], Int?), Synthesizer.Error> = await withCheckedContinuation { c in
                DispatchQueue.global().async {
                    let base = participant.writtenSampleCount()
                    var words: [SaySegment.Word] = []
                    var pushedSamples = 0
                    var resume: Int?
                    let outcome = Result { () throws(Synthesizer.Error) -> (Int, [SaySegment.Word], Int?) in
                        try synthesizer.synthesize(part.text, rate: rate) { block, starting in
                            // A part that says far more than its length suggests (digits: "zero
                            // zero …") must not overflow the queue: it pauses at a word once the
                            // queue is nearly full and goes on from that word later.
                            let queued = participant.queuedSampleCount()
                            if queued > softLimit, let word = starting.first {
                                resume = part.offset + word.characterOffset
                                return false
                            }
                            if queued > hardLimit {
                                return false
                            }
                            // Under the call's lock: a clear stops the say at this block, not at
                            // the end of the part.
                            let pushed = call.withLock { m -> Bool in
                                guard m.speech.generation == generation, !m.state.isFinal else { return false }
                                participant.push(UnsafeRawBufferPointer(block))
                                return true
                            }
                            guard pushed else { return false }
                            for w in starting {
                                words.append(.init(characterOffset: part.offset + w.characterOffset, position: base + w.sampleOffset))
                            }
                            pushedSamples += block.count
                            if isFirstPart && pushedSamples == block.count {
                                self.firstAudioNanoseconds.store(Int(MonotonicClock.now() - requested), ordering: .relaxed)
                            }
                            return true
                        }
                        return (pushedSamples, words, resume)
                    }
                    c.resume(returning: outcome)
                }
            }
            synthesisNanoseconds.add(Int(MonotonicClock.now() - started), ordering: .relaxed)
            guard case .success(let (samples, words, resume)) = synthesized else {
                if case .failure(let error) = synthesized, !answered {
                    answered = true
                    request.answer(.failure(APIError(.serviceUnavailable, "tts_failed", error.description)))
                }
                cancelled = true
                break
            }
            let next = resume.map { max($0, offset) } ?? (part.offset + part.text.unicodeScalars.count)
            fedSamples += samples
            fedCharacters = next
            let fed = next
            call.withLock { m in
                guard let i = m.speech.segments.firstIndex(where: { $0.id == segmentID }) else { return }
                m.speech.segments[i].end += samples
                m.speech.segments[i].words += words
                m.speech.segments[i].fedCharacters = fed
            }
            offset = next
        }
        call.withLock { m in
            if let i = m.speech.segments.firstIndex(where: { $0.id == segmentID }) { m.speech.segments[i].open = false }
        }
        if !cancelled {
            fedCharacters = total
            // Its end, like a mark: the say's line is written when it has played. Placed and
            // recorded under the call's lock, so its answer always finds it.
            let reached = call.withLock { m -> Bool in
                let mark = participant.mark()
                if let i = m.speech.segments.firstIndex(where: { $0.id == segmentID }) {
                    m.speech.segments[i].markID = mark.id
                    m.speech.segments[i].fedCharacters = total
                }
                return mark.isReached
            }
            if reached { sayPlayed(call, segmentID: segmentID) }
        }
        answer()
    }

    /// The part of the text from scalar `start`: up to `partCharacters`, ending at a sentence end
    /// (or, for a sentence too long, a space) when there is one.
    static func part(of scalars: [Unicode.Scalar], from start: Int) -> (offset: Int, text: String) {
        var end = min(scalars.count, start + partCharacters)
        if end < scalars.count {
            let window = start..<end
            if let stop = window.reversed().first(where: { i in ".!?\n".unicodeScalars.contains(scalars[i]) && i > start }) {
                end = stop + 1
            } else if let space = window.reversed().first(where: { scalars[$0] == " " && $0 > start }) {
                end = space + 1
            }
        }
        return (start, String(String.UnicodeScalarView(scalars[start..<end])))
    }

    // MARK: - the say's own transcript line

    /// A mark reached in `call`'s playout: if it ends a say, the say's line (unless a clear is
    /// pending, which then decides what was heard). Returns whether the mark was a say's.
    func markPlayed(_ call: Call, mark: UInt64) -> Bool {
        let (isSay, segmentID) = call.withLock { m -> (Bool, UInt64?) in
            guard let i = m.speech.segments.firstIndex(where: { $0.markID == mark }) else { return (false, nil) }
            // A clear pending past the say's start may have reported this mark: its answer settles
            // the say (whole or cut).
            if m.clearPositions.values.contains(where: { $0 > m.speech.segments[i].start }) { return (true, nil) }
            return (true, m.speech.segments[i].id)
        }
        if let segmentID { sayPlayed(call, segmentID: segmentID) }
        return isSay
    }

    private func sayPlayed(_ call: Call, segmentID: UInt64) {
        let line = call.withLock { m -> (String, Int)? in
            guard let i = m.speech.segments.firstIndex(where: { $0.id == segmentID }), !m.speech.segments[i].lined else { return nil }
            m.speech.segments[i].lined = true
            let s = m.speech.segments[i]
            return (s.text, (s.end - s.start) * 1000 / s.hertz)
        }
        guard let (text, ms) = line, let store = store.withLockedValue({ $0 }) else { return }
        store.addSayLine(call, text: text, playedMilliseconds: ms)
    }

    /// A clear's answer came: lines for the says it cut (their heard part) and for those whose
    /// end it reported.
    func cleared(_ call: Call, cuts: [(text: String, playedMilliseconds: Int)]) {
        guard let store = store.withLockedValue({ $0 }) else { return }
        for cut in cuts where !cut.text.isEmpty { store.addSayLine(call, text: cut.text, playedMilliseconds: cut.playedMilliseconds) }
    }
}

extension Call {
    /// Whether inbound stream position `position` holds audio a `say` queued.
    func isSynthesized(at position: Int) -> Bool {
        withLock { m in m.speech.segments.contains { $0.start <= position && (position < $0.end || $0.open) } }
    }
}
