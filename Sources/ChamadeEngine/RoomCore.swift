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
    /// `group` is a new rate group, offered when the sender knows of nobody else at that rate (the
    /// tick keeps it unless the room still has one for the rate, e.g. one draining after its last
    /// member left, and then retires the offer).
    case add(Unmanaged<ParticipantState>, group: Unmanaged<RateGroup>?)
    case remove(ParticipantID)
    /// A rate change: `new` takes `old`'s place (queued audio at the old rate is dropped).
    case replace(old: ParticipantID, new: Unmanaged<ParticipantState>, group: Unmanaged<RateGroup>?)
    /// Starts (or, with nil, stops) copying talkers' blocks to a tap; the previous tap is retired.
    case tap(Unmanaged<RoomTap>?)
}

/// What a tick hands back to be freed off the tick.
enum Retired: Sendable {
    case participant(Unmanaged<ParticipantState>)
    case group(Unmanaged<RateGroup>)
    case tap(Unmanaged<RoomTap>)
}

/// A room on the tick side: its participants, its rate groups, and the tick itself.
///
/// The tick (`tick(events:)`) runs on one clock thread. It allocates nothing, takes no lock and
/// retains nothing: participants and groups are held as `Unmanaged` references owned by the room
/// (+1 from the command that brought them until they are retired), and only borrowed in the loops.
/// Changes come in through `commands` (many producers serialised by a mutex the tick never takes)
/// and leave through `retired` (drained and freed by the engine's housekeeping).
///
/// Mixing by rate group (see `RateGroup`, docs/design/rate-groups.md): the room's 32-bit `total`
/// at the native rate is the sum of its native-rate talkers plus one up-conversion per group that
/// talks; a native-rate participant hears `saturate(total − own)`, a member of group g hears
/// `saturate(Σ_g − own + down_g(total − up_g(Σ_g)))`. Conversion work is at most two calls per
/// non-native rate per tick, whatever the number of talkers and listeners.
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
    /// Groups with members, plus groups whose up-converter still drains after their last member
    /// left. Non-empty groups never outnumber the participants, so `groupCapacity` slots (more than
    /// `capacity`) always leave room, if need be by retiring an empty draining group early.
    let groups: UnsafeMutablePointer<Unmanaged<RateGroup>>
    var groupCount = 0
    let groupCapacity: Int

    /// Σ native-rate talkers + Σ up(group sums), at the native rate, 32 bits.
    let total: UnsafeMutableBufferPointer<Int32>
    /// Whether `total` may hold non-zero samples (it is zeroed lazily, once, when it goes quiet).
    var totalDirty = false
    let totalFloat: UnsafeMutableBufferPointer<Float>
    let sharedNative: UnsafeMutableBufferPointer<Int16>
    var sharedNativeTick: UInt64 = 0
    var totalFloatTick: UInt64 = 0

    /// Set by I/O threads after anything that may need the tick (audio pushed, a mark, a clear, the
    /// receive flag, a command: `wake()`); taken by the tick. A quiet room (see `quiet`) skips its
    /// ticks until it is set, so it costs one load per tick instead of a pass over its participants
    /// (measured: that pass is cache misses on every participant's state and rings, ≈ 0.45 µs each).
    let wakeRequested = Atomic<Bool>(true)
    /// The last tick found nothing to do and nothing in flight: no talker, no receiver, no converter
    /// draining, every stream ended (no underrun debt), no pending mark, no command.
    var quiet = false

    /// Ticks run; stamps outbound blocks (read by I/O threads to skip stale blocks).
    var tickIndex: UInt64 = 0
    let publishedTick = Atomic<UInt64>(0)
    /// Converter calls made by ticks (for tests and the bench: cost follows rate groups).
    let converterCalls = Atomic<Int>(0)
    /// Converter calls of the last tick.
    var converterCallsThisTick = 0
    /// Where talkers' blocks are copied for speech recognition, if anywhere.
    var tap: Unmanaged<RoomTap>?

    init(id: RoomID, native: SampleRate, capacity: Int) {
        self.id = id
        self.native = native
        self.capacity = capacity
        // Commands: a join, leave or rate change per participant can be in flight at once, twice over.
        commands = SPSCRing(capacity: 2 * capacity + 16)
        commandProducer = Locked(commands.takeProducer())
        commandConsumer = commands.takeConsumer()
        // Each command retires at most three objects (a participant, an offered group, an evicted
        // group) and each group is retired once.
        retired = SPSCRing(capacity: 8 * capacity + 64, prefault: true)
        retireProducer = retired.takeProducer()
        retireConsumer = retired.takeConsumer()
        // Twice the participants: a rate change holds the old state one more tick while the new one
        // starts (both fade), and every participant may change rate in the same tick.
        slots = .allocate(capacity: 2 * capacity)
        groupCapacity = capacity + 8
        groups = .allocate(capacity: groupCapacity)
        let n = native.blockSampleCount
        total = .allocate(capacity: n)
        total.initialize(repeating: 0)
        totalFloat = .allocate(capacity: n)
        totalFloat.initialize(repeating: 0)
        sharedNative = .allocate(capacity: n)
        sharedNative.initialize(repeating: 0)
    }

    deinit {
        tap?.release()
        for i in 0..<slotCount { slots[i].release() }
        for i in 0..<groupCount { groups[i].release() }
        drainRetired()
        while let c = commandConsumer.pop() { Self.release(c) }
        slots.deallocate()
        groups.deallocate()
        total.deallocate()
        totalFloat.deallocate()
        sharedNative.deallocate()
    }

    private static func release(_ command: RoomCommand) {
        switch command {
        case .add(let p, let group), .replace(_, let p, let group):
            p.release()
            group?.release()
        case .tap(let t): t?.release()
        case .remove: break
        }
    }

    /// Sends a command to the tick. Any thread; never called by the tick. Returns false if the
    /// command ring is full (cannot happen within capacity: joins are admitted against it).
    func send(_ command: RoomCommand) -> Bool {
        let sent = commandProducer.withLock { $0.push(command) }
        wake()
        return sent
    }

    /// Tells the tick that the room may have work (call after the ring write it concerns). Any
    /// thread; never blocks.
    func wake() {
        // ORDERING: release, after the caller's ring write: a tick that takes the flag (acquire
        // exchange) sees that write. A store always, never load-then-store: a skipped store could
        // race with the tick clearing the flag and leave the write unseen by a sleeping room.
        wakeRequested.store(true, ordering: .releasing)
    }

    /// Releases everything the room holds once its shard has retired it (no tick will run it again):
    /// participants, groups, pending commands. Housekeeping only. Without this, a participant that
    /// left after its room was removed would stay in the room's slots until the room object dies.
    func dispose() {
        for i in 0..<slotCount {
            slots[i]._withUnsafeGuaranteedRef { $0.group = nil }
            slots[i].release()
        }
        slotCount = 0
        for i in 0..<groupCount { groups[i].release() }
        groupCount = 0
        tap?.release()
        tap = nil
        while let c = commandConsumer.pop() { Self.release(c) }
        drainRetired()
    }

    /// Frees what ticks retired. Housekeeping only (not real-time).
    func drainRetired() {
        while let r = retireConsumer.pop() {
            switch r {
            case .participant(let p): p.release()
            case .group(let g): g.release()
            case .tap(let t): t.release()
            }
        }
    }

    private func retire(_ r: Retired) {
        // The retire ring holds eight per slot, so it cannot fill while housekeeping runs; if it
        // ever did, leaking is safer than freeing on the tick.
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
        guard slotCount > 0 || groupCount > 0 else { return }
        // ORDERING: relaxed peek; the exchange below is the acquire that pairs with `wake()`.
        if wakeRequested.load(ordering: .relaxed) {
            _ = wakeRequested.exchange(false, ordering: .acquiring)
        } else if quiet {
            return
        }
        var busy = false

        if totalDirty {
            total.baseAddress!.update(repeating: 0, count: total.count)
            totalDirty = false
        }

        // 1. Inputs: clears, one block each, marks; blocks with sound summed exactly at their rate
        //    (native talkers straight into the total, the others into their group's sum).
        var nativeTalked = false
        var anyLeaving = false
        for i in 0..<slotCount {
            slots[i]._withUnsafeGuaranteedRef { s in
                takeInput(s, events: &events)
                if s.talking, let tap {
                    tap._withUnsafeGuaranteedRef {
                        $0.push(
                            UnsafeBufferPointer(s.inBlock),
                            header: TapBlock(
                                participant: s.id, tick: tickIndex, rate: s.rate,
                                streamPosition: s.blockStreamPosition, sampleCount: s.inBlock.count))
                    }
                }
                if s.leaving {
                    // Fades out over what it still had queued (zeros follow an underrun).
                    anyLeaving = true
                    s.receivingThisTick = false
                    if s.talking {
                        Self.ramp(UnsafeMutableBufferPointer(rebasing: s.inBlock[0..<s.takenThisTick]), down: true)
                    }
                } else if s.fadeInPending {
                    s.receivingThisTick = false
                    if s.talking { Self.ramp(s.inBlock, down: false) }
                    s.fadeInPending = false
                }
                if s.talking || s.receivingThisTick || s.emptyTicks < 2 || s.underrunDebt > 0 || s.pendingMark != nil {
                    busy = true
                }
                if let groupRef = s.group {
                    groupRef._withUnsafeGuaranteedRef { g in
                        if s.receivingThisTick { g.receiveTick = tickIndex }
                        guard s.talking else { return }
                        if g.sumTick != tickIndex {
                            g.sumTick = tickIndex
                            g.sum.baseAddress!.update(repeating: 0, count: g.sum.count)
                        }
                        MixMinus.add(UnsafeBufferPointer(s.inBlock), into: g.sum)
                    }
                } else if s.talking {
                    MixMinus.add(UnsafeBufferPointer(s.inBlock), into: total)
                    nativeTalked = true
                }
            }
        }
        if nativeTalked { totalDirty = true }

        // 2. One up-conversion per group that talks (or drains), into the total.
        var upActiveCount = 0
        for i in 0..<groupCount where groups[i]._withUnsafeGuaranteedRef({ convertUp($0) }) {
            upActiveCount += 1
        }

        // 3. One down-conversion per group that has a receiver and can hear someone outside it; then
        //    what its members hear. Empty groups whose up-converter has drained are retired.
        var i = 0
        while i < groupCount {
            let g = groups[i]
            let finished = g._withUnsafeGuaranteedRef { group -> Bool in
                let othersActive = nativeTalked || upActiveCount - (group.upActive ? 1 : 0) > 0
                prepareHearing(group, othersActive: othersActive)
                return group.memberCount == 0 && !group.upActive
            }
            if finished {
                groupCount -= 1
                groups[i] = groups[groupCount]
                retire(.group(g))
            } else {
                i += 1
            }
        }

        // 4. Outputs, per receiving participant.
        for i in 0..<slotCount {
            slots[i]._withUnsafeGuaranteedRef { deliver($0, events: &events) }
        }
        if anyLeaving {
            removeLeaving(events: &events)
            busy = true
        }
        // ORDERING: relaxed; a statistic.
        converterCalls.wrappingAdd(converterCallsThisTick, ordering: .relaxed)
        // Quiet: the next ticks would change nothing (every counter is saturated, every converter
        // drained or idle), so they are skipped until an I/O thread or a command wakes the room.
        quiet = !busy && upActiveCount == 0 && !nativeTalked
    }

    private func applyCommands(events: inout EventSink) {
        while let command = commandConsumer.pop() {
            switch command {
            case .add(let p, let group):
                install(p, group: group)
            case .remove(let id):
                if let index = slotIndex(of: id) { removeSlot(at: index, events: &events) }
            case .replace(let old, let new, let group):
                // The old state stays this tick to fade out while the new one fades in. Neither
                // receives this tick: each would hear the other's block, which is its own voice.
                let fading = slotIndex(of: old)
                if let fading { slots[fading]._withUnsafeGuaranteedRef { $0.leaving = true } }
                install(new, group: group)
                if fading != nil { new._withUnsafeGuaranteedRef { $0.fadeInPending = true } }
            case .tap(let new):
                if let old = tap { retire(.tap(old)) }
                tap = new
            }
        }
    }

    /// The slot of participant `id`, not counting a state fading out after a rate change.
    private func slotIndex(of id: ParticipantID) -> Int? {
        for i in 0..<slotCount where slots[i]._withUnsafeGuaranteedRef({ $0.id == id && !$0.leaving }) { return i }
        return nil
    }

    /// Removes the states that faded out this tick.
    private func removeLeaving(events: inout EventSink) {
        var i = slotCount - 1
        while i >= 0 {
            if slots[i]._withUnsafeGuaranteedRef({ $0.leaving }) { removeSlot(at: i, events: &events) }
            i -= 1
        }
    }

    /// Scales `block` by a linear ramp, down from 1 to 0 or up from 0 to 1 across the block.
    static func ramp(_ block: UnsafeMutableBufferPointer<Int16>, down: Bool) {
        let n = Int32(block.count)
        for i in 0..<block.count {
            let k = Int32(i)
            let gain = down ? n - k : k
            block[i] = Int16(truncatingIfNeeded: Int32(block[i]) * gain / n)
        }
    }

    private func install(_ p: Unmanaged<ParticipantState>, group offered: Unmanaged<RateGroup>?) {
        guard slotCount < 2 * capacity else {
            retire(.participant(p))
            if let offered { retire(.group(offered)) }
            return
        }
        let placed = p._withUnsafeGuaranteedRef { state -> Bool in
            guard state.rate != native else {
                if let offered { retire(.group(offered)) }
                return true
            }
            var found: Unmanaged<RateGroup>?
            for g in 0..<groupCount where groups[g]._withUnsafeGuaranteedRef({ $0.rate == state.rate }) {
                found = groups[g]
            }
            if found != nil {
                // A group still draining after its last member left is reused: its converters'
                // state is the room's history at this rate, as a private converter's would be.
                if let offered { retire(.group(offered)) }
            } else if let offered {
                if groupCount == groupCapacity { evictEmptyGroup() }
                groups[groupCount] = offered
                groupCount += 1
                found = offered
            }
            // The handle offers a group whenever its mirror knows nobody at this rate, and a group
            // with members is never retired, so one is always found; if not, refuse the participant
            // rather than mix it wrongly.
            guard let found else { return false }
            state.group = found
            found._withUnsafeGuaranteedRef { $0.memberCount += 1 }
            return true
        }
        guard placed else {
            retire(.participant(p))
            return
        }
        slots[slotCount] = p
        slotCount += 1
    }

    /// Makes room in a full group table by retiring the empty group closest to drained (its
    /// remaining filter tail, at most a few ms, is cut). Only reached after more rate changes within
    /// one drain window than the table has spare slots.
    private func evictEmptyGroup() {
        var victim = -1
        var mostDrained = -1
        for g in 0..<groupCount {
            let (members, silent) = groups[g]._withUnsafeGuaranteedRef { ($0.memberCount, $0.upSilentBlocks) }
            if members == 0 && silent > mostDrained {
                victim = g
                mostDrained = silent
            }
        }
        guard victim >= 0 else { return }
        let g = groups[victim]
        groupCount -= 1
        groups[victim] = groups[groupCount]
        retire(.group(g))
    }

    private func removeSlot(at index: Int, events: inout EventSink) {
        let p = slots[index]
        p._withUnsafeGuaranteedRef { state in
            // Marks still pending are reported at once: their audio will never play.
            reportMarks(state, upTo: Int.max, events: &events)
            // The group stays while its up-converter drains what this participant said last, so
            // the others hear its final words fade out through the filter, not cut.
            if let group = state.group {
                group._withUnsafeGuaranteedRef { $0.memberCount -= 1 }
                state.group = nil
            }
        }
        slotCount -= 1
        slots[index] = slots[slotCount]
        retire(.participant(p))
    }

    private func reportMarks(_ s: ParticipantState, upTo position: Int, events: inout EventSink) {
        while true {
            if s.pendingMark == nil { s.pendingMark = s.markConsumer.pop() }
            guard let mark = s.pendingMark, mark.position <= position else { return }
            events.post(.markPlayed(s.id, mark: mark.id))
            s.pendingMark = nil
        }
    }

    /// Clear requests, one block of input, marks; samples the receive flag. Sets `s.talking` when
    /// the block has sound (then zero-padded to a whole block if the stream underran).
    private func takeInput(_ s: ParticipantState, events: inout EventSink) {
        // ORDERING: relaxed; a flag the tick samples once per block.
        s.receivingThisTick = s.receiving.load(ordering: .relaxed)
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
        s.blockStreamPosition = s.inbound.readCount()
        let taken = s.inConsumer.read(into: s.inBlock)
        s.takenThisTick = taken
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
        s.talking = taken > 0 && Self.hasSound(UnsafeBufferPointer(rebasing: s.inBlock[0..<taken]))
        reportMarks(s, upTo: s.inbound.readCount(), events: &events)
        if s.talking && taken < block {
            // Underrun plays silence, never stale audio.
            (s.inBlock.baseAddress! + taken).update(repeating: 0, count: block - taken)
        }
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
        guard s.receivingThisTick else { return }
        let block: UnsafeBufferPointer<Int16>
        if let groupRef = s.group {
            // Borrowed for the whole branch: taking the group out of the closure would retain it.
            block = groupRef._withUnsafeGuaranteedRef { g in
                if s.talking, let heard = g.heard {
                    // Σ_g − own + down(others): the rest of the group exact, everyone else converted.
                    MixMinus.subtract(own: UnsafeBufferPointer(s.inBlock), from: UnsafeBufferPointer(heard), into: s.outBlock)
                    return UnsafeBufferPointer(s.outBlock)
                }
                if g.sharedTick != tickIndex {
                    if let heard = g.heard {
                        MixMinus.saturate(UnsafeBufferPointer(heard), into: g.shared)
                    } else {
                        g.shared.baseAddress!.update(repeating: 0, count: g.shared.count)
                    }
                    g.sharedTick = tickIndex
                }
                return UnsafeBufferPointer(g.shared)
            }
        } else if s.talking {
            MixMinus.subtract(own: UnsafeBufferPointer(s.inBlock), from: UnsafeBufferPointer(total), into: s.outBlock)
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

    /// up(Σ_g) into the total, while the group talks or its filter drains. Returns whether it ran
    /// (its output may be non-zero this tick).
    private func convertUp(_ g: RateGroup) -> Bool {
        let talked = g.sumTick == tickIndex
        if talked {
            g.upSilentBlocks = 0
        } else if g.upSilentBlocks < g.upDrainBlocks {
            g.upSilentBlocks += 1
        }
        // Drained: the converter's state is all zeros and its output exactly zero until the group
        // talks again, when it carries on as a fresh converter would.
        g.upActive = g.upSilentBlocks < g.upDrainBlocks
        guard g.upActive else { return false }
        let fin = UnsafeMutableBufferPointer(rebasing: g.floatIn[0..<g.sum.count])
        let fout = UnsafeMutableBufferPointer(rebasing: g.floatOut[0..<total.count])
        if talked {
            SampleConversion.toFloat(UnsafeBufferPointer(g.sum), into: fin)
        } else {
            fin.baseAddress!.update(repeating: 0, count: fin.count)
        }
        converterCallsThisTick += 1
        g.up.process(UnsafeBufferPointer(fin), into: fout)
        // Rounded once per group (not per talker), never saturated: the mix saturates once, at the end.
        SampleConversion.toInt32(UnsafeBufferPointer(fout), into: g.upBlock)
        MixMinus.add(UnsafeBufferPointer(g.upBlock), into: total)
        totalDirty = true
        return true
    }

    /// For a group with a receiver this tick: down(total − up_g) while anyone outside the group can
    /// be heard (or its filter drains), and `heard`, what its members hear before their own block is
    /// subtracted.
    private func prepareHearing(_ g: RateGroup, othersActive: Bool) {
        guard g.receiveTick == tickIndex else { return }
        if g.downTick != tickIndex &- 1 {
            // Nobody in the group received last tick: start clean, as a private converter created
            // now would. A clean converter is a drained one.
            g.down.reset()
            g.downSilentBlocks = g.downDrainBlocks
        }
        g.downTick = tickIndex
        if othersActive {
            g.downSilentBlocks = 0
        } else if g.downSilentBlocks < g.downDrainBlocks {
            g.downSilentBlocks += 1
        }
        g.downLive = g.downSilentBlocks < g.downDrainBlocks
        if g.downLive {
            let fout = UnsafeMutableBufferPointer(rebasing: g.floatOut[0..<g.downBlock.count])
            let input: UnsafeBufferPointer<Float>
            if g.upActive {
                // Everyone but this group: exact in 32 bits (the group's own share was rounded once
                // and added as is), then one rounding to Float.
                let fin = UnsafeMutableBufferPointer(rebasing: g.floatIn[0..<total.count])
                SampleConversion.toFloat(UnsafeBufferPointer(total), minus: UnsafeBufferPointer(g.upBlock), into: fin)
                input = UnsafeBufferPointer(fin)
            } else {
                if totalFloatTick != tickIndex {
                    SampleConversion.toFloat(UnsafeBufferPointer(total), into: totalFloat)
                    totalFloatTick = tickIndex
                }
                input = UnsafeBufferPointer(totalFloat)
            }
            converterCallsThisTick += 1
            g.down.process(input, into: fout)
            SampleConversion.toInt32(UnsafeBufferPointer(fout), into: g.downBlock)
        }
        let talked = g.sumTick == tickIndex
        if talked && g.downLive {
            MixMinus.sum(UnsafeBufferPointer(g.sum), UnsafeBufferPointer(g.downBlock), into: g.mix)
            g.heard = g.mix
        } else if talked {
            g.heard = g.sum
        } else if g.downLive {
            g.heard = g.downBlock
        } else {
            g.heard = nil
        }
    }
}
