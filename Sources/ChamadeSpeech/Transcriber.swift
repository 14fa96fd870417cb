import ChamadeCore
public import ChamadeEngine
import CChamadeShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Per-talker transcripts of rooms (SPEC §7): taps the rooms that want them, follows each talker's
/// voice activity (`call_speaking`), and hands each utterance to a pooled PocketSphinx recognizer
/// while it is spoken; the text comes back as an event with the utterance's place on the room's
/// clock.
///
/// Nothing here runs on the tick: the room copies talkers' blocks into its `RoomTap` (SPSC, never
/// waiting); one router thread reads every tap each 20 ms, brings blocks to 16 kHz, runs the voice
/// activity detectors and appends utterances' audio; the pool's workers decode. Work follows
/// talkers: a room's silent participants put nothing in its tap, a talker costs nothing between
/// utterances but its detector, and the router sleeps while no room is tapped.
///
/// Offline (`Settings.offline`), nothing runs on its own: the caller ticks the rooms, then calls
/// `pump()`, and `finish()` at the end; everything is decoded on the caller's thread, in order, so
/// the same input gives the same transcript.
public final class Transcriber: Sendable {
    public struct Settings: Sendable {
        /// Recognizer threads (about one per core), each serving several utterances.
        public var workers = 2
        /// Decoders at most (about 90 MB each, one per utterance in progress): the talkers that can
        /// be recognized at once; more wait.
        public var maxRecognizers = 8
        /// A worker frees its decoder after this long without an utterance.
        public var idleSeconds = 30
        /// Audio an utterance may have waiting for its recognizer before the oldest is dropped.
        public var maxLagSeconds = 10
        /// Audio all utterances not yet taken by a worker may hold before the oldest are given up.
        public var maxBacklogSeconds = 60
        public var modelDirectory = Recognizer.defaultModelDirectory
        public var offline = false

        public init() {}
    }

    public enum Event: Sendable, Equatable {
        /// Voice activity of a talker (with a 300 ms hang-over).
        case speaking(ParticipantID, Bool)
        /// A finished utterance, on the room's clock (ms since its first tick).
        case utterance(ParticipantID, text: String, startMilliseconds: Int, endMilliseconds: Int)
    }

    /// What `/metrics` shows.
    public struct Statistics: Sendable, Equatable {
        public var recognizers: Int
        public var utterances: Int
        public var transcribedTalkers: Int
        public var fedMilliseconds: Int
        public var droppedMilliseconds: Int
        /// How far behind the most behind talker's recognition is (its audio waiting).
        public var lagMilliseconds: Int
    }

    /// A tapped room, on the router's side.
    final class Tapped: @unchecked Sendable {
        // SAFETY: `talkers` is used only by the router thread (or the offline caller); `detached`
        // is atomic.
        let room: Room
        let tap: RoomTap
        let isSynthesized: @Sendable (ParticipantID, Int) -> Bool
        var talkers: [ParticipantID: Talker] = [:]
        let detached = Atomic<Bool>(false)

        init(room: Room, tap: RoomTap, isSynthesized: @escaping @Sendable (ParticipantID, Int) -> Bool) {
            self.room = room
            self.tap = tap
            self.isSynthesized = isSynthesized
        }
    }

    private let settings: Settings
    private let rooms = Locked<[RoomID: Tapped]>([:])
    /// Rooms detached and attached again before the router closed the old tap: the old one, still
    /// to be closed.
    private let closing = Locked<[Tapped]>([])
    private let pool: RecognizerPool
    private let onEvent: @Sendable (Event) -> Void
    private let wake = TickSignal()
    private let running = Atomic<Bool>(true)
    private let routerExited = TickSignal()
    private let droppedSamples = Atomic<Int>(0)
    private let activeTalkers = Atomic<Int>(0)
    /// Serialises `pump` (the router thread, or offline callers).
    private let pumping = Locked(())
    /// The cepstral mean a new talker's first utterance starts from, by band (narrowband: under
    /// 16 kHz): the last one any talker of that band ended with. PocketSphinx's live mean moves
    /// slowly (its prior weighs 500 frames), and the model's default is far from a real channel:
    /// measured here, a first utterance from the default got 0.0–0.3 word accuracy, from a prior
    /// of the same band 0.6–1.0. So only the first talker of each band in the process pays.
    private let priors = Locked<[Bool: [Float]]>([:])

    /// Checks the model is there (a decoder is made only when the first utterance needs it) and,
    /// unless offline, starts the router and the workers.
    public init(settings: Settings = Settings(), onEvent: @escaping @Sendable (Event) -> Void) throws(Recognizer.Error) {
        for f in ["en-us/mdef", "en-us.lm.bin", "cmudict-en-us.dict"] where access("\(settings.modelDirectory)/\(f)", R_OK) != 0 {
            throw .unavailable("model file \(settings.modelDirectory)/\(f) missing (Debian package pocketsphinx-en-us)")
        }
        self.settings = settings
        self.onEvent = onEvent
        pool = RecognizerPool(
            threads: settings.offline ? 0 : settings.workers, maxRecognizers: settings.maxRecognizers,
            idleSeconds: settings.idleSeconds,
            modelDirectory: settings.modelDirectory,
            onResult: { [priors] utterance, text, endTick in
                if let mean = utterance.finalMean.withLock({ $0 }) { priors.withLock { $0[utterance.narrowband] = mean } }
                guard !text.isEmpty else { return }
                // Tick k plays the block of [(k − 1)·20, k·20) ms of the room's clock.
                onEvent(.utterance(
                    utterance.participant, text: text,
                    startMilliseconds: Int(utterance.startTick &- 1) * 20, endMilliseconds: Int(endTick) * 20))
            },
            onError: { _ in })
        if !settings.offline {
            startDetachedThread { [self] in route() }
        }
    }

    /// Starts transcribing `room`'s talkers. `isSynthesized` tells audio the server queued itself
    /// (a `say`, transcribed from its text) by participant and inbound stream position.
    public func attach(_ room: Room, isSynthesized: @escaping @Sendable (ParticipantID, Int) -> Bool = { _, _ in false }) {
        let tap = RoomTap()
        let added = rooms.withLock { rooms -> Bool in
            if let old = rooms[room.id] {
                guard old.detached.load(ordering: .acquiring) else { return false }
                closing.withLock { $0.append(old) }
            }
            rooms[room.id] = Tapped(room: room, tap: tap, isSynthesized: isSynthesized)
            return true
        }
        guard added else { return }
        room.setTap(tap)
        wake.post()
    }

    /// Stops transcribing `room`: utterances in progress end where they are.
    public func detach(_ room: Room) {
        let tapped = rooms.withLock { $0[room.id] }
        guard let tapped, !tapped.detached.load(ordering: .acquiring) else { return }
        room.setTap(nil)
        tapped.detached.store(true, ordering: .releasing)
        wake.post()
    }

    /// Whether `room` is transcribed.
    public func isAttached(_ room: Room) -> Bool {
        rooms.withLock { $0[room.id].map { !$0.detached.load(ordering: .acquiring) } ?? false }
    }

    public var statistics: Statistics {
        let lost = rooms.withLock { $0.values.reduce(0) { $0 + ($1.detached.load(ordering: .relaxed) ? 0 : $1.tap.lostBlockCount) } }
        return Statistics(
            recognizers: pool.recognizers.load(ordering: .relaxed),
            utterances: pool.finished.load(ordering: .relaxed),
            transcribedTalkers: activeTalkers.load(ordering: .relaxed),
            fedMilliseconds: pool.fedSamples.load(ordering: .relaxed) / 16,
            droppedMilliseconds: droppedSamples.load(ordering: .relaxed) / 16 + lost * 20,
            lagMilliseconds: pool.largestLagSampleCount / 16)
    }

    /// Makes every recognizer worker stop taking audio (true) or carry on: for tests that prove a
    /// stuck recognizer never delays a room.
    public func stallRecognizers(_ on: Bool) {
        pool.stalled.store(on, ordering: .relaxed)
    }

    /// Stops the router and the workers.
    public func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        if !settings.offline {
            wake.post()
            _ = routerExited.wait(milliseconds: 2000)
        }
        pool.stop()
    }

    // MARK: - Router

    private func route() {
        cchamade_set_thread_name("chamade-stt-in")
        // Behind the clock, ahead of the recognizers: a late pass only delays events (the tap
        // holds 4 s).
        cchamade_lower_thread_priority(5)
        var deadline = MonotonicClock.now()
        while running.load(ordering: .relaxed) {
            let any = rooms.withLock { !$0.isEmpty } || closing.withLock { !$0.isEmpty }
            if !any {
                _ = wake.wait(milliseconds: 1000)
                deadline = MonotonicClock.now()
                continue
            }
            pump()
            deadline += 20_000_000
            let now = MonotonicClock.now()
            if deadline < now { deadline = now }
            MonotonicClock.sleep(until: deadline)
        }
        routerExited.post()
    }

    /// Reads every tap and advances every talker up to the rooms' clocks; offline, also decodes.
    public func pump() {
        pumping.withLock { _ in
            let old = closing.withLock { c in
                defer { c = [] }
                return c
            }
            for t in old { pump(t) }
            let tapped = rooms.withLock { Array($0.values) }
            for t in tapped { pump(t) }
            if settings.offline { pool.drain() }
        }
    }

    /// Offline: ends every utterance in progress and decodes everything.
    public func finish() {
        pumping.withLock { _ in
            let tapped = rooms.withLock { Array($0.values) }
            for t in tapped {
                pump(t)
                for talker in t.talkers.values { handle(talker.close(), talker: talker) }
            }
            pool.drain()
        }
    }

    private func pump(_ t: Tapped) {
        let maxPending = settings.maxLagSeconds * Recognizer.hertz
        var dropped = 0
        // Ticks whose blocks are all in the tap: every one before the tick running now (online);
        // offline, the caller runs ticks to completion before pumping.
        let now = t.room.tickCount
        let complete = settings.offline ? now : (now >= 2 ? now - 2 : 0)
        t.tap.read { header, samples in
            let talker = t.talkers[header.participant] ?? {
                let new = Talker(id: header.participant, firstTick: header.tick)
                t.talkers[header.participant] = new
                return new
            }()
            guard header.tick > talker.lastTick else { return }
            fillSilence(talker, upTo: header.tick &- 1, maxPending: maxPending, dropped: &dropped)
            let outcomes = t.isSynthesized(header.participant, header.streamPosition)
                ? talker.takeSilence(tick: header.tick, maxPendingSamples: maxPending, dropped: &dropped)
                : talker.take(
                    samples, rate: header.rate, tick: header.tick, maxPendingSamples: maxPending,
                    prior: { narrowband in self.priors.withLock { $0[narrowband] } }, dropped: &dropped)
            handle(outcomes, talker: talker)
        }
        for talker in t.talkers.values where complete > talker.lastTick {
            fillSilence(talker, upTo: complete, maxPending: maxPending, dropped: &dropped)
        }
        // Talkers silent for a minute are forgotten (their converter and detector freed).
        t.talkers = t.talkers.filter { $0.value.isActive || $0.value.lastHeardTick &+ 3000 > complete }
        if t.detached.load(ordering: .acquiring) {
            for talker in t.talkers.values { handle(talker.close(), talker: talker) }
            t.talkers.removeAll()
            // What the tap lost stays counted once the room is gone (320 samples a block at 16 kHz).
            dropped += t.tap.lostBlockCount * Recognizer.hertz / 50
            let none = rooms.withLock { rooms in
                if rooms[t.room.id] === t { rooms[t.room.id] = nil }
                return rooms.isEmpty
            }
            // Nothing transcribed any more: recognizers go at once, not after their idle time.
            if none { pool.releaseIdle() }
        }
        dropped += pool.trimBacklog(limit: settings.maxBacklogSeconds * Recognizer.hertz)
        if dropped > 0 { droppedSamples.add(dropped, ordering: .relaxed) }
    }

    /// Silence for the ticks a talker in an utterance did not talk, up to `tick`.
    private func fillSilence(_ talker: Talker, upTo tick: UInt64, maxPending: Int, dropped: inout Int) {
        guard talker.isActive else {
            if tick > talker.lastTick { talker.lastTick = tick }
            return
        }
        while talker.lastTick < tick, talker.isActive {
            handle(talker.takeSilence(tick: talker.lastTick &+ 1, maxPendingSamples: maxPending, dropped: &dropped), talker: talker)
        }
        if tick > talker.lastTick { talker.lastTick = tick }
    }

    private func handle(_ outcomes: [Talker.Outcome], talker: Talker) {
        for o in outcomes {
            switch o {
            case .speaking(let on):
                onEvent(.speaking(talker.id, on))
            case .submit(let u):
                activeTalkers.add(1, ordering: .relaxed)
                pool.submit(u)
            case .closed:
                activeTalkers.subtract(1, ordering: .relaxed)
            }
        }
    }
}
