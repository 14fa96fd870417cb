/// An adaptive jitter buffer for the RTP packets of one incoming stream.
///
/// **Model.** Every packet occupies `[timestamp, timestamp + sampleCount)` on the stream's RTP
/// timeline (timestamps unwrapped to 64 bits internally, so the 2^32 wrap and the 65536 sequence
/// wrap are invisible). The buffer keeps a *playout point* `P` on that timeline and, on each
/// `pull()`, answers for the 20 ms *block* `[P, P + B)` (B = clock rate / 50) with a short list of
/// *items* that continue the timeline exactly where the previous pull stopped:
/// - `.packet`: decode this whole packet and append its PCM to your residue;
/// - `.conceal(sampleCount, following)`: append `sampleCount` samples of concealment (Opus FEC
///   from `following` when it is non-nil, else PLC / G.711 fade).
///
/// Packets are handed out **whole** (an Opus packet cannot be cut; a G.711 one could, but one
/// rule for both is simpler) the first time a block reaches them; the caller keeps the decoded
/// PCM beyond the block in a residue and takes exactly one block from it per pull. The buffer
/// guarantees that after the items of a `.playing` block the residue holds at least one block,
/// and that it holds less than one packet plus one block, so 10, 30 and 60 ms packets come out
/// as a continuous 20 ms block stream (a 60 ms packet: one block with the packet, two without
/// items). After a `.idle` or `.filling` block, drop the residue and play silence.
///
/// **Adaptation** (see ``Configuration`` for the numbers):
/// - *Target delay* T = clamp(B + spread, minimum, maximum), where spread is the range
///   (max − min) of the relative transit delay `arrival − timestamp` over the last
///   `delayWindowPacketCount` packets (late ones included). A delayed packet raises T at once; T
///   falls only when the delayed packets leave the window (5 s at 20 ms packets by default).
/// - *Level* L = (end of the newest buffered audio) − P, reported as `jitter_buffer_ms`.
/// - *Start*: playout starts when L ≥ T.
/// - *Growing*: only when the packet due next is missing. If L < T (or nothing later is buffered),
///   the buffer waits: it answers one block of concealment without advancing the timeline, so the
///   delay grows by that block and a late or reordered packet still plays. If L ≥ T the missing
///   audio is declared lost and concealed on the timeline (with FEC when the next packet is
///   there). We never add delay in the middle of good audio.
/// - *Pausing*: after `pauseAfterBlocks` consecutive waits with nothing buffered the stream is paused (`.filling`, no
///   concealment counted); it resumes at the first buffered packet once L ≥ T again. This is how a
///   sender's silence (DTX, VAD) or a stall ends.
/// - *Talk spurt*: when a gap on the timeline ends at a packet that continues the sequence numbers
///   (nothing was lost: the sender was silent) or carries the marker bit, the gap is cut so that
///   L = T at once, both ways (the rest of the gap is concealed, which is silence anyway).
/// - *Shrinking*: when L ≥ T + B for `shrinkAfterBlocks` consecutive pulls, one packet (or one
///   block of gap) at a packet boundary is skipped, if L stays ≥ T after it; at most one per
///   `shrinkAfterBlocks` pulls (4 % speed-up at the default), so calm lowers the delay slowly.
///   When skipping still leaves L ≥ the maximum delay, it is done at once.
/// - *Restart* (counted): a new SSRC; a sequence number more than 3000 from the highest (RFC 3550
///   A.1's MAX_DROPOUT); or a newer packet whose transit delay changed by more than
///   `jumpThresholdMilliseconds` (a timestamp jump, either way; a sender's silence moves arrival
///   and timestamp together and is not a jump). A restart drops what is buffered and refills.
///   Packets of the previous SSRC arriving after a change are counted late, not restarted on.
///
/// **Late packets** (their start is before the handed-out part of the timeline) are dropped at
/// once and counted; they take no slot. The buffer is fixed-size: all storage is allocated in
/// `init`; a packet that finds no free slot is refused and counted. (speexdsp's buffer leaked the
/// copy of a very late packet, as Janus found; here a late packet is never copied.)
///
/// **Counting.** `packetsLost` counts sequence numbers missing when playout passed them; a packet
/// that arrives after that is also counted in `packetsLate`. `concealedMilliseconds` counts every
/// concealment answered while playing, waits included.
///
/// Not thread-safe: one owner (the leg's decoding side) calls `insert` and `pull`; feed it from the
/// consumer end of an SPSC ring of raw packets stamped with their arrival time by the I/O thread.
/// Real-time safe after `init`: no operation allocates, locks or makes a system call, and every
/// operation is bounded by the packet capacity.
public struct JitterBuffer: ~Copyable {
    // MARK: Public types

    /// Fixed parameters of a buffer, validated by `init`.
    public struct Configuration: Sendable, Equatable {
        /// The RTP clock rate in Hz: 8000 for G.711, 48000 for Opus. A multiple of 100, 8000...192000.
        public var clockRate: Int
        /// Largest payload accepted, in bytes; larger packets are refused and counted.
        public var maximumPayloadByteCount: Int = 1500
        /// Packets that can be held at once (buffered plus those handed out by the last pull).
        /// The default holds 200 ms of 10 ms packets with room for reordering and bursts.
        public var packetCapacity: Int = 64
        /// Lower bound of the target delay, in ms (at least 20). 40 gives Opus FEC a packet to
        /// look ahead to without waiting.
        public var minimumDelayMilliseconds: Int = 20
        /// Upper bound of the target delay, in ms.
        public var maximumDelayMilliseconds: Int = 200
        /// Packets whose transit delays make the target's window.
        public var delayWindowPacketCount: Int = 250
        /// Consecutive pulls at L ≥ T + B before one skip.
        public var shrinkAfterBlocks: Int = 25
        /// Consecutive waiting blocks with nothing buffered after which the stream counts as paused.
        public var pauseAfterBlocks: Int = 3
        /// A change of transit delay beyond this, on a newer packet, is a timestamp jump.
        public var jumpThresholdMilliseconds: Int = 1000

        /// Defaults for a stream at `clockRate` Hz.
        public init(clockRate: Int) { self.clockRate = clockRate }
    }

    /// Why a configuration was refused.
    public enum ConfigurationError: Error, Equatable, Sendable {
        case clockRate(Int)
        case maximumPayloadByteCount(Int)
        case packetCapacity(Int)
        case delayRange(minimumMilliseconds: Int, maximumMilliseconds: Int)
        case delayWindowPacketCount(Int)
        case shrinkAfterBlocks(Int)
        case pauseAfterBlocks(Int)
        case jumpThresholdMilliseconds(Int)
    }

    /// What `insert` did with a packet.
    public enum InsertResult: Equatable, Sendable {
        /// Buffered (the first packet of the first stream too).
        case accepted
        /// Buffered as the first packet of a new stream; everything buffered before was dropped.
        case restarted(RestartReason)
        /// The same sequence number was already received; ignored.
        case duplicate
        /// Its playout time has passed (or it is from the SSRC replaced by a restart); dropped.
        case late
        /// Not buffered, see the reason.
        case refused(RefusalReason)
    }

    /// Why a stream was restarted.
    public enum RestartReason: Equatable, Sendable {
        case newSource
        case sequenceJump
        case timestampJump
    }

    /// Why a packet was refused.
    public enum RefusalReason: Equatable, Sendable {
        /// The payload is longer than `maximumPayloadByteCount`.
        case tooLarge
        /// `sampleCount` is not between 10 and 120 ms of the clock.
        case invalidDuration
        /// Every slot is taken.
        case full
    }

    /// The state of the stream as seen by a pull.
    public enum BlockKind: Equatable, Sendable {
        /// No packet yet (or since `reset`): play silence.
        case idle
        /// Packets are arriving but the delay is not built up yet (at the start, after a restart
        /// or a pause): play silence and drop any residue.
        case filling
        /// Items follow; after them the residue holds at least one block.
        case playing
    }

    /// The answer to one pull: what to do for the next 20 ms.
    public struct Block: Equatable, Sendable {
        public var kind: BlockKind
        /// The RTP timestamp of the block's first sample (meaningful when `.playing`).
        public var timestamp: UInt32
        /// How many items to read with `item(_:)`, in timeline order. 0 when the block is
        /// covered by the residue of a longer packet.
        public var itemCount: Int

        public init(kind: BlockKind, timestamp: UInt32, itemCount: Int) {
            (self.kind, self.timestamp, self.itemCount) = (kind, timestamp, itemCount)
        }
    }

    /// A packet handed out by `pull` (or offered for FEC). `payload` points into the buffer's own
    /// storage and is valid until the next `insert`, `pull` or `reset`.
    public struct Packet: @unchecked Sendable {
        // SAFETY: @unchecked because of `payload`, which is only read by the owner's thread before the
        // owner's next mutation (the documented validity window).
        public var sequence: UInt16
        public var timestamp: UInt32
        public var marker: Bool
        /// Its duration in samples at the clock rate, as given to `insert`.
        public var sampleCount: Int
        /// The payload bytes, in the buffer's storage.
        public var payload: UnsafeRawBufferPointer
    }

    /// One step of a block, in timeline order.
    public enum Item: Sendable {
        /// Decode the whole packet and append its PCM.
        case packet(Packet)
        /// Append `sampleCount` samples of concealment. `following` is the packet that starts right
        /// after the gap when it is already buffered: decode its in-band FEC (Opus `decode_fec=1`,
        /// `frame_size = sampleCount`) instead of PLC. It is handed out again as a `.packet` later.
        case conceal(sampleCount: Int, following: Packet?)
    }

    /// Counters and gauges of the stream (cumulative across restarts).
    public struct Statistics: Equatable, Sendable {
        /// Every packet given to `insert`, whatever became of it.
        public var packetsReceived = 0
        /// Sequence numbers missing when playout passed them.
        public var packetsLost = 0
        /// Packets dropped because their playout time had passed.
        public var packetsLate = 0
        /// Packets whose sequence number was already received.
        public var packetsDuplicate = 0
        /// Packets refused by `insert` (too large, bad duration, no free slot).
        public var packetsRefused = 0
        /// Buffered packets skipped to shrink the delay or overlapping the previous one.
        public var packetsDropped = 0
        /// Streams restarted (new SSRC, sequence or timestamp jump).
        public var restarts = 0
        /// RFC 3550 interarrival jitter, in samples of the clock (what an RTCP report carries).
        public var jitter: UInt32 = 0
        /// The same in ms, rounded down.
        public var jitterMilliseconds = 0
        /// The level L at the last pull: audio buffered ahead of the playout point, in ms.
        public var bufferMilliseconds = 0
        /// The current target delay T, in ms.
        public var targetMilliseconds = 0
        /// Concealment answered while playing, in ms.
        public var concealedMilliseconds = 0
        /// Timeline skipped to shrink the delay (packets and silence), in ms.
        public var skippedMilliseconds = 0
        /// RFC 3550's extended highest sequence number received (cycles << 16 | sequence).
        public var extendedHighestSequence: UInt32 = 0

        /// All zero.
        public init() {}
    }

    // MARK: Storage (allocated in init, freed in deinit)

    struct Slot {
        var sequence: UInt16 = 0
        var extendedSequence: Int64 = 0
        var timestamp: UInt32 = 0
        var position: Int64 = 0
        var duration: Int64 = 0
        var marker = false
        var byteCount = 0
    }

    enum State { case idle, filling, playing }

    /// Items per block: packets are at least 10 ms, so a 20 ms block holds at most two packets and
    /// the gaps before them, plus a final gap.
    static let itemCapacity = 8

    let clockRate: Int
    let blockUnits: Int64
    let minimumDuration: Int64
    let maximumDuration: Int64
    let minimumDelay: Int64
    let maximumDelay: Int64
    let jumpThreshold: Int64
    let capacity: Int
    let maximumPayload: Int
    let windowCapacity: Int
    let shrinkAfter: Int
    let pauseAfter: Int

    let arena: UnsafeMutableRawPointer
    let slots: UnsafeMutablePointer<Slot>
    /// Buffered slot indices sorted by timeline position (stable: equal positions keep arrival order).
    let order: UnsafeMutablePointer<Int>
    var orderCount = 0
    /// Free slot indices (a stack).
    let free: UnsafeMutablePointer<Int>
    var freeCount: Int
    /// Slots handed out by the last pull, freed at the next one.
    let handed: UnsafeMutablePointer<Int>
    var handedCount = 0
    let items: UnsafeMutablePointer<Item>
    var itemCount = 0
    /// Ring of relative transit delays (arrival − position) of the last packets.
    let delays: UnsafeMutablePointer<Int64>
    var delayNext = 0
    var delayCount = 0

    // MARK: Stream state

    var state = State.idle
    var ssrc: UInt32 = 0
    var previousSSRC: UInt32?
    /// Extended sequence number and timeline position of the newest packet (highest sequence).
    var highestSequence: Int64 = 0
    /// The newest packet's timestamp, unwrapped (the sender's timeline, before `positionOffset`).
    var highestPosition: Int64 = 0
    /// The newest packet's duration.
    var highestDuration: Int64 = 0
    /// Added to the sender's timeline to get ours: grows when a packet that follows the newest in
    /// sequence starts inside it (see `insert`).
    var positionOffset: Int64 = 0
    /// The offset before the last re-base, and the first sequence number the current one applies
    /// to: a reordered packet from before a re-base keeps the timeline it was sent on.
    var previousOffset: Int64 = 0
    var offsetSequence: Int64 = 0
    var highestArrival: Int64 = 0
    var firstExtendedSequence: Int64 = 0
    /// Bit i set: sequence `highestSequence - i` was received.
    var seenMask: UInt64 = 0
    /// Timeline handed out so far (items end here); nil before the stream's first playout.
    var coverEnd: Int64?
    /// The playout point P (start of the next block).
    var playout: Int64 = 0
    var lastHandedSequence: Int64?
    /// Sequence numbers of this stream taken by packets of another payload type (RFC 4733 events
    /// interleaved with the audio), not yet passed by playout: they are not losses.
    let foreign: UnsafeMutablePointer<Int64>
    var foreignCount = 0
    static let foreignCapacity = 64
    var target: Int64
    var level: Int64 = 0
    var highRun = 0
    var waitRun = 0
    // RFC 3550 A.8 jitter, scaled by 16.
    var lastTransit: Int64?
    var jitterQ4: Int64 = 0

    var counts = Statistics()
    var concealedUnits: Int64 = 0
    var skippedUnits: Int64 = 0

    // MARK: Life cycle

    /// Allocates and pre-faults all storage for `configuration`. Not real-time safe (allocates).
    public init(configuration c: Configuration) throws(ConfigurationError) {
        guard (8000...192_000).contains(c.clockRate), c.clockRate % 100 == 0 else {
            throw .clockRate(c.clockRate)
        }
        guard (1...65_536).contains(c.maximumPayloadByteCount) else {
            throw .maximumPayloadByteCount(c.maximumPayloadByteCount)
        }
        guard (4...4096).contains(c.packetCapacity) else { throw .packetCapacity(c.packetCapacity) }
        guard c.minimumDelayMilliseconds >= 20, c.maximumDelayMilliseconds >= c.minimumDelayMilliseconds,
            c.maximumDelayMilliseconds <= 10_000
        else {
            throw .delayRange(
                minimumMilliseconds: c.minimumDelayMilliseconds, maximumMilliseconds: c.maximumDelayMilliseconds)
        }
        guard (1...100_000).contains(c.delayWindowPacketCount) else {
            throw .delayWindowPacketCount(c.delayWindowPacketCount)
        }
        guard c.shrinkAfterBlocks >= 1 else { throw .shrinkAfterBlocks(c.shrinkAfterBlocks) }
        guard c.pauseAfterBlocks >= 1 else { throw .pauseAfterBlocks(c.pauseAfterBlocks) }
        guard c.jumpThresholdMilliseconds > c.maximumDelayMilliseconds else {
            throw .jumpThresholdMilliseconds(c.jumpThresholdMilliseconds)
        }
        let rate = Int64(c.clockRate)
        clockRate = c.clockRate
        blockUnits = rate / 50
        minimumDuration = rate / 100
        maximumDuration = rate * 120 / 1000
        minimumDelay = Int64(c.minimumDelayMilliseconds) * rate / 1000
        maximumDelay = Int64(c.maximumDelayMilliseconds) * rate / 1000
        jumpThreshold = Int64(c.jumpThresholdMilliseconds) * rate / 1000
        capacity = c.packetCapacity
        maximumPayload = c.maximumPayloadByteCount
        windowCapacity = c.delayWindowPacketCount
        shrinkAfter = c.shrinkAfterBlocks
        pauseAfter = c.pauseAfterBlocks
        target = minimumDelay

        arena = .allocate(byteCount: capacity * maximumPayload, alignment: 16)
        // SAFETY: raw bytes, initialised here so that the tick never takes a first-touch page fault
        // (which can wait on the process's memory-map lock while another thread allocates).
        arena.initializeMemory(as: UInt8.self, repeating: 0, count: capacity * maximumPayload)
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: Slot(), count: capacity)
        order = .allocate(capacity: capacity)
        order.initialize(repeating: 0, count: capacity)
        free = .allocate(capacity: capacity)
        for i in 0..<capacity { (free + i).initialize(to: capacity - 1 - i) }
        freeCount = capacity
        handed = .allocate(capacity: capacity)
        handed.initialize(repeating: 0, count: capacity)
        items = .allocate(capacity: Self.itemCapacity)
        items.initialize(repeating: .conceal(sampleCount: 0, following: nil), count: Self.itemCapacity)
        delays = .allocate(capacity: windowCapacity)
        foreign = .allocate(capacity: Self.foreignCapacity)
        delays.initialize(repeating: 0, count: windowCapacity)
    }

    deinit {
        // All element types are trivial: deallocating without deinitializing is sound.
        arena.deallocate()
        slots.deallocate()
        order.deallocate()
        free.deallocate()
        handed.deallocate()
        items.deallocate()
        delays.deallocate()
        foreign.deallocate()
    }

    // MARK: Public API

    /// Samples per 20 ms block at the clock rate (160 at 8 kHz, 960 at 48 kHz).
    public var blockSampleCount: Int { Int(blockUnits) }

    /// Offers one received packet.
    ///
    /// - Parameters:
    ///   - sequence, timestamp, ssrc, marker: from its RTP header.
    ///   - payload: the payload bytes (after header, extensions and padding); copied.
    ///   - sampleCount: its duration in samples at the clock rate, as the codec says (G.711: the
    ///     byte count; Opus: `opus_packet_get_nb_samples`). 10 to 120 ms.
    ///   - arrival: when it reached the socket, in ns of a monotonic clock (not when it is inserted).
    /// Real-time safe.
    @discardableResult
    public mutating func insert(
        sequence: UInt16, timestamp: UInt32, ssrc packetSSRC: UInt32, marker: Bool,
        payload: UnsafeRawBufferPointer, sampleCount: Int, arrival: Int64
    ) -> InsertResult {
        counts.packetsReceived += 1
        guard payload.count <= maximumPayload else {
            counts.packetsRefused += 1
            return .refused(.tooLarge)
        }
        guard Int64(sampleCount) >= minimumDuration, Int64(sampleCount) <= maximumDuration else {
            counts.packetsRefused += 1
            return .refused(.invalidDuration)
        }
        let arrivalUnits = units(ofNanoseconds: arrival)
        var restartReason: RestartReason?
        var extendedSequence: Int64
        var position: Int64
        if state == .idle {
            extendedSequence = Int64(sequence)
            position = Int64(timestamp)
            beginStream(ssrc: packetSSRC, sequence: extendedSequence, position: position, arrival: arrivalUnits)
            highestDuration = Int64(sampleCount)
        } else {
            if packetSSRC != ssrc {
                if packetSSRC == previousSSRC {
                    counts.packetsLate += 1
                    return .late
                }
                restartReason = .newSource
            }
            let sequenceDelta = Int64(Int16(bitPattern: sequence &- UInt16(truncatingIfNeeded: highestSequence)))
            extendedSequence = highestSequence + sequenceDelta
            position =
                highestPosition + Int64(Int32(bitPattern: timestamp &- UInt32(truncatingIfNeeded: highestPosition)))
            if restartReason == nil, sequenceDelta > 3000 || sequenceDelta < -3000 {
                restartReason = .sequenceJump
            }
            if restartReason == nil, sequenceDelta > 0 {
                let transitChange = (position - highestPosition) - (arrivalUnits - highestArrival)
                if transitChange > jumpThreshold || transitChange < -jumpThreshold { restartReason = .timestampJump }
            }
            if let reason = restartReason {
                restart(previous: reason == .newSource ? ssrc : nil)
                extendedSequence = Int64(sequence)
                position = Int64(timestamp)
                beginStream(ssrc: packetSSRC, sequence: extendedSequence, position: position, arrival: arrivalUnits)
                highestDuration = Int64(sampleCount)
            } else if sequenceDelta > 0 {
                // The packet right after the newest starts inside it: the sender's timestamps
                // stepped by less than a packet (GStreamer's first Opus packet steps by 648, its
                // duration less the encoder's pre-skip). Sequence numbers say nothing is missing,
                // so our timeline continues where that packet ends instead of dropping this one as
                // late and concealing.
                let newestEnd = highestPosition + highestDuration
                if sequenceDelta == 1, position > highestPosition, position < newestEnd {
                    previousOffset = positionOffset
                    offsetSequence = extendedSequence
                    positionOffset += newestEnd - position
                }
                highestDuration = Int64(sampleCount)
                seenMask = sequenceDelta >= 64 ? 1 : (seenMask << UInt64(sequenceDelta)) | 1
                highestSequence = extendedSequence
                highestPosition = position
                highestArrival = arrivalUnits
            } else {
                let age = -sequenceDelta
                guard age < 64 else {
                    counts.packetsLate += 1
                    return .late
                }
                let bit: UInt64 = 1 << UInt64(age)
                if seenMask & bit != 0 {
                    counts.packetsDuplicate += 1
                    return .duplicate
                }
                seenMask |= bit
            }
        }
        position += extendedSequence >= offsetSequence ? positionOffset : previousOffset
        measure(position: position, arrival: arrivalUnits)
        // After a restart `coverEnd` is nil: the first packet of a stream is never late.
        if let end = coverEnd, position < end {
            counts.packetsLate += 1
            return .late
        }
        guard freeCount > 0 else {
            counts.packetsRefused += 1
            return .refused(.full)
        }
        freeCount -= 1
        let slot = free[freeCount]
        slots[slot] = Slot(
            sequence: sequence, extendedSequence: extendedSequence, timestamp: timestamp, position: position,
            duration: Int64(sampleCount), marker: marker, byteCount: payload.count)
        if let base = payload.baseAddress, payload.count > 0 {
            // SAFETY: the slot's region is `maximumPayload` bytes and `payload.count <= maximumPayload`.
            (arena + slot * maximumPayload).copyMemory(from: base, byteCount: payload.count)
        }
        // Insertion into the sorted index: packets arrive nearly in order, so search from the back.
        var i = orderCount
        while i > 0, slots[order[i - 1]].position > position {
            order[i] = order[i - 1]
            i -= 1
        }
        order[i] = slot
        orderCount += 1
        return restartReason.map { .restarted($0) } ?? .accepted
    }

    /// A packet of this stream with another payload type (an RFC 4733 event between the audio
    /// packets): its sequence number is not a loss. Not counted as received audio; a duplicate or
    /// one from another SSRC changes nothing. Real-time safe.
    public mutating func noteOtherPayload(sequence: UInt16, ssrc packetSSRC: UInt32) {
        guard state != .idle, packetSSRC == ssrc else { return }
        let delta = Int64(Int16(bitPattern: sequence &- UInt16(truncatingIfNeeded: highestSequence)))
        let extended = highestSequence + delta
        if delta > 0 {
            guard delta < 3000 else { return }
            seenMask = delta >= 64 ? 1 : (seenMask << UInt64(delta)) | 1
            highestSequence = extended
        } else {
            let age = -delta
            guard age < 64 else { return }
            let bit: UInt64 = 1 << UInt64(age)
            guard seenMask & bit == 0 else { return }
            seenMask |= bit
        }
        if let last = lastHandedSequence, extended <= last {
            // Playout passed it already and counted it lost.
            counts.packetsLost = max(0, counts.packetsLost - 1)
        } else {
            if foreignCount == Self.foreignCapacity {
                foreignCount -= 1
                foreign[0] = foreign[foreignCount]
            }
            foreign[foreignCount] = extended
            foreignCount += 1
        }
    }

    /// Answers for the next 20 ms block: advances the playout point by one block when playing.
    /// Read the items with `item(_:)` before the next `insert`, `pull` or `reset`. Real-time safe.
    public mutating func pull() -> Block {
        releaseHanded()
        itemCount = 0
        switch state {
        case .idle:
            return Block(kind: .idle, timestamp: 0, itemCount: 0)
        case .filling:
            guard orderCount > 0 else {
                level = 0
                return Block(kind: .filling, timestamp: 0, itemCount: 0)
            }
            let first = slots[order[0]].position
            level = bufferedEnd() - first
            guard level >= target else { return Block(kind: .filling, timestamp: 0, itemCount: 0) }
            // Resume (or start) at the first buffered packet: a pause's gap is not played.
            state = .playing
            playout = first
            coverEnd = first
            highRun = 0
            waitRun = 0
        case .playing:
            break
        }
        var end = coverEnd!
        level = max(bufferedEnd(), end) - playout
        highRun = level >= target + blockUnits ? highRun + 1 : 0
        adapt(coverEnd: &end)
        let blockStart = playout
        fill(coverEnd: &end)
        coverEnd = end
        return Block(kind: .playing, timestamp: UInt32(truncatingIfNeeded: blockStart), itemCount: itemCount)
    }

    /// The `index`th item of the last pull's block. Real-time safe.
    public func item(_ index: Int) -> Item {
        precondition(index >= 0 && index < itemCount, "item index out of range")
        return items[index]
    }

    /// Forgets the stream (counters are kept): the next packet starts a new one without counting a
    /// restart. Real-time safe.
    public mutating func reset() {
        restart(previous: nil, counted: false)
        state = .idle
    }

    /// Counters and gauges. Real-time safe.
    public var statistics: Statistics {
        var s = counts
        s.jitter = UInt32(truncatingIfNeeded: jitterQ4 >> 4)
        s.jitterMilliseconds = Int((jitterQ4 >> 4) * 1000 / Int64(clockRate))
        s.bufferMilliseconds = Int(level * 1000 / Int64(clockRate))
        s.targetMilliseconds = Int(target * 1000 / Int64(clockRate))
        s.concealedMilliseconds = Int(concealedUnits * 1000 / Int64(clockRate))
        s.skippedMilliseconds = Int(skippedUnits * 1000 / Int64(clockRate))
        s.extendedHighestSequence = state == .idle ? 0 : UInt32(truncatingIfNeeded: highestSequence)
        return s
    }

    // MARK: Insert helpers

    /// Samples of the clock in `ns` nanoseconds, split so that no product overflows.
    func units(ofNanoseconds ns: Int64) -> Int64 {
        let rate = Int64(clockRate)
        return (ns / 1_000_000_000) * rate + (ns % 1_000_000_000) * rate / 1_000_000_000
    }

    mutating func beginStream(ssrc newSSRC: UInt32, sequence: Int64, position: Int64, arrival: Int64) {
        state = .filling
        (positionOffset, previousOffset, offsetSequence) = (0, 0, sequence)
        ssrc = newSSRC
        highestSequence = sequence
        highestPosition = position
        highestArrival = arrival
        firstExtendedSequence = sequence
        seenMask = 1
    }

    /// Drops everything buffered and the stream's history; `previous` is remembered as a replaced SSRC.
    mutating func restart(previous: UInt32?, counted: Bool = true) {
        if counted { counts.restarts += 1 }
        if let previous { previousSSRC = previous }
        releaseHanded()
        for i in 0..<orderCount {
            free[freeCount] = order[i]
            freeCount += 1
        }
        orderCount = 0
        itemCount = 0
        coverEnd = nil
        lastHandedSequence = nil
        foreignCount = 0
        playout = 0
        level = 0
        highRun = 0
        waitRun = 0
        delayCount = 0
        delayNext = 0
        target = minimumDelay
        lastTransit = nil
        if previous != nil { jitterQ4 = 0 }
    }

    /// Updates the RFC 3550 jitter and the target delay with one packet's transit delay.
    mutating func measure(position: Int64, arrival: Int64) {
        let transit = arrival - position
        if let last = lastTransit {
            let d = abs(transit - last)
            jitterQ4 += d - ((jitterQ4 + 8) >> 4)
        }
        lastTransit = transit
        delays[delayNext] = transit
        delayNext = delayNext + 1 == windowCapacity ? 0 : delayNext + 1
        if delayCount < windowCapacity { delayCount += 1 }
        var low = Int64.max
        var high = Int64.min
        for i in 0..<delayCount {
            low = min(low, delays[i])
            high = max(high, delays[i])
        }
        target = min(max(blockUnits + (high - low), minimumDelay), maximumDelay)
    }

    // MARK: Pull helpers

    mutating func releaseHanded() {
        for i in 0..<handedCount {
            free[freeCount] = handed[i]
            freeCount += 1
        }
        handedCount = 0
    }

    /// The end of the newest buffered audio, or `Int64.min` when nothing is buffered.
    func bufferedEnd() -> Int64 {
        var end = Int64.min
        for i in 0..<orderCount {
            let s = slots[order[i]]
            end = max(end, s.position + s.duration)
        }
        return end
    }

    func packet(_ slot: Int) -> Packet {
        let s = slots[slot]
        return Packet(
            sequence: s.sequence, timestamp: s.timestamp, marker: s.marker, sampleCount: Int(s.duration),
            payload: UnsafeRawBufferPointer(start: arena + slot * maximumPayload, count: s.byteCount))
    }

    /// Removes the first buffered packet from the index and returns its slot.
    mutating func popFirst() -> Int {
        let slot = order[0]
        for i in 1..<orderCount { order[i - 1] = order[i] }
        orderCount -= 1
        return slot
    }

    /// Playout passed `sequence`: the sequence numbers skipped since the last one passed are lost.
    mutating func passSequence(_ sequence: Int64) {
        if let last = lastHandedSequence {
            if sequence > last + 1 {
                var missing = sequence - last - 1
                var i = 0
                while i < foreignCount {
                    let f = foreign[i]
                    guard f < sequence else {
                        i += 1
                        continue
                    }
                    if f > last { missing -= 1 }
                    foreignCount -= 1
                    foreign[i] = foreign[foreignCount]
                }
                counts.packetsLost += Int(missing)
            }
            lastHandedSequence = max(last, sequence)
        } else {
            lastHandedSequence = sequence
        }
    }

    /// Drops buffered packets that start before `end` (they overlap audio already handed out).
    mutating func dropOverlapping(before end: Int64) {
        while orderCount > 0, slots[order[0]].position < end {
            let slot = popFirst()
            passSequence(slots[slot].extendedSequence)
            counts.packetsDropped += 1
            free[freeCount] = slot
            freeCount += 1
        }
    }

    /// Talk-spurt re-adaptation and shrinking, only at a packet boundary (no residue).
    mutating func adapt(coverEnd end: inout Int64) {
        guard end == playout else { return }
        // Bounded by the buffered packets: each pass skips one packet or a gap.
        for _ in 0...capacity {
            dropOverlapping(before: end)
            guard orderCount > 0 else { return }
            let first = slots[order[0]]
            let gap = first.position - end
            if gap > 0 {
                let spurt =
                    first.marker || (lastHandedSequence.map { first.extendedSequence == $0 + 1 } ?? false)
                let excess = level - target
                guard excess > 0 else { return }
                let step: Int64
                if spurt {
                    step = min(gap, excess)
                } else if level - min(gap, blockUnits) >= maximumDelay {
                    step = min(gap, excess)
                } else if highRun >= shrinkAfter, level - min(gap, blockUnits) >= target {
                    step = min(gap, blockUnits)
                    highRun = 0
                } else {
                    return
                }
                end += step
                playout += step
                level -= step
                skippedUnits += step
                if spurt { return }
            } else {
                let afterSkip = level - first.duration
                guard afterSkip >= maximumDelay || (highRun >= shrinkAfter && afterSkip >= target) else { return }
                if afterSkip < maximumDelay { highRun = 0 }
                let slot = popFirst()
                passSequence(first.extendedSequence)
                counts.packetsDropped += 1
                free[freeCount] = slot
                freeCount += 1
                end += first.duration
                playout += first.duration
                level = afterSkip
                skippedUnits += first.duration
            }
        }
    }

    mutating func emit(_ item: Item) {
        items[itemCount] = item
        itemCount += 1
    }

    /// Hands out items until the timeline covers the block `[playout, playout + B)`, then advances.
    mutating func fill(coverEnd end: inout Int64) {
        let blockEnd = playout + blockUnits
        while end < blockEnd, itemCount < Self.itemCapacity {
            dropOverlapping(before: end)
            if orderCount > 0, slots[order[0]].position == end {
                let slot = popFirst()
                let s = slots[slot]
                passSequence(s.extendedSequence)
                handed[handedCount] = slot
                handedCount += 1
                emit(.packet(packet(slot)))
                end += s.duration
                waitRun = 0
            } else if orderCount == 0 || level < target {
                // Wait: conceal without advancing the timeline, so the delay grows by what is
                // concealed and the missing packet can still play.
                let n = blockEnd - end
                emit(.conceal(sampleCount: Int(n), following: nil))
                concealedUnits += n
                playout = end
                // Only an empty buffer counts towards a pause: waiting for a reordered packet while
                // later ones arrive is not a silence, however long the target makes it.
                waitRun = orderCount == 0 ? waitRun + 1 : 0
                if waitRun >= pauseAfter {
                    state = .filling
                    waitRun = 0
                }
                return
            } else {
                let next = slots[order[0]].position
                let gapEnd = min(next, blockEnd)
                let n = gapEnd - end
                emit(.conceal(sampleCount: Int(n), following: gapEnd == next ? packet(order[0]) : nil))
                concealedUnits += n
                end = gapEnd
            }
        }
        playout = blockEnd
    }
}
