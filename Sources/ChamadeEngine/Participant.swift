public import ChamadeCore
import ChamadeDSP
import Synchronization

/// One participant of a room, as its I/O side sees it: push audio in, pull its mix-minus out,
/// place marks, ask for a clear (barge-in), change rate, leave.
///
/// Threading: every method may be called from any thread. The two directions have separate owners:
/// the inbound ends (decoder, playout and mark producers) sit behind one mutex, the outbound end
/// (mix-minus consumer) behind another, so a reader pulling blocks never waits for a writer pushing
/// chunks and vice versa. Neither mutex is ever taken by the clock. A rate change builds its new
/// state (rings, converters) before it takes either. Not real-time safe (a rate change allocates);
/// cheap enough per chunk.
public final class Participant: Sendable {
    public let id: ParticipantID
    public let room: Room

    /// The I/O ends of the inbound rings of the current tick-side state. A class so that leaving can
    /// drop it whole: the playout ring (60 s, 5.8 MB at 48 kHz) must not outlive the participant's
    /// time in the room, even if the handle is kept.
    final class InboundEnds {
        // Used only under the participant's inbound lock.
        let state: ParticipantState
        var decoder = PCMStreamDecoder()
        var inProducer: SPSCRing<Int16>.Producer
        var markProducer: SPSCRing<MarkRecord>.Producer

        init(_ state: ParticipantState) {
            self.state = state
            inProducer = state.inbound.takeProducer()
            markProducer = state.marks.takeProducer()
        }
    }

    /// The I/O end of the outbound ring of the current tick-side state.
    final class OutboundEnd {
        // Used only under the participant's outbound lock.
        let state: ParticipantState
        var outConsumer: BlockRing.Consumer

        init(_ state: ParticipantState) {
            self.state = state
            outConsumer = state.outbound.takeConsumer()
        }
    }

    struct InboundSide {
        /// nil once the participant has left.
        var ends: InboundEnds?
        var nextMarkID: UInt64 = 1
    }

    struct OutboundSide {
        /// nil once the participant has left.
        var end: OutboundEnd?
        var rate: SampleRate
        /// The tick-side counters of states already replaced or left.
        var finalRefused = 0
        var finalQueued = 0
    }

    let inbound: Locked<InboundSide>
    let outbound: Locked<OutboundSide>
    /// Serialises rate changes and leaving (I/O threads only).
    let lifecycle = Locked(())
    /// Samples refused because the playout queue was full (SPEC: `playout_overflow`).
    let overflowSamples = Atomic<Int>(0)
    /// Outbound blocks discarded by the reader because they were older than the limit (slow consumer).
    let staleBlocks = Atomic<Int>(0)
    let bytesIn = Atomic<Int>(0)
    let blocksOut = Atomic<Int>(0)

    /// Blocks kept for a reader that falls behind: about one second.
    public static let outboundLimitBlocks = 50

    init(id: ParticipantID, room: Room, state: ParticipantState) {
        self.id = id
        self.room = room
        self.inbound = Locked(InboundSide(ends: InboundEnds(state)))
        self.outbound = Locked(OutboundSide(end: OutboundEnd(state), rate: state.rate))
    }

    /// The participant's rate (both directions).
    public var sampleRate: SampleRate { outbound.withLock { $0.rate } }

    /// Whether it receives its mix-minus.
    public var isReceiving: Bool {
        // ORDERING: relaxed; a flag.
        outbound.withLock { $0.end?.state.receiving.load(ordering: .relaxed) ?? false }
    }

    /// The result of pushing a chunk.
    public struct PushResult: Sendable, Equatable {
        /// Whole samples queued for playout.
        public var acceptedSampleCount: Int
        /// Samples that did not fit in the playout queue (≥ 60 s already queued) and were dropped.
        public var droppedSampleCount: Int
    }

    /// Queues a chunk of PCM s16le at the participant's rate, of any size (an odd byte waits for
    /// the next chunk). What does not fit in the playout queue is dropped and reported.
    @discardableResult
    public func push(_ bytes: UnsafeRawBufferPointer) -> PushResult {
        // ORDERING: relaxed; statistics.
        bytesIn.wrappingAdd(bytes.count, ordering: .relaxed)
        let (written, dropped) = inbound.withLock { side in
            guard let e = side.ends else { return (0, 0) }
            return e.decoder.decode(bytes, into: &e.inProducer)
        }
        if dropped > 0 { overflowSamples.wrappingAdd(dropped, ordering: .relaxed) }
        if written > 0 { room.core.wake() }
        return PushResult(acceptedSampleCount: written, droppedSampleCount: dropped)
    }

    /// Convenience for byte arrays.
    @discardableResult
    public func push(_ bytes: [UInt8]) -> PushResult { bytes.withUnsafeBytes { push($0) } }

    /// Samples queued and not yet played.
    public func queuedSampleCount() -> Int {
        inbound.withLock { side in side.ends.map { $0.state.inbound.writtenCount() - $0.state.inbound.readCount() } ?? 0 }
    }

    /// A placed mark.
    public struct Mark: Sendable, Equatable {
        /// Its identity in `EngineEvent.markPlayed`.
        public var id: UInt64
        /// True when nothing was queued: the mark is reached already and no event will follow.
        public var isReached: Bool
    }

    /// Places a mark after everything pushed so far. It is reported (`EngineEvent.markPlayed`) when
    /// that audio has been played into the room, at once by `isReached` if nothing is queued.
    public func mark() -> Mark {
        inbound.withLock { side in
            let id = side.nextMarkID
            side.nextMarkID += 1
            guard let e = side.ends else { return Mark(id: id, isReached: true) }
            let position = e.state.inbound.writtenCount()
            if e.state.inbound.readCount() >= position { return Mark(id: id, isReached: true) }
            // A full mark queue (4096 pending) reports the mark as reached rather than lose it.
            let queued = e.markProducer.push(MarkRecord(position: position, id: id))
            if queued { room.core.wake() }
            return Mark(id: id, isReached: !queued)
        }
    }

    /// Asks the tick to drop everything queued so far (barge-in). Audio pushed after this call is
    /// kept. The tick answers with `EngineEvent.cleared` carrying the returned request number (or a
    /// later one, when requests coalesce) and the amount dropped; pending marks up to here are
    /// reported at once.
    @discardableResult
    public func requestClear() -> UInt64 { requestClearAt().request }

    /// `requestClear`, also giving the position cleared up to (in samples pushed since the start,
    /// as `writtenSampleCount`): what was played before the clear is that position less the
    /// samples the `cleared` event says were dropped.
    public func requestClearAt() -> (request: UInt64, position: Int) {
        inbound.withLock { side in
            guard let e = side.ends else { return (0, 0) }
            e.decoder.reset()
            let state = e.state
            let position = state.inbound.writtenCount()
            // ORDERING: the position is stored before the release increment that publishes it.
            state.clearBefore.max(position, ordering: .relaxed)
            defer { room.core.wake() }
            return (state.clearRequest.wrappingAdd(1, ordering: .releasing).newValue, position)
        }
    }

    /// Samples pushed since the participant joined (the position the next pushed sample gets).
    public func writtenSampleCount() -> Int {
        inbound.withLock { side in side.ends.map { $0.state.inbound.writtenCount() } ?? 0 }
    }

    /// Turns delivery of the mix-minus on or off.
    public func setReceiving(_ on: Bool) {
        // ORDERING: relaxed; the tick samples the flag once per block.
        outbound.withLock { $0.end?.state.receiving.store(on, ordering: .relaxed) }
        room.core.wake()
    }

    /// Takes the oldest queued block of its mix-minus (exactly `sampleRate.blockSampleCount`
    /// samples), skipping blocks more than about a second old (counted as dropped). False when no
    /// block is ready, or when `block` is not the size of a block at the current rate (the rate may
    /// change between reading `sampleRate` and this call: `pullReadyBlocks` hands each block with
    /// its rate).
    public func pullBlock(into block: UnsafeMutableBufferPointer<Int16>) -> Bool {
        pull(into: block) > 0
    }

    private func pull(into buffer: UnsafeMutableBufferPointer<Int16>) -> Int {
        let now = room.core.publishedTick.load(ordering: .relaxed)
        let minimum = now > UInt64(Self.outboundLimitBlocks) ? now - UInt64(Self.outboundLimitBlocks) : 0
        let (count, discarded) = outbound.withLock { side -> (Int, Int) in
            guard let e = side.end else { return (0, 0) }
            let n = e.state.rate.blockSampleCount
            guard buffer.count == n else { return (0, 0) }
            let (pulled, discarded) = e.outConsumer.pull(
                into: UnsafeMutableBufferPointer(rebasing: buffer[0..<n]), minimumStamp: minimum)
            return (pulled ? n : 0, discarded)
        }
        // ORDERING: relaxed; statistics.
        if discarded > 0 { staleBlocks.wrappingAdd(discarded, ordering: .relaxed) }
        if count > 0 { blocksOut.wrappingAdd(1, ordering: .relaxed) }
        return count
    }

    /// Drops every block of mix-minus ready now; returns how many.
    @discardableResult
    public func discardReadyBlocks() -> Int { outbound.withLock { $0.end?.outConsumer.discardAll() ?? 0 } }

    /// Blocks of mix-minus ready to pull.
    public func availableBlockCount() -> Int { outbound.withLock { $0.end?.outConsumer.availableBlockCount() ?? 0 } }

    /// Takes every block of mix-minus ready now, oldest first, skipping blocks more than about a
    /// second old (counted as dropped), and hands each to `body` with the rate it was made at.
    /// `body` runs under the outbound lock, so what it does with the blocks (queue them on a socket)
    /// is ordered with a rate change's `onSwitch`: no block of the old rate follows it. Returns the
    /// number of blocks handed over.
    @discardableResult
    public func pullReadyBlocks(
        into scratch: UnsafeMutableBufferPointer<Int16>, _ body: (UnsafeBufferPointer<Int16>, SampleRate) -> Void
    ) -> Int {
        let now = room.core.publishedTick.load(ordering: .relaxed)
        let minimum = now > UInt64(Self.outboundLimitBlocks) ? now - UInt64(Self.outboundLimitBlocks) : 0
        let (count, discarded) = outbound.withLock { side -> (Int, Int) in
            guard let e = side.end else { return (0, 0) }
            let n = e.state.rate.blockSampleCount
            guard scratch.count >= n else { return (0, 0) }
            let block = UnsafeMutableBufferPointer(rebasing: scratch[0..<n])
            var count = 0
            var discarded = 0
            while true {
                let (pulled, skipped) = e.outConsumer.pull(into: block, minimumStamp: minimum)
                discarded += skipped
                guard pulled else { break }
                count += 1
                body(UnsafeBufferPointer(block), side.rate)
            }
            return (count, discarded)
        }
        // ORDERING: relaxed; statistics.
        if discarded > 0 { staleBlocks.wrappingAdd(discarded, ordering: .relaxed) }
        if count > 0 { blocksOut.wrappingAdd(count, ordering: .relaxed) }
        return count
    }

    /// Changes the participant's rate (both directions). The same rate changes nothing and keeps
    /// the converters' state. A new rate takes effect at the next tick with new converters; audio
    /// still queued at the old rate is dropped and its pending marks are reported at once.
    ///
    /// The new state (rings, converters) is built before any lock a reader or writer uses is taken;
    /// each direction then switches under its own lock. `onSwitch` runs under the outbound lock at
    /// the moment the outbound side switches: blocks pulled before it are of the old rate, blocks
    /// pulled after it of the new one (a server queues its `audio_config` answer there).
    /// Returns whether anything changed. Allocates (not for the tick).
    @discardableResult
    public func setSampleRate(_ rate: SampleRate, onSwitch: () -> Void = {}) throws(EngineError) -> Bool {
        try lifecycle.withLock { _ throws(EngineError) -> Bool in
            guard let old = inbound.withLock({ $0.ends?.state }) else { throw .participantLeft }
            guard rate != old.rate else { return false }
            // ORDERING: relaxed; carried over to the new state.
            let state = try room.makeState(id: id, rate: rate, receiving: old.receiving.load(ordering: .relaxed))
            let inEnds = InboundEnds(state)
            let outEnd = OutboundEnd(state)
            try room.sendReplace(old: old, new: state)
            inbound.withLock { $0.ends = inEnds }
            outbound.withLock { side in
                side.finalRefused += old.outboundRefused.load(ordering: .relaxed)
                side.finalQueued += old.outboundQueued.load(ordering: .relaxed)
                side.end = outEnd
                side.rate = rate
                onSwitch()
            }
            return true
        }
    }

    /// Leaves the room. Pending marks are reported; later pushes are ignored.
    public func leave() {
        let state: ParticipantState? = lifecycle.withLock { _ in
            // Drops the I/O ends and with them this handle's hold on the rings; the room frees the
            // rest once its tick has retired the state.
            guard let state = inbound.withLock({ side in
                defer { side.ends = nil }
                return side.ends?.state
            }) else { return nil }
            outbound.withLock { side in
                // ORDERING: relaxed; statistics frozen at leaving.
                side.finalRefused += state.outboundRefused.load(ordering: .relaxed)
                side.finalQueued += state.outboundQueued.load(ordering: .relaxed)
                side.end = nil
            }
            return state
        }
        if let state { room.sendRemove(state) }
    }

    /// Counters for telemetry.
    public struct Statistics: Sendable, Equatable {
        public var overflowSampleCount: Int
        public var outboundRefusedBlockCount: Int
        public var outboundStaleBlockCount: Int
        public var outboundQueuedBlockCount: Int
        public var bytesIn: Int
        public var blocksOut: Int
        /// Blocks lost to a slow consumer: refused by a full queue plus skipped as stale.
        public var droppedBlockCount: Int { outboundRefusedBlockCount + outboundStaleBlockCount }
    }

    public func statistics() -> Statistics {
        // ORDERING: relaxed loads of statistics.
        let (refused, queued) = outbound.withLock { side in
            (side.finalRefused + (side.end?.state.outboundRefused.load(ordering: .relaxed) ?? 0),
             side.finalQueued + (side.end?.state.outboundQueued.load(ordering: .relaxed) ?? 0))
        }
        return Statistics(
            overflowSampleCount: overflowSamples.load(ordering: .relaxed),
            outboundRefusedBlockCount: refused,
            outboundStaleBlockCount: staleBlocks.load(ordering: .relaxed),
            outboundQueuedBlockCount: queued,
            bytesIn: bytesIn.load(ordering: .relaxed),
            blocksOut: blocksOut.load(ordering: .relaxed))
    }
}
