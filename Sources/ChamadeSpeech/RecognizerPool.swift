import CChamadeShims
import ChamadeEngine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The recognizers of the process and the worker threads that run them (SPEC §7).
///
/// An utterance is decoded as it is spoken, so the line comes about 0.1 s after voice activity
/// ends; a decoder holds the utterance's state from its start to its end, so there is one decoder
/// per utterance in progress, however few threads. A decoder costs about 90 MB and 0.3 s to load,
/// and decodes at about 0.15× real time on one core: a few worker threads (one per core) each
/// serve several utterances, a 20 ms step of each in turn. Decoders are made when every existing
/// one is busy, up to `maxRecognizers`, kept in a free list (the most recent first) and freed,
/// with the heap trimmed, after `idleSeconds` unused, or at once when nothing is transcribed any
/// more. Utterances beyond the decoders wait in order; their audio is bounded (`Utterance`,
/// `trimBacklog`). Cost follows talkers: with no utterance, the workers sleep on a semaphore.
///
/// With `threads: 0` nothing runs on its own: `drain()` decodes everything waiting on the caller's
/// thread, for offline replay (deterministic).
final class RecognizerPool: Sendable {
    /// A decoder handed between threads: used by one at a time, under the pool's hand-over lock.
    final class Held: @unchecked Sendable {
        // SAFETY: owned by one worker while it decodes, otherwise in the free list (under the lock).
        let recognizer: Recognizer
        var lastUsed: Int64 = 0
        init(_ recognizer: Recognizer) { self.recognizer = recognizer }
    }

    struct Queue {
        /// Utterances waiting for a decoder, oldest first; those being decoded.
        var waiting: [Utterance] = []
        var active: [Utterance] = []
        var free: [Held] = []
        /// Decoders alive (free or busy) and being made.
        var alive = 0
        var running = true
        /// Free decoders go at once (nothing is transcribed any more).
        var releasing = false
    }
    private let queue = Locked(Queue())
    private let wake = TickSignal()
    private let threads: Int
    private let maxRecognizers: Int
    private let idleSeconds: Int
    private let modelDirectory: String
    private let onResult: @Sendable (Utterance, String, UInt64) -> Void
    private let onError: @Sendable (Recognizer.Error) -> Void
    private let exited: [TickSignal]

    /// Recognizers alive; samples of audio fed; utterances finished.
    let recognizers = Atomic<Int>(0)
    let fedSamples = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
    /// Workers stalled on purpose (tests of the room's isolation from a stuck recognizer).
    let stalled = Atomic<Bool>(false)
    /// The offline mode's decoders: one per utterance in flight, and the free ones.
    private struct Inline {
        var busy: [(Utterance, Recognizer)] = []
        var free: [Recognizer] = []
    }
    private let inline = Locked(Inline())

    /// How much nicer than the clock the workers run: decoding is the heaviest work of the
    /// process (0.15 core per talker) and must yield to the tick, the legs and the sockets.
    static let workerNice: Int32 = 10

    init(
        threads: Int, maxRecognizers: Int, idleSeconds: Int, modelDirectory: String,
        onResult: @escaping @Sendable (Utterance, String, UInt64) -> Void,
        onError: @escaping @Sendable (Recognizer.Error) -> Void
    ) {
        self.threads = threads
        self.maxRecognizers = max(1, maxRecognizers)
        self.idleSeconds = idleSeconds
        self.modelDirectory = modelDirectory
        self.onResult = onResult
        self.onError = onError
        exited = (0..<threads).map { _ in TickSignal() }
        for index in 0..<threads {
            startDetachedThread { [self] in work(index) }
        }
    }

    /// Hands over a new utterance (its audio may still be coming).
    func submit(_ utterance: Utterance) {
        queue.withLock { q in
            q.waiting.append(utterance)
            q.releasing = false
        }
        wake.post()
    }

    /// Frees the free decoders now rather than after `idleSeconds` (nothing is transcribed any
    /// more: the process goes back to its idle footprint, SPEC §9); busy ones go when done.
    func releaseIdle() {
        let freed = queue.withLock { q -> [Held] in
            q.releasing = true
            defer { q.free = [] }
            q.alive -= q.free.count
            return q.free
        }
        free(freed)
    }

    /// Stops the workers once their step is done (or after 2 s each) and frees the decoders.
    func stop() {
        queue.withLock { $0.running = false }
        for e in exited {
            wake.post()
            _ = e.wait(milliseconds: 2000)
        }
        releaseIdle()
        inline.withLock { $0 = Inline() }
    }

    /// How far the most behind talker's recognition is: the most audio any one utterance has
    /// waiting, in samples.
    var largestLagSampleCount: Int {
        queue.withLock { q in (q.waiting + q.active).map(\.pendingSampleCount).max() ?? 0 }
    }

    /// Keeps the audio of utterances waiting for a decoder under `limit` samples by giving up the
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

    /// Lets decoders go (each trims the heap as it is freed, see `Recognizer.deinit`).
    private func free(_ decoders: consuming [Held]) {
        let count = decoders.count
        guard count > 0 else { return }
        recognizers.subtract(count, ordering: .relaxed)
        decoders = []
    }

    // MARK: - Workers

    /// One worker: takes waiting utterances while it has fewer than its share, and steps each of
    /// its utterances every 20 ms (feeding what came, finishing those that ended).
    private func work(_ index: Int) {
        cchamade_set_thread_name("chamade-stt\(index)")
        cchamade_lower_thread_priority(Self.workerNice)
        var jobs: [(Utterance, Held)] = []
        let share = (maxRecognizers + threads - 1) / threads
        while true {
            // New utterances, with a free decoder or a new one while under the maximum.
            let (running, taken, expired) = queue.withLock { q -> (Bool, [(Utterance, Held?)], [Held]) in
                guard q.running else { return (false, [], []) }
                var taken: [(Utterance, Held?)] = []
                while jobs.count + taken.count < share, !q.waiting.isEmpty {
                    if let held = q.free.popLast() {
                        taken.append((q.waiting.removeFirst(), held))
                    } else if q.alive < maxRecognizers {
                        q.alive += 1
                        taken.append((q.waiting.removeFirst(), nil))
                    } else {
                        break
                    }
                }
                q.active += taken.map(\.0)
                // Decoders unused for `idleSeconds` go (the oldest are at the front).
                let now = MonotonicClock.now()
                var expired: [Held] = []
                while let first = q.free.first, now - first.lastUsed > Int64(idleSeconds) * 1_000_000_000 {
                    expired.append(q.free.removeFirst())
                }
                q.alive -= expired.count
                return (true, taken, expired)
            }
            guard running else { break }
            free(expired)
            for (utterance, held) in taken {
                if let held {
                    jobs.append((utterance, held))
                    continue
                }
                do throws(Recognizer.Error) {
                    jobs.append((utterance, Held(try Recognizer(modelDirectory: modelDirectory))))
                    recognizers.add(1, ordering: .relaxed)
                } catch {
                    onError(error)
                    queue.withLock { q in
                        q.alive -= 1
                        q.active.removeAll { $0 === utterance }
                    }
                    _ = utterance.abandon()
                }
            }
            if jobs.isEmpty {
                _ = wake.wait(milliseconds: 1000)
                continue
            }
            // ORDERING: relaxed; a test's switch.
            while stalled.load(ordering: .relaxed) { usleep(10_000) }
            var still: [(Utterance, Held)] = []
            var done: [Held] = []
            for (utterance, held) in jobs {
                if step(utterance, held.recognizer) {
                    held.lastUsed = MonotonicClock.now()
                    done.append(held)
                } else {
                    still.append((utterance, held))
                }
            }
            let finishedUtterances = jobs.filter { job in !still.contains { $0.0 === job.0 } }.map(\.0)
            jobs = still
            still = []
            if !done.isEmpty || !finishedUtterances.isEmpty {
                let handed = done
                done = []
                let release = queue.withLock { q -> [Held] in
                    q.active.removeAll { u in finishedUtterances.contains { $0 === u } }
                    if q.releasing && q.waiting.isEmpty {
                        q.alive -= handed.count
                        return handed
                    }
                    q.free += handed
                    return []
                }
                free(release)
                // A decoder came free: a waiting utterance may take it now.
                wake.post()
            }
            // Talkers' audio comes every 20 ms.
            if !jobs.isEmpty { usleep(20_000) }
        }
        let leftover = jobs.map(\.1)
        jobs = []
        queue.withLock { $0.alive -= leftover.count }
        free(leftover)
        exited[index].post()
    }

    /// Feeds what the utterance has; finishes it when closed. Returns whether it is done.
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
