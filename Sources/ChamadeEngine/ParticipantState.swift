import ChamadeCore
import ChamadeDSP
import Synchronization

/// A mark's place in a participant's inbound stream: it is played once the tick has taken every
/// sample before `position` (an index of the inbound ring).
struct MarkRecord: Sendable {
    var position: Int
    var id: UInt64
}

/// The shared conversion of a room's total to one receive rate: one converter per rate per room,
/// not one per listener (conversion is linear, so a listener hears convert(total) − convert(own)).
/// Created off the tick, handed over by a command, retired off the tick.
final class RateLane: @unchecked Sendable {
    // SAFETY: touched only by the tick that owns the room, after the command that handed it over.
    let rate: SampleRate
    var converter: SampleRateConverter
    /// convert(total) for the current tick, in libsamplerate's Float scale.
    let converted: UnsafeMutableBufferPointer<Float>
    /// `converted` rounded to Int16: what every silent listener at this rate hears.
    let shared: UnsafeMutableBufferPointer<Int16>
    /// Participants at this rate in the room (tick-owned count).
    var participantCount = 0
    /// The tick `converted` was last computed for; `sharedTick` likewise for `shared`.
    var computedTick: UInt64 = 0
    var sharedTick: UInt64 = 0
    /// Consecutive ticks the total was silent; once past `drainBlocks` the output is exactly zero.
    var silentBlocks: Int
    let drainBlocks: Int

    init(native: SampleRate, rate: SampleRate, quality: ConverterQuality) throws(SampleRateConverter.Error) {
        self.rate = rate
        self.converter = try SampleRateConverter(from: native, to: rate, quality: quality)
        self.converted = .allocate(capacity: rate.blockSampleCount)
        converted.initialize(repeating: 0)
        self.shared = .allocate(capacity: rate.blockSampleCount)
        shared.initialize(repeating: 0)
        self.drainBlocks = drainBlockCount(delays: [converter.delaySampleCount], blocks: [rate.blockSampleCount])
        self.silentBlocks = drainBlocks
    }

    deinit {
        converted.deallocate()
        shared.deallocate()
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

/// Everything the tick keeps for one participant in one room: its ring ends on the tick side,
/// its converters and its buffers. Created off the tick (it allocates), handed to the tick by a
/// command, and retired to a non-real-time thread that frees it.
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
    var inConverter: SampleRateConverter
    /// Converts this participant's own row back to its rate, only while it is contributing.
    var outConverter: SampleRateConverter
    /// Set when the participant contributed without receiving: its output converter missed blocks
    /// and must start clean (as a private converter created now would) when it receives again.
    var outConverterStale = false
    /// The lane converting the room's total to this participant's rate (nil at the native rate).
    var lane: Unmanaged<RateLane>?

    let drainBlocks: Int
    /// Consecutive ticks whose input was silent (nothing queued, or only exact zeros); the participant
    /// contributes while this is < `drainBlocks`. Converting zeros from a drained converter gives
    /// exactly zero, so a participant streaming digital silence costs no conversion.
    var silentBlocks: Int
    /// Consecutive ticks that found nothing queued (data presence, not content): tells a stream
    /// that underran from one that ended.
    var emptyTicks = 2
    var pendingMark: MarkRecord?
    /// Samples of silence the tick inserted because the stream underran mid-flow (a chunk arriving a
    /// hair after its tick). Up to that many exactly-zero samples may later be skipped at the head of
    /// the queue, so one late chunk does not cost every later chunk a block of latency.
    var underrunDebt = 0
    var seenClearRequest: UInt64 = 0

    let inBlock: UnsafeMutableBufferPointer<Int16>
    let row: UnsafeMutableBufferPointer<Int16>
    let outBlock: UnsafeMutableBufferPointer<Int16>
    let floatIn: UnsafeMutableBufferPointer<Float>
    let floatOut: UnsafeMutableBufferPointer<Float>

    // Shared with the I/O side.
    let receiving: Atomic<Bool>
    /// Sequence number of the newest clear request; `clearBefore` is the inbound index it clears to.
    let clearRequest = Atomic<UInt64>(0)
    let clearBefore = Atomic<Int>(0)
    /// Blocks the tick could not queue because the outbound ring was full.
    let outboundRefused = Atomic<Int>(0)
    /// Blocks the tick queued.
    let outboundQueued = Atomic<Int>(0)

    var contributing: Bool { silentBlocks < drainBlocks }

    /// Outbound queue: 64 blocks (1.28 s); the reader keeps it to the newest 50 (1 s).
    static let outboundBlockCapacity = 64
    /// Mark queue per participant.
    static let markCapacity = 4096

    init(
        id: ParticipantID, rate: SampleRate, native: SampleRate, receiving: Bool, quality: ConverterQuality,
        playoutSeconds: Int
    ) throws(SampleRateConverter.Error) {
        self.id = id
        self.rate = rate
        self.native = native
        self.inConverter = try SampleRateConverter(from: rate, to: native, quality: quality)
        self.outConverter = try SampleRateConverter(from: native, to: rate, quality: quality)
        // The queue holds at least `playoutSeconds`, plus one block of slack.
        self.inbound = SPSCRing(capacity: rate.hertz * playoutSeconds + rate.blockSampleCount)
        self.marks = SPSCRing(capacity: Self.markCapacity)
        self.outbound = BlockRing(blockSampleCount: rate.blockSampleCount, blockCapacity: Self.outboundBlockCapacity)
        self.inConsumer = inbound.takeConsumer()
        self.markConsumer = marks.takeConsumer()
        self.outProducer = outbound.takeProducer()
        self.receiving = Atomic(receiving)
        self.drainBlocks = drainBlockCount(
            delays: [inConverter.delaySampleCount, outConverter.delaySampleCount],
            blocks: [native.blockSampleCount, rate.blockSampleCount])
        self.silentBlocks = drainBlocks
        let widest = max(rate.blockSampleCount, native.blockSampleCount)
        func zeroed<T: Numeric & BitwiseCopyable>(_ n: Int, _: T.Type) -> UnsafeMutableBufferPointer<T> {
            let b = UnsafeMutableBufferPointer<T>.allocate(capacity: n)
            b.initialize(repeating: 0)
            return b
        }
        self.inBlock = zeroed(rate.blockSampleCount, Int16.self)
        self.row = zeroed(native.blockSampleCount, Int16.self)
        self.outBlock = zeroed(rate.blockSampleCount, Int16.self)
        self.floatIn = zeroed(widest, Float.self)
        self.floatOut = zeroed(widest, Float.self)
    }

    deinit {
        inBlock.deallocate()
        row.deallocate()
        outBlock.deallocate()
        floatIn.deallocate()
        floatOut.deallocate()
    }
}
