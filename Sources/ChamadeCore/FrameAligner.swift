/// Re-aligns a PCM s16le byte stream, chunked any way, into exact 20 ms blocks.
///
/// Single-threaded composition of a `PCMStreamDecoder` and an `SPSCRing<Int16>` holding both of
/// its ends: the engine splits the same two halves across the I/O thread and the clock; replay
/// and tests use this type whole. Capacity is fixed at creation; what does not fit is refused
/// and counted, never overwriting what is queued.
///
/// Real-time safe after `init`.
public struct FrameAligner: ~Copyable {
    public let sampleRate: SampleRate
    @usableFromInline var decoder = PCMStreamDecoder()
    @usableFromInline var producer: SPSCRing<Int16>.Producer
    @usableFromInline var consumer: SPSCRing<Int16>.Consumer

    /// An aligner holding up to `capacitySampleCount` samples (default: 60 s). Allocates.
    public init(sampleRate: SampleRate, capacitySampleCount: Int? = nil) {
        self.sampleRate = sampleRate
        let ring = SPSCRing<Int16>(capacity: capacitySampleCount ?? sampleRate.hertz * 60)
        self.producer = ring.takeProducer()
        self.consumer = ring.takeConsumer()
    }

    /// Samples per block at this aligner's rate.
    @inlinable public var blockSampleCount: Int { sampleRate.blockSampleCount }

    /// Whole samples queued and not yet taken.
    @inlinable public mutating func queuedSampleCount() -> Int { consumer.availableToRead() }

    /// Appends a chunk of any size. Returns how many samples did not fit and were dropped.
    @inlinable
    @discardableResult
    public mutating func append(_ bytes: UnsafeRawBufferPointer) -> Int {
        decoder.decode(bytes, into: &producer).dropped
    }

    /// Fills `block` (exactly one block) when a whole block is queued; returns false otherwise,
    /// leaving the queue untouched.
    @inlinable
    public mutating func nextBlock(into block: UnsafeMutableBufferPointer<Int16>) -> Bool {
        precondition(block.count == blockSampleCount, "block must hold exactly one 20 ms block")
        guard consumer.availableToRead() >= block.count else { return false }
        return consumer.read(into: block) == block.count
    }

    /// Takes what is queued, up to one block, into the front of `block`, and zero-fills the rest
    /// (underrun plays silence, never stale audio). Returns how many real samples it took.
    @inlinable
    public mutating func nextBlockPaddingWithSilence(into block: UnsafeMutableBufferPointer<Int16>) -> Int {
        let taken = consumer.read(into: block)
        if taken < block.count {
            block.baseAddress!.advanced(by: taken).update(repeating: 0, count: block.count - taken)
        }
        return taken
    }

    /// Drops everything queued, including a pending odd byte. Returns the samples dropped.
    @inlinable
    public mutating func clear() -> Int {
        decoder.reset()
        return consumer.discardAll()
    }
}
