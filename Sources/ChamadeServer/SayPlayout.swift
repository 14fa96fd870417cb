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
    var words: [Word] = []
    /// The engine's mark after its last sample, once all of it is queued.
    var markID: UInt64?
    /// The end mark fired while a clear was pending: the clear's answer decides what was heard.
    var endReached = false
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
    case audio([UInt8])
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
    func holdAudio(_ bytes: UnsafeRawBufferPointer, limit: Int) -> (held: Bool, overflow: Bool) {
        withLock { m in
            guard m.speech.feeding else { return (false, false) }
            guard m.speech.heldBytes + bytes.count <= limit else { return (true, true) }
            m.speech.held.append(.audio(Array(bytes)))
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

    /// A say: held behind the one being fed (true), or the caller feeds it now (false; the call is
    /// then marked as feeding).
    func holdOrStartSay(_ request: PendingSay) -> Bool {
        withLock { m in
            if m.speech.feeding {
                m.speech.held.append(.say(request))
                return true
            }
            m.speech.feeding = true
            return false
        }
    }

    /// After a say is fed: the items held behind it, up to and including the next say (which the
    /// caller then feeds; `feeding` stays set), or every item and `feeding` cleared.
    func takeHeld() -> [HeldItem] {
        withLock { m in
            var out: [HeldItem] = []
            while !m.speech.held.isEmpty {
                let item = m.speech.held.removeFirst()
                if case .audio(let bytes) = item { m.speech.heldBytes -= bytes.count }
                out.append(item)
                if case .say = item { return out }
            }
            m.speech.feeding = false
            return out
        }
    }

    /// A clear: drops everything held (it was sent before the clear) and stops the say being fed.
    /// Returns the held marks (answered at once, as marks pending at a clear are) and says
    /// (answered with nothing queued).
    func dropHeld() -> (marks: [(Session, String)], says: [PendingSay]) {
        withLock { m in
            m.speech.generation += 1
            var marks: [(Session, String)] = []
            var says: [PendingSay] = []
            for item in m.speech.held {
                switch item {
                case .mark(let s, let name): marks.append((s, name))
                case .say(let r): says.append(r)
                case .audio: break
                }
            }
            m.speech.held = []
            m.speech.heldBytes = 0
            return (marks, says)
        }
    }
}
