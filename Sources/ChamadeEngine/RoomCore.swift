import ChamadeCore
import ChamadeDSP
import Synchronization

/// Where a tick posts what it has to say: events into the shard's event ring, and the participants
/// that got a fresh block into its ready ring (so delivery visits only those). A full ring loses
/// the entry and counts it; a lost ready entry only delays that participant's blocks to its next one.
struct EventSink: ~Copyable {
    var producer: SPSCRing<EngineEvent>.Producer
    var readyProducer: SPSCRing<ParticipantID>.Producer
    let lost: Atomic<Int> = Atomic(0)
    let lostReady: Atomic<Int> = Atomic(0)

    mutating func post(_ event: EngineEvent) {
        if !producer.push(event) {
            // ORDERING: relaxed; a statistic.
            lost.wrappingAdd(1, ordering: .relaxed)
        }
    }

    mutating func ready(_ id: ParticipantID) {
        if !readyProducer.push(id) {
            // ORDERING: relaxed; a statistic.
            lostReady.wrappingAdd(1, ordering: .relaxed)
        }
    }
}

/// Changes to a room, sent by any thread and applied by the room's tick at its start.
enum RoomCommand: Sendable {
    case add(Unmanaged<ParticipantState>, lane: Unmanaged<RateLane>?)
    case remove(ParticipantID)
    /// A rate change: `new` takes `old`'s place (queued audio at the old rate is dropped).
    case replace(old: ParticipantID, new: Unmanaged<ParticipantState>, lane: Unmanaged<RateLane>?)
}

/// What a tick hands back to be freed off the tick.
enum Retired: Sendable {
    case participant(Unmanaged<ParticipantState>)
    case lane(Unmanaged<RateLane>)
}

/// A room on the tick side: its participants, its shared rate lanes, and the tick itself.
///
/// The tick (`tick(events:)`) runs on one clock thread. It allocates nothing, takes no lock and
/// retains nothing: participants are held as `Unmanaged` references owned by the room (+1 from the
/// `add` command until they are retired), and only borrowed in the loops. Changes come in through
/// `commands` (many producers serialised by a mutex the tick never takes) and leave through
/// `retired` (drained and freed by the engine's housekeeping).
final class RoomCore: @unchecked Sendable {
    // SAFETY: tick-side fields are used only by the owning clock thread; the command producer is
    // behind a lock; the retire consumer is used only under the engine's housekeeping lock.
    let id: RoomID
    let native: SampleRate
    let capacity: Int

    let commands: SPSCRing<RoomCommand>
    let commandProducer: Locked<SPSCRing<RoomCommand>.Producer>
    var commandConsumer: SPSCRing<RoomCommand>.Consumer
    let retired: SPSCRing<Retired>
    var retireProducer: SPSCRing<Retired>.Producer
    var retireConsumer: SPSCRing<Retired>.Consumer

    let slots: UnsafeMutablePointer<Unmanaged<ParticipantState>>
    var slotCount = 0
    let lanes: UnsafeMutablePointer<Unmanaged<RateLane>>
    var laneCount = 0
    let contributors: UnsafeMutablePointer<Unmanaged<ParticipantState>>

    let total: UnsafeMutableBufferPointer<Int32>
    let totalFloat: UnsafeMutableBufferPointer<Float>
    let sharedNative: UnsafeMutableBufferPointer<Int16>
    var sharedNativeTick: UInt64 = 0
    var totalFloatTick: UInt64 = 0
    /// Ticks since the last one with any contributor.
    var totalSilentBlocks = Int.max / 2

    /// Ticks run; stamps outbound blocks (read by I/O threads to skip stale blocks).
    var tickIndex: UInt64 = 0
    let publishedTick = Atomic<UInt64>(0)
    /// Converter calls made by ticks (for tests: cost follows talkers).
    let converterCalls = Atomic<Int>(0)
    /// Converter calls of the last tick.
    var converterCallsThisTick = 0

    init(id: RoomID, native: SampleRate, capacity: Int) {
        self.id = id
        self.native = native
        self.capacity = capacity
        // Commands: a join, leave or rate change per participant can be in flight at once, twice over.
        commands = SPSCRing(capacity: 2 * capacity + 16)
        commandProducer = Locked(commands.takeProducer())
        commandConsumer = commands.takeConsumer()
        retired = SPSCRing(capacity: 4 * capacity + 16, prefault: true)
        retireProducer = retired.takeProducer()
        retireConsumer = retired.takeConsumer()
        slots = .allocate(capacity: capacity)
        lanes = .allocate(capacity: capacity)
        contributors = .allocate(capacity: capacity)
        let n = native.blockSampleCount
        total = .allocate(capacity: n)
        total.initialize(repeating: 0)
        totalFloat = .allocate(capacity: n)
        totalFloat.initialize(repeating: 0)
        sharedNative = .allocate(capacity: n)
        sharedNative.initialize(repeating: 0)
    }

    deinit {
        for i in 0..<slotCount { slots[i].release() }
        for i in 0..<laneCount { lanes[i].release() }
        drainRetired()
        while let c = commandConsumer.pop() { Self.release(c) }
        slots.deallocate()
        lanes.deallocate()
        contributors.deallocate()
        total.deallocate()
        totalFloat.deallocate()
        sharedNative.deallocate()
    }

    private static func release(_ command: RoomCommand) {
        switch command {
        case .add(let p, let lane), .replace(_, let p, let lane):
            p.release()
            lane?.release()
        case .remove: break
        }
    }

    /// Sends a command to the tick. Any thread; never called by the tick. Returns false if the
    /// command ring is full (cannot happen within capacity: joins are admitted against it).
    func send(_ command: RoomCommand) -> Bool {
        commandProducer.withLock { $0.push(command) }
    }

    /// Releases everything the room holds once its shard has retired it (no tick will run it again):
    /// participants, lanes, pending commands. Housekeeping only. Without this, a participant that
    /// left after its room was removed would stay in the room's slots until the room object dies.
    func dispose() {
        for i in 0..<slotCount {
            slots[i]._withUnsafeGuaranteedRef { $0.lane = nil }
            slots[i].release()
        }
        slotCount = 0
        for i in 0..<laneCount { lanes[i].release() }
        laneCount = 0
        while let c = commandConsumer.pop() { Self.release(c) }
        drainRetired()
    }

    /// Frees what ticks retired. Housekeeping only (not real-time).
    func drainRetired() {
        while let r = retireConsumer.pop() {
            switch r {
            case .participant(let p): p.release()
            case .lane(let l): l.release()
            }
        }
    }

    private func retire(_ r: Retired) {
        // The retire ring holds four per slot, so it cannot fill while housekeeping runs; if it ever
        // did, leaking is safer than freeing on the tick.
        _ = retireProducer.push(r)
    }

    // MARK: - The tick

    /// Runs one tick. Real-time safe.
    func tick(events: inout EventSink) {
        applyCommands(events: &events)
        tickIndex &+= 1
        // ORDERING: relaxed; readers use it only to judge staleness, block by block.
        publishedTick.store(tickIndex, ordering: .relaxed)
        converterCallsThisTick = 0
        guard slotCount > 0 else { return }

        // 1. Inputs: clears, one block each, marks, conversion to the native rate while contributing.
        var contributorCount = 0
        for i in 0..<slotCount {
            let contributing = slots[i]._withUnsafeGuaranteedRef { takeInput($0, events: &events) }
            if contributing {
                contributors[contributorCount] = slots[i]
                contributorCount += 1
            }
        }

        // 2. The total, over contributors only: work follows talkers.
        let n = native.blockSampleCount
        if contributorCount > 0 {
            total.baseAddress!.update(repeating: 0, count: n)
            for c in 0..<contributorCount {
                contributors[c]._withUnsafeGuaranteedRef { MixMinus.add(UnsafeBufferPointer($0.row), into: total) }
            }
            totalSilentBlocks = 0
        } else if totalSilentBlocks == 0 {
            total.baseAddress!.update(repeating: 0, count: n)
            totalSilentBlocks = 1
        } else {
            totalSilentBlocks += 1
        }

        // 3. Outputs, per receiving participant.
        for i in 0..<slotCount {
            slots[i]._withUnsafeGuaranteedRef { deliver($0, events: &events) }
        }
        // ORDERING: relaxed; a statistic.
        converterCalls.wrappingAdd(converterCallsThisTick, ordering: .relaxed)
    }

    private func applyCommands(events: inout EventSink) {
        while let command = commandConsumer.pop() {
            switch command {
            case .add(let p, let lane):
                install(p, lane: lane)
            case .remove(let id):
                if let index = slotIndex(of: id) { removeSlot(at: index, events: &events) }
            case .replace(let old, let new, let lane):
                if let index = slotIndex(of: old) { removeSlot(at: index, events: &events) }
                install(new, lane: lane)
            }
        }
    }

    private func slotIndex(of id: ParticipantID) -> Int? {
        for i in 0..<slotCount where slots[i]._withUnsafeGuaranteedRef({ $0.id == id }) { return i }
        return nil
    }

    private func install(_ p: Unmanaged<ParticipantState>, lane offered: Unmanaged<RateLane>?) {
        guard slotCount < capacity else {
            retire(.participant(p))
            if let offered { retire(.lane(offered)) }
            return
        }
        p._withUnsafeGuaranteedRef { state in
            guard state.rate != native else { return }
            var found: Unmanaged<RateLane>?
            for l in 0..<laneCount where lanes[l]._withUnsafeGuaranteedRef({ $0.rate == state.rate }) {
                found = lanes[l]
            }
            if found == nil, let offered {
                lanes[laneCount] = offered
                laneCount += 1
                found = offered
            } else if let offered {
                retire(.lane(offered))
            }
            // A lane always exists here: the handle offers one whenever its mirror has none.
            state.lane = found
            found?._withUnsafeGuaranteedRef { $0.participantCount += 1 }
        }
        slots[slotCount] = p
        slotCount += 1
    }

    private func removeSlot(at index: Int, events: inout EventSink) {
        let p = slots[index]
        p._withUnsafeGuaranteedRef { state in
            // Marks still pending are reported at once: their audio will never play.
            reportMarks(state, upTo: Int.max, events: &events)
            if let lane = state.lane {
                let remaining = lane._withUnsafeGuaranteedRef {
                    $0.participantCount -= 1
                    return $0.participantCount
                }
                if remaining == 0, let l = laneIndex(of: lane) {
                    laneCount -= 1
                    lanes[l] = lanes[laneCount]
                    retire(.lane(lane))
                }
                state.lane = nil
            }
        }
        slotCount -= 1
        slots[index] = slots[slotCount]
        retire(.participant(p))
    }

    private func laneIndex(of lane: Unmanaged<RateLane>) -> Int? {
        for l in 0..<laneCount where lanes[l].toOpaque() == lane.toOpaque() { return l }
        return nil
    }

    private func reportMarks(_ s: ParticipantState, upTo position: Int, events: inout EventSink) {
        while true {
            if s.pendingMark == nil { s.pendingMark = s.markConsumer.pop() }
            guard let mark = s.pendingMark, mark.position <= position else { return }
            events.post(.markPlayed(s.id, mark: mark.id))
            s.pendingMark = nil
        }
    }

    /// Clear requests, one block of input, marks; converts to the native row while contributing.
    /// Returns whether the participant contributes to this tick's total.
    private func takeInput(_ s: ParticipantState, events: inout EventSink) -> Bool {
        // ORDERING: acquire pairs with the release increment of the requester, so `clearBefore`
        // (stored before it) is visible.
        let request = s.clearRequest.load(ordering: .acquiring)
        if request != s.seenClearRequest {
            s.seenClearRequest = request
            let before = s.clearBefore.load(ordering: .relaxed)
            let dropped = s.inConsumer.discard(before: before)
            reportMarks(s, upTo: before, events: &events)
            events.post(.cleared(s.id, droppedSampleCount: dropped, sampleRate: s.rate, request: request))
        }

        let block = s.inBlock.count
        if s.underrunDebt > 0 { skipSilence(s) }
        let streaming = s.emptyTicks == 0
        let taken = s.inConsumer.read(into: s.inBlock)
        if taken < block && streaming {
            // Mid-stream underrun: this block carries silence the agent did not send.
            s.underrunDebt = min(s.underrunDebt + block - taken, 4 * block)
        }
        if taken > 0 {
            s.emptyTicks = 0
        } else {
            // Two empty ticks in a row: the stream has ended; a new one starts without debt.
            if s.emptyTicks >= 1 { s.underrunDebt = 0 }
            if s.emptyTicks < 2 { s.emptyTicks += 1 }
        }
        if taken > 0 && Self.hasSound(UnsafeBufferPointer(rebasing: s.inBlock[0..<taken])) {
            s.silentBlocks = 0
        } else if s.silentBlocks < s.drainBlocks {
            s.silentBlocks += 1
        }
        reportMarks(s, upTo: s.inbound.readCount(), events: &events)
        guard s.contributing else { return false }
        if taken < s.inBlock.count {
            // Underrun plays silence, never stale audio.
            (s.inBlock.baseAddress! + taken).update(repeating: 0, count: s.inBlock.count - taken)
        }
        if s.inConverter.isPassthrough {
            s.row.baseAddress!.update(from: s.inBlock.baseAddress!, count: s.row.count)
        } else {
            converterCallsThisTick += 1
            let fin = UnsafeMutableBufferPointer(rebasing: s.floatIn[0..<s.inBlock.count])
            let fout = UnsafeMutableBufferPointer(rebasing: s.floatOut[0..<s.row.count])
            SampleConversion.toFloat(UnsafeBufferPointer(s.inBlock), into: fin)
            s.inConverter.process(UnsafeBufferPointer(fin), into: fout)
            SampleConversion.toInt16(UnsafeBufferPointer(fout), into: s.row)
        }
        return true
    }

    /// Whether any sample is non-zero.
    @inline(__always)
    static func hasSound(_ samples: UnsafeBufferPointer<Int16>) -> Bool {
        var acc: Int16 = 0
        for i in 0..<samples.count { acc |= samples[i] }
        return acc != 0
    }

    /// Pays back underrun debt: while more than a block is queued, skips exactly-zero samples at the
    /// head of the queue (never more than the debt, never a non-zero sample, never into the last block).
    private func skipSilence(_ s: ParticipantState) {
        let spare = s.inConsumer.availableToRead() - s.inBlock.count
        guard spare > 0 else { return }
        let limit = min(spare, s.underrunDebt)
        let skipped = s.inConsumer.withReadableSegments { first, second in
            var n = 0
            while n < limit && n < first.count && first[n] == 0 { n += 1 }
            if n == first.count {
                var m = 0
                while n + m < limit && m < second.count && second[m] == 0 { m += 1 }
                n += m
            }
            return n
        }
        s.underrunDebt -= skipped
    }

    /// Builds and queues participant `s`'s mix-minus for this tick, if it receives.
    private func deliver(_ s: ParticipantState, events: inout EventSink) {
        // ORDERING: relaxed; a flag the tick samples once per block.
        guard s.receiving.load(ordering: .relaxed) else {
            if s.contributing { s.outConverterStale = true }
            return
        }
        let block: UnsafeBufferPointer<Int16>
        if let laneRef = s.lane {
            // Borrowed for the whole branch: taking the lane out of the closure would retain it.
            block = laneRef._withUnsafeGuaranteedRef { lane in
                computeLane(lane)
                if s.contributing {
                    // convert(total) − convert(own): the listener's private mix-minus, by linearity.
                    if s.outConverterStale {
                        s.outConverter.reset()
                        s.outConverterStale = false
                    }
                    converterCallsThisTick += 1
                    let fin = UnsafeMutableBufferPointer(rebasing: s.floatIn[0..<s.row.count])
                    let fout = UnsafeMutableBufferPointer(rebasing: s.floatOut[0..<s.outBlock.count])
                    SampleConversion.toFloat(UnsafeBufferPointer(s.row), into: fin)
                    s.outConverter.process(UnsafeBufferPointer(fin), into: fout)
                    SampleConversion.toInt16(
                        UnsafeBufferPointer(lane.converted), minus: UnsafeBufferPointer(fout), into: s.outBlock)
                    return UnsafeBufferPointer(s.outBlock)
                }
                if lane.sharedTick != tickIndex {
                    SampleConversion.toInt16(UnsafeBufferPointer(lane.converted), into: lane.shared)
                    lane.sharedTick = tickIndex
                }
                return UnsafeBufferPointer(lane.shared)
            }
        } else if s.contributing {
            MixMinus.subtract(own: UnsafeBufferPointer(s.row), from: UnsafeBufferPointer(total), into: s.outBlock)
            block = UnsafeBufferPointer(s.outBlock)
        } else {
            if sharedNativeTick != tickIndex {
                MixMinus.saturate(UnsafeBufferPointer(total), into: sharedNative)
                sharedNativeTick = tickIndex
            }
            block = UnsafeBufferPointer(sharedNative)
        }
        if s.outProducer.push(block, stamp: tickIndex) {
            // ORDERING: relaxed; statistics.
            s.outboundQueued.wrappingAdd(1, ordering: .relaxed)
            events.ready(s.id)
        } else {
            s.outboundRefused.wrappingAdd(1, ordering: .relaxed)
        }
    }

    /// convert(total) for `lane`'s rate, once per tick, and only while its output can be non-zero.
    private func computeLane(_ lane: RateLane) {
        guard lane.computedTick != tickIndex else { return }
        if lane.computedTick != tickIndex &- 1 {
            // Nobody listened at this rate last tick: start clean, as a private converter created
            // now would. A clean converter is a drained one.
            lane.converter.reset()
            lane.silentBlocks = lane.drainBlocks
            lane.converted.baseAddress!.update(repeating: 0, count: lane.converted.count)
        }
        lane.computedTick = tickIndex
        if totalSilentBlocks == 0 {
            lane.silentBlocks = 0
        } else if lane.silentBlocks < lane.drainBlocks {
            lane.silentBlocks += 1
            if lane.silentBlocks == lane.drainBlocks {
                // Drained: the converter's state is all zeros and its output exactly zero from now on.
                lane.converted.baseAddress!.update(repeating: 0, count: lane.converted.count)
            }
        }
        guard lane.silentBlocks < lane.drainBlocks else { return }
        if totalFloatTick != tickIndex {
            SampleConversion.toFloat(UnsafeBufferPointer(total), into: totalFloat)
            totalFloatTick = tickIndex
        }
        converterCallsThisTick += 1
        lane.converter.process(UnsafeBufferPointer(totalFloat), into: lane.converted)
    }
}
