import ChamadeCore
import ChamadeEngine
import Foundation

/// One `say` in a call's playout: its text, the sample positions it occupies (the end grows while
/// a long text is fed), where its words start, the mark at its end, and whether its transcript
/// line has been written.
struct SaySegment: Sendable {
    struct Word: Sendable {
        var characterOffset: Int
        var position: Int
    }
    let id: UInt64
    /// The rate of its positions (the call's rate when it was said).
    let hertz: Int
    var text: String
    var start: Int
    var end: Int
    /// Still being fed: everything pushed from `start` on is the say's (what the call sends after
    /// it is held meanwhile), even before `end` catches up with a part being synthesized.
    var open = true
    var words: [Word] = []
    /// The engine's mark after its last sample, once all of it is queued.
    var markID: UInt64?
    var lined = false

    /// Characters (Unicode scalars) of the text whose audio is queued: all of it once fed.
    var fedCharacters = 0

    /// The words heard when playout stopped at `played`: the text up to the first word not yet
    /// started ("" when none started; all that was fed when it played to its end).
    func spokenText(playedUpTo played: Int) -> String {
        guard played < end, let next = words.first(where: { $0.position >= played }) else { return prefix(fedCharacters) }
        return prefix(min(next.characterOffset, fedCharacters))
    }

    private func prefix(_ characters: Int) -> String {
        var cut = String(String.UnicodeScalarView(text.unicodeScalars.prefix(characters)))
        while let last = cut.unicodeScalars.last, CharacterSet.whitespacesAndNewlines.contains(last) || ",;:".unicodeScalars.contains(last) {
            cut.unicodeScalars.removeLast()
        }
        return cut
    }
}

/// What waits behind a `say` that is still being fed to the playout, in the order it came: the
/// agent's audio, its marks and later says go after the say, as if the say's audio had been sent
/// in one piece (SPEC §7).
enum HeldItem: Sendable {
    /// Audio and the socket that sent it (told of `playout_overflow`).
    case audio([UInt8], from: Session?)
    case mark(Session, name: String)
    case say(PendingSay)
}

/// A `say` waiting for its turn, and who waits for its answer (`queued_ms`, or an error).
struct PendingSay: Sendable {
    var text: String
    /// When it was asked for (monotonic ns), for the time to its first audio.
    var requested: Int64
    var answer: @Sendable (Result<Int, APIError>) -> Void
}

/// The call's side of built-in speech, under the call's lock.
struct CallSpeech: Sendable {
    /// A say is being fed: audio, marks and says go to `held` until it is done.
    var feeding = false
    var held: [HeldItem] = []
    /// Audio bytes in `held` (bounded like the playout queue).
    var heldBytes = 0
    /// The latest says (at most `keptSegments`).
    var segments: [SaySegment] = []
    var nextSegmentID: UInt64 = 1
    /// Bumped by every clear: a say being fed stops at its next part.
    var generation = 0
    static let keptSegments = 16
}

extension Call {
    /// Audio from the agent: held if a say is being fed (true), else to be pushed by the caller.
    /// Held audio beyond what the playout queue holds is refused (false with `overflow`).
    func holdAudio(_ bytes: UnsafeRawBufferPointer, from session: Session, limit: Int) -> (held: Bool, overflow: Bool) {
        withLock { m in
            guard m.speech.feeding else { return (false, false) }
            guard m.speech.heldBytes + bytes.count <= limit else { return (true, true) }
            m.speech.held.append(.audio(Array(bytes), from: session))
            m.speech.heldBytes += bytes.count
            return (true, false)
        }
    }

    /// A mark from a socket: held if a say is being fed.
    func holdMark(_ session: Session, name: String) -> Bool {
        withLock { m in
            guard m.speech.feeding else { return false }
            m.speech.held.append(.mark(session, name: name))
            return true
        }
    }

    /// A say: held behind the one being fed, as `held` (true), or the caller feeds it now (false;
    /// the call is then marked as feeding).
    func holdOrStartSay(_ request: PendingSay, held: PendingSay) -> Bool {
        withLock { m in
            if m.speech.feeding {
                m.speech.held.append(.say(held))
                return true
            }
            m.speech.feeding = true
            return false
        }
    }

    /// After a say is fed: pushes the audio held behind it, under the call's lock (so a clear
    /// cannot fall between taking it and pushing it), up to the next mark or say, which it returns
    /// for the caller (a say: the caller feeds it next, `feeding` stays set). With nothing held,
    /// `feeding` is cleared and nil returned. Also returns the sockets whose held audio overflowed
    /// the playout queue, with the milliseconds dropped.
    func releaseHeld() -> (next: HeldItem?, overflows: [(Session, Int)]) {
        withLock { m in
            var overflows: [(Session, Int)] = []
            while !m.speech.held.isEmpty {
                let item = m.speech.held.removeFirst()
                guard case .audio(let bytes, let session) = item else { return (item, overflows) }
                m.speech.heldBytes -= bytes.count
                guard let participant = m.participant else { continue }
                let result = participant.push(bytes)
                if result.droppedSampleCount > 0, let session {
                    overflows.append((session, participant.sampleRate.milliseconds(ofSampleCount: result.droppedSampleCount)))
                }
            }
            m.speech.feeding = false
            return (nil, overflows)
        }
    }

    /// Clears the call's queued audio (barge-in), all under the call's lock so that nothing of the
    /// say being fed or held behind it can slip in after the cut: the engine's clear request, where
    /// it cut (for `spoken_text`), `register` (the waiter of the answer, set before the answer can
    /// come), the say being fed stopped, what was held dropped. The held marks are answered at
    /// once (as marks pending at a clear are) and held says answer with nothing queued. Returns the
    /// request, nil once the call has ended.
    func requestClear(register: (inout Mutable, UInt64) -> Void = { _, _ in }) -> UInt64? {
        let cleared = withLock { m -> (UInt64, [HeldItem])? in
            guard let participant = m.participant else { return nil }
            let (request, position) = participant.requestClearAt()
            m.clearPositions[request] = position
            register(&m, request)
            m.speech.generation += 1
            let held = m.speech.held
            m.speech.held = []
            m.speech.heldBytes = 0
            return (request, held)
        }
        guard let (request, held) = cleared else { return nil }
        for item in held {
            switch item {
            case .mark(let session, let name): session.answerHeldMark(name)
            case .say(let say): say.answer(.success(0))
            case .audio: break
            }
        }
        return request
    }
}
