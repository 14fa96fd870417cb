public import ChamadeCore
import Synchronization

/// What a tap hands on for one talker's block: who, when, at which rate, and where in its inbound
/// stream it starts.
public struct TapBlock: Sendable, Equatable {
    public var participant: ParticipantID
    /// The room tick that played it.
    public var tick: UInt64
    public var rate: SampleRate
    /// The inbound stream position (samples pushed to the participant before it) of its first
    /// sample: lets a reader tell audio the server itself queued (a `say`) from the agent's.
    public var streamPosition: Int
    public var sampleCount: Int
}

/// A copy of every talker's blocks as its room plays them, for speech recognition (SPEC §7): the
/// tick pushes each block that had sound (silence costs nothing) into two SPSC rings, samples and
/// headers, and never waits; a reader on another thread takes them in tick order.
///
/// A full tap loses the block, counted in `lostBlockCount` (the reader drains it every few ticks,
/// so this means the reader stalled; it then drops its own oldest audio too).
public final class RoomTap: @unchecked Sendable {
    // SAFETY: the producers are used only by the tick of the room holding the tap; the consumers
    // only by the one reader (`read`), which the owner serialises.
    let samples: SPSCRing<Int16>
    let headers: SPSCRing<TapBlock>
    var sampleProducer: SPSCRing<Int16>.Producer
    var headerProducer: SPSCRing<TapBlock>.Producer
    private var sampleConsumer: SPSCRing<Int16>.Consumer
    private var headerConsumer: SPSCRing<TapBlock>.Consumer
    /// Blocks (20 ms each) the tick could not hand over.
    let lost = Atomic<Int>(0)
    public var lostBlockCount: Int {
        // ORDERING: relaxed; a statistic.
        lost.load(ordering: .relaxed)
    }
    /// The reader's copy of one block.
    private var scratch = [Int16](repeating: 0, count: 960)

    /// A tap holding `seconds` of one talker at 48 kHz, shared by the room's talkers (8 s: 0.8 s of
    /// 20 talkers at 16 kHz, 40 times the reader's period): time for its reader to be late
    /// without loss.
    public init(seconds: Int = 8) {
        samples = SPSCRing(capacity: 48_000 * seconds, prefault: true)
        headers = SPSCRing(capacity: 50 * seconds * 8, prefault: true)
        sampleProducer = samples.takeProducer()
        headerProducer = headers.takeProducer()
        sampleConsumer = samples.takeConsumer()
        headerConsumer = headers.takeConsumer()
    }

    /// Tick side: hands over one block. Real-time safe (copies, never allocates or waits).
    func push(_ block: UnsafeBufferPointer<Int16>, header: TapBlock) {
        guard headerProducer.availableToWrite() > 0, sampleProducer.availableToWrite() >= block.count else {
            // ORDERING: relaxed; a statistic.
            lost.wrappingAdd(1, ordering: .relaxed)
            return
        }
        _ = sampleProducer.write(block)
        _ = headerProducer.push(header)
    }

    /// Reader side: every block handed over so far, in tick order, each with its samples. One
    /// reader at a time.
    public func read(_ body: (TapBlock, UnsafeBufferPointer<Int16>) -> Void) {
        while let header = headerConsumer.pop() {
            if scratch.count < header.sampleCount { scratch = [Int16](repeating: 0, count: header.sampleCount) }
            scratch.withUnsafeMutableBufferPointer { buffer in
                let part = UnsafeMutableBufferPointer(rebasing: buffer[0..<header.sampleCount])
                // The samples were written before the header was published.
                _ = sampleConsumer.read(into: part)
                body(header, UnsafeBufferPointer(part))
            }
        }
    }
}
