import CChamadeShims
import ChamadeEngine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The recognizers of the process and the worker threads that run them (SPEC §7).
///
/// A decoder costs about 90 MB and 0.3 s to load and decodes at about 0.2× real time per stream on
/// one core, so there is a fixed number of workers (about one per core), each owning at most one
/// recognizer, made when the first utterance reaches it and freed (with the heap trimmed) after
/// `idleSeconds` without work. An utterance is decoded as it is spoken, by one worker from start to
/// end (a decoder holds the utterance's state), so the line comes about 0.1–0.2 s after voice
/// activity ends. Utterances beyond the workers wait in order; their audio is bounded
/// (`Utterance`). Cost follows talkers: idle workers sleep on a semaphore.
///
/// With `threads: 0` nothing runs on its own: `drain()` decodes everything waiting on the caller's
/// thread, for offline replay (deterministic).
final class RecognizerPool: Sendable {
    struct Queue {
        /// Utterances no worker has taken yet, oldest first; and those being decoded.
        var waiting: [Utterance] = []
        var active: [Utterance] = []
        var running = true
        /// Idle workers that hold a recognizer (warm) and that do not (cold).
        var idleWarm = 0
        var idleCold = 0
    }
    private let queue = Mutex(Queue())
    /// Wakes an idle warm worker; an idle cold one. A new utterance goes to a warm worker when one
    /// is idle, so a decoder (90 MB) is made only when every existing one is busy: recognizers
    /// follow the number of talkers at once, not the number of workers.
    private let warm = TickSignal()
    private let cold = TickSignal()
    private let threads: Int
    private let idleSeconds: Int
    private let modelDirectory: String
    private let onResult: @Sendable (Utterance, String, UInt64) -> Void
    private let onError: @Sendable (Recognizer.Error) -> Void
    private let exited = TickSignal()

    /// Recognizers alive; seconds of audio fed; utterances finished.
    let recognizers = Atomic<Int>(0)
    let fedSamples = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
    /// Worker currently stalled on purpose (tests of the room's isolation from a stuck recognizer).
    let stalled = Atomic<Bool>(false)
    /// The offline mode's recognizers: one per utterance in flight, and the free ones.
    private struct Inline {
        var busy: [(Utterance, Recognizer)] = []
        var free: [Recognizer] = []
    }
    private let inline = Mutex(Inline())

    init(
        threads: Int, idleSeconds: Int, modelDirectory: String,
        onResult: @escaping @Sendable (Utterance, String, UInt64) -> Void,
        onError: @escaping @Sendable (Recognizer.Error) -> Void
    ) {
        self.threads = threads
        self.idleSeconds = idleSeconds
        self.modelDirectory = modelDirectory
        self.onResult = onResult
        self.onError = onError
        for index in 0..<threads {
            startDetachedThread { [self] in work(index) }
        }
    }

    /// Hands over a new utterance (its audio may still be coming).
    func submit(_ utterance: Utterance) {
        release.store(false, ordering: .relaxed)
        let warmIdle = queue.withLock { q in
            q.waiting.append(utterance)
            return q.idleWarm > 0
        }
        (warmIdle ? warm : cold).post()
    }

    /// Frees the recognizers of idle workers now rather than after `idleSeconds` (nothing is
    /// transcribed any more: the process goes back to its idle footprint, SPEC §9).
    func releaseIdle() {
        release.store(true, ordering: .relaxed)
        let idle = queue.withLock { $0.idleWarm }
        for _ in 0..<idle { warm.post() }
    }
    private let release = Atomic<Bool>(false)

    /// Stops the workers once their current utterance is done (or after 2 s) and frees their
    /// recognizers.
    func stop() {
        queue.withLock { $0.running = false }
        for _ in 0..<threads {
            warm.post()
            cold.post()
            _ = exited.wait(milliseconds: 2000)
        }
        inline.withLock { $0 = Inline() }
    }

    /// Audio waiting for recognizers, in samples, over every utterance.
    var waitingSampleCount: Int {
        queue.withLock { q in (q.waiting + q.active).reduce(0) { $0 + $1.pendingSampleCount } }
    }

    /// Keeps the audio of utterances no worker has taken under `limit` samples by giving up the
    /// oldest (talkers outpace the recognizers: without this the backlog would grow for as long
    /// as they do). Returns the samples dropped.
    func trimBacklog(limit: Int) -> Int {
        let abandoned = queue.withLock { q -> [Utterance] in
            var total = q.waiting.reduce(0) { $0 + $1.pendingSampleCount }
            var out: [Utterance] = []
            while total > limit, q.waiting.count > 1 {
                let oldest = q.waiting.removeFirst()
                total -= oldest.pendingSampleCount
                out.append(oldest)
            }
            return out
        }
        return abandoned.reduce(0) { $0 + $1.abandon() }
    }

    // MARK: - Workers

    /// How much nicer than the clock the workers run: decoding is the heaviest work of the
    /// process (0.2 core per talker) and must yield to the tick, the legs and the sockets.
    static let workerNice: Int32 = 10

    private func work(_ index: Int) {
        cchamade_set_thread_name("chamade-stt\(index)")
        cchamade_lower_thread_priority(Self.workerNice)
        var recognizer: Recognizer?
        var current: Utterance?
        var idleSince = MonotonicClock.now()
        while true {
            if current == nil {
                let isWarm = recognizer != nil
                let (next, running, more) = queue.withLock { q -> (Utterance?, Bool, Bool) in
                    guard q.running else { return (nil, false, false) }
                    // A cold worker leaves the utterance to an idle warm one (and wakes it).
                    guard !q.waiting.isEmpty, isWarm || q.idleWarm == 0 else {
                        let handOver = !q.waiting.isEmpty
                        if isWarm { q.idleWarm += 1 } else { q.idleCold += 1 }
                        if handOver { warm.post() }
                        return (nil, true, false)
                    }
                    let next = q.waiting.removeFirst()
                    q.active.append(next)
                    return (next, true, !q.waiting.isEmpty)
                }
                guard running else { break }
                // More waiting than this worker can take: wake another.
                if more { cold.post() }
                current = next
                if current == nil {
                    let expired = MonotonicClock.now() - idleSince > Int64(idleSeconds) * 1_000_000_000
                    if recognizer != nil, expired || release.load(ordering: .relaxed) {
                        recognizer = nil
                        recognizers.subtract(1, ordering: .relaxed)
                        Recognizer.returnFreedMemory()
                    }
                    _ = (isWarm ? warm : cold).wait(milliseconds: 1000)
                    queue.withLock { q in
                        if isWarm { q.idleWarm -= 1 } else { q.idleCold -= 1 }
                    }
                    continue
                }
                if recognizer == nil {
                    do throws(Recognizer.Error) {
                        recognizer = try Recognizer(modelDirectory: modelDirectory)
                        recognizers.add(1, ordering: .relaxed)
                    } catch {
                        onError(error)
                        let lost = current!
                        queue.withLock { q in q.active.removeAll { $0 === lost } }
                        current = nil
                        continue
                    }
                }
            }
            guard let utterance = current, let rec = recognizer else { continue }
            // ORDERING: relaxed; a test's switch.
            while stalled.load(ordering: .relaxed) { usleep(10_000) }
            if step(utterance, rec) {
                queue.withLock { q in q.active.removeAll { $0 === utterance } }
                current = nil
                idleSince = MonotonicClock.now()
            } else {
                // Waiting for the talker: new audio comes every 20 ms while it speaks.
                usleep(20_000)
            }
        }
        recognizer = nil
        if recognizers.load(ordering: .relaxed) > 0 { recognizers.subtract(1, ordering: .relaxed) }
        Recognizer.returnFreedMemory()
        exited.post()
    }

    /// Feeds what the utterance has; finishes it when closed. Returns whether it is done (or made
    /// no progress and is not done: false).
    private func step(_ utterance: Utterance, _ recognizer: Recognizer) -> Bool {
        let (chunks, closed, endTick) = utterance.take()
        if !recognizer.isInUtterance, !chunks.isEmpty {
            // The decoder's own running mean when it last heard this talker (it keeps more history
            // than the mean alone); else the talker's, or the band's prior.
            if recognizer.lastTalker != utterance.participant, let mean = utterance.initialMean { recognizer.cepstralMean = mean }
            recognizer.lastTalker = utterance.participant
        }
        for chunk in chunks {
            chunk.withUnsafeBufferPointer { recognizer.feed($0) }
            fedSamples.add(chunk.count, ordering: .relaxed)
        }
        guard closed else { return false }
        let text = recognizer.finish()
        let mean = recognizer.cepstralMean
        utterance.finalMean.withLock { $0 = mean }
        finished.add(1, ordering: .relaxed)
        onResult(utterance, text, endTick)
        return true
    }

    // MARK: - Offline

    /// Offline mode: feeds every waiting utterance on this thread and finishes those that ended,
    /// in the order they started (so every run gives the same results).
    func drain() {
        let waiting = queue.withLock { q -> [Utterance] in
            let w = q.waiting
            q.waiting.removeAll()
            return w
        }
        inline.withLock { pool in
            for u in waiting {
                if let rec = pool.free.popLast() {
                    pool.busy.append((u, rec))
                    continue
                }
                do throws(Recognizer.Error) {
                    pool.busy.append((u, try Recognizer(modelDirectory: modelDirectory)))
                    recognizers.add(1, ordering: .relaxed)
                } catch {
                    onError(error)
                }
            }
            var still: [(Utterance, Recognizer)] = []
            for (u, rec) in pool.busy {
                if step(u, rec) { pool.free.append(rec) } else { still.append((u, rec)) }
            }
            pool.busy = still
        }
    }
}
