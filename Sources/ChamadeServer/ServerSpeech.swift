import ChamadeCore
import ChamadeEngine
import ChamadeSpeech
import Dispatch
import HTTPTypes
import Logging

/// The built-in TTS of the server (SPEC §7): `say` synthesizes with espeak-ng (the process's one
/// synthesizer, off every event loop and the tick) and queues the speech into the call's playout
/// like agent audio, remembering where each word went so a clear can tell what was heard.
final class ServerSpeech: Sendable {
    let synthesizer: Synthesizer?

    init(enabled: Bool, logger: Logger) {
        guard enabled else {
            synthesizer = nil
            return
        }
        do throws(Synthesizer.Error) { synthesizer = try Synthesizer() } catch {
            logger.error("TTS unavailable: \(error)")
            synthesizer = nil
        }
    }

    /// Speaks `text` into `call`'s playout; returns the milliseconds queued.
    func say(_ text: String, on call: Call) async throws(APIError) -> Int {
        guard let synthesizer else {
            throw APIError.badRequest("tts_not_configured", "no TTS is configured on this server (--tts none): synthesize locally and send PCM")
        }
        guard let participant = call.participant else { throw APIError.callEnded }
        let rate = participant.sampleRate
        let result: Result<Int, Synthesizer.Error> = await withCheckedContinuation { c in
            DispatchQueue.global().async {
                let start = participant.writtenSampleCount()
                var words: [SaySegment.Word] = []
                let outcome = Result { () throws(Synthesizer.Error) -> Int in
                    try synthesizer.synthesize(text, rate: rate) { block, starting in
                        for w in starting { words.append(.init(characterOffset: w.characterOffset, position: start + w.sampleOffset)) }
                        participant.push(UnsafeRawBufferPointer(block))
                        return true
                    }
                }
                if case .success(let samples) = outcome {
                    call.withLock { m in
                        m.says.append(SaySegment(text: text, start: start, end: start + samples, words: words))
                        if m.says.count > 16 { m.says.removeFirst(m.says.count - 16) }
                    }
                }
                c.resume(returning: outcome)
            }
        }
        switch result {
        case .success(let samples): return samples * 1000 / rate.hertz
        case .failure(let error): throw APIError(.serviceUnavailable, "tts_failed", error.description)
        }
    }
}

/// One `say` in a call's playout: its text, the sample positions it occupies and where its words
/// start.
struct SaySegment: Sendable {
    struct Word: Sendable {
        var characterOffset: Int
        var position: Int
    }
    var text: String
    var start: Int
    var end: Int
    var words: [Word]

    /// The words heard when playout stopped at `played`: the text up to the first word not yet
    /// started ("" when none started).
    func spokenText(playedUpTo played: Int) -> String {
        guard let next = words.first(where: { $0.position >= played }) else { return text }
        let scalars = Array(text.unicodeScalars.prefix(next.characterOffset))
        var cut = String(String.UnicodeScalarView(scalars))
        while let last = cut.last, last == " " || last == "," || last == "\n" { cut.removeLast() }
        return cut
    }
}
