import ChamadeCore
import ChamadeDSP
import Synchronization

/// A mark's place in a participant's inbound stream: it is played once the tick has taken every
/// sample before `position` (an index of the inbound ring).
struct MarkRecord: Sendable {
    var position: Int
    var id: UInt64
}

/// The participants of a room at one non-native rate, and the two converters they share.
///
/// Conversion is linear, so a group needs no converter per member: its members' blocks are summed
/// exactly at their own rate (`sum`, 32 bits), that sum is converted up to the room's rate once per
/// tick (`up`, added to the room's total), and what everyone outside the group sent
/// (`total − up(sum)`) is converted down once per tick (`down`). A member hears
/// `saturate(sum − own + down)`: the rest of its group bit for bit with no delay, everyone else
/// through exactly the converters a private chain would use. So a room costs at most two
/// conversions per non-native rate per tick, whatever the number of talkers or listeners.
///
/// Each converter runs only while its input can be non-zero or its filter is still draining;
/// after `upDrainBlocks` / `downDrainBlocks` silent blocks its output is exactly zero and its state
/// equals a fresh converter's, so it is skipped (silence costs nothing).
///
/// Created off the tick (it allocates the converters), handed over by a command, kept by the room
/// while it has members or its up-converter is still draining (so a member leaving or changing rate
/// never cuts a filter tail that others hear), then retired off the tick.
final class RateGroup: @unchecked Sendable {
    // SAFETY: touched only by the tick that owns the room, after the command that handed it over.
    let rate: SampleRate
    /// rate → native: the group's sum, into the room's total.
    var up: SampleRateConverter
    /// native → rate: everyone outside the group, for its members.
    var down: SampleRateConverter

    /// Σ of the members' blocks that had sound this tick (valid when `sumTick` is this tick).
    let sum: UnsafeMutableBufferPointer<Int32>
    /// up(sum), rounded, at the native rate (valid while `upActive`).
    let upBlock: UnsafeMutableBufferPointer<Int32>
    /// down(total − up(sum)), rounded, at the group's rate (valid while `downLive`).
    let downBlock: UnsafeMutableBufferPointer<Int32>
    /// sum + downBlock, when both are live.
    let mix: UnsafeMutableBufferPointer<Int32>
    /// saturate(heard): what every member that did not talk this tick hears.
    let shared: UnsafeMutableBufferPointer<Int16>
    let floatIn: UnsafeMutableBufferPointer<Float>
    let floatOut: UnsafeMutableBufferPointer<Float>

    /// Participants in the group (tick-owned count).
    var memberCount = 0
    /// The tick `sum` was last started for (a member had sound); `receiveTick`: a member received.
    var sumTick: UInt64 = 0
    var receiveTick: UInt64 = 0
    /// Consecutive ticks without sound in the group; the up-converter runs while < `upDrainBlocks`.
    var upSilentBlocks: Int
    let upDrainBlocks: Int
    var upActive = false
    /// The tick the down-converter was last visited for (reset when a tick was missed: nobody in
    /// the group received, so it missed blocks and must start clean, as a private converter would).
    var downTick: UInt64 = 0
    /// Consecutive ticks nobody outside the group could be heard; runs while < `downDrainBlocks`.
    var downSilentBlocks: Int
    let downDrainBlocks: Int
    var downLive = false
    /// What members hear before subtracting their own block this tick (nil: exact silence).
    var heard: UnsafeMutableBufferPointer<Int32>?
    var sharedTick: UInt64 = 0

    init(native: SampleRate, rate: SampleRate, quality: ConverterQuality) throws(SampleRateConverter.Error) {
        self.rate = rate
        self.up = try SampleRateConverter(from: rate, to: native, quality: quality)
        self.down = try SampleRateConverter(from: native, to: rate, quality: quality)
        func zeroed<T: Numeric & BitwiseCopyable>(_ n: Int, _: T.Type) -> UnsafeMutableBufferPointer<T> {
            let b = UnsafeMutableBufferPointer<T>.allocate(capacity: n)
            b.initialize(repeating: 0)
            return b
        }
        let n = rate.blockSampleCount
        sum = zeroed(n, Int32.self)
        upBlock = zeroed(native.blockSampleCount, Int32.self)
        downBlock = zeroed(n, Int32.self)
        mix = zeroed(n, Int32.self)
        shared = zeroed(n, Int16.self)
        let widest = max(n, native.blockSampleCount)
        floatIn = zeroed(widest, Float.self)
        floatOut = zeroed(widest, Float.self)
        upDrainBlocks = drainBlockCount(delays: [up.delaySampleCount], blocks: [native.blockSampleCount])
        downDrainBlocks = drainBlockCount(delays: [down.delaySampleCount], blocks: [n])
        upSilentBlocks = upDrainBlocks
        downSilentBlocks = downDrainBlocks
    }

    deinit {
        sum.deallocate()
        upBlock.deallocate()
        downBlock.deallocate()
        mix.deallocate()
        shared.deallocate()
        floatIn.deallocate()
        floatOut.deallocate()
    }
}

/// Blocks of silence after which a converter's output is exactly zero again: its filter reaches at
/// most twice its delay back, plus the FIFO margin, so two blocks beyond that are more than enough.
func drainBlockCount(delays: [Int], blocks: [Int]) -> Int {
    var n = 1
    for (delay, block) in zip(delays, blocks) where delay > 0 {
        n += 2 + (2 * delay + block - 1) / block
    }
    return n
}

/// Everything the tick keeps for one participant in one room: its ring ends on the tick side and
/// its block buffers (its conversions belong to its rate group). Created off the tick (it
/// allocates), handed to the tick by a command, and retired to a non-real-time thread that frees it.
///
/// The I/O side of the same rings lives in `Participant` (the public handle).
final class ParticipantState: @unchecked Sendable {
    // SAFETY: the tick-side fields below are used only by the clock thread of the room that holds
    // this state; the I/O thread touches only the rings' other ends and the atomics.
    let id: ParticipantID
    let rate: SampleRate
    let native: SampleRate

    let inbound: SPSCRing<Int16>
    let marks: SPSCRing<MarkRecord>
    let outbound: BlockRing

    var inConsumer: SPSCRing<Int16>.Consumer
    var markConsumer: SPSCRing<MarkRecord>.Consumer
    var outProducer: BlockRing.Producer
    /// The group of this participant's rate (nil at the native rate). Held by the room.
    var group: Unmanaged<RateGroup>?

    /// Whether this tick's block had sound (a non-zero sample): only then is it added to the mix,
    /// and only then does the participant need its own block subtracted. Digital silence costs nothing.
    var talking = false
    /// The receive flag, sampled once at the start of the tick.
    var receivingThisTick = false
    /// A rate change in progress (see `RoomCore.applyCommands`): in the tick that applies it, the
    /// state being replaced plays what it still has queued of one block, faded out, and is then
    /// removed, while its successor fades its first block in. The two paths' delays differ (exact
    /// at one rate, a filter's delay at another), so switching without fades would step.
    var leaving = false
    /// Whether this state's first block is still to be faded in.
    var fadeInPending = false
    /// Samples taken from the playout queue this tick.
    var takenThisTick = 0
    /// Consecutive ticks that found nothing queued (data presence, not content): tells a stream
    /// that underran from one that ended.
    var emptyTicks = 2
    var pendingMark: MarkRecord?
    /// Samples of silence the tick inserted because the stream underran mid-flow (a chunk arriving a
    /// hair after its tick). Up to that many exactly-zero samples may later be skipped at the head of
    /// the queue, so one late chunk does not cost every later chunk a block of latency.
    var underrunDebt = 0
    var seenClearRequest: UInt64 = 0
    /// The inbound stream position of this tick's block (for a room tap).
    var blockStreamPosition = 0

    /// This tick's block at the participant's rate (zero-padded when it talked and underran).
    let inBlock: UnsafeMutableBufferPointer<Int16>
    let outBlock: UnsafeMutableBufferPointer<Int16>

    // Shared with the I/O side.
    let receiving: Atomic<Bool>
    /// Sequence number of the newest clear request; `clearBefore` is the inbound index it clears to.
    let clearRequest = Atomic<UInt64>(0)
    let clearBefore = Atomic<Int>(0)
    /// Blocks the tick could not queue because the outbound ring was full.
    let outboundRefused = Atomic<Int>(0)
    /// Blocks the tick queued.
    let outboundQueued = Atomic<Int>(0)

    /// Outbound queue: 64 blocks (1.28 s); the reader keeps it to the newest 50 (1 s).
    static let outboundBlockCapacity = 64
    /// Mark queue per participant.
    static let markCapacity = 4096

    init(id: ParticipantID, rate: SampleRate, native: SampleRate, receiving: Bool, playoutSeconds: Int) {
        self.id = id
        self.rate = rate
        self.native = native
        // The queue holds at least `playoutSeconds`, plus one block of slack.
        self.inbound = SPSCRing(capacity: rate.hertz * playoutSeconds + rate.blockSampleCount)
        self.marks = SPSCRing(capacity: Self.markCapacity)
        self.outbound = BlockRing(blockSampleCount: rate.blockSampleCount, blockCapacity: Self.outboundBlockCapacity)
        self.inConsumer = inbound.takeConsumer()
        self.markConsumer = marks.takeConsumer()
        self.outProducer = outbound.takeProducer()
        self.receiving = Atomic(receiving)
        inBlock = .allocate(capacity: rate.blockSampleCount)
        inBlock.initialize(repeating: 0)
        outBlock = .allocate(capacity: rate.blockSampleCount)
        outBlock.initialize(repeating: 0)
    }

    deinit {
        inBlock.deallocate()
        outBlock.deallocate()
    }
}
