/// A single-producer single-consumer ring of fixed-size blocks, each stamped with the tick that
/// made it: a participant's outbound queue (clock thread → I/O thread).
///
/// The consumer skips blocks older than a caller-given stamp, so a client that stopped reading for
/// a while resumes with fresh audio, never stale audio; a full ring refuses the newest block. Both
/// losses are counted by the caller. Capacity is fixed at creation.
///
/// Real-time safe after `init`.
public final class BlockRing: @unchecked Sendable {
    // SAFETY: the sample ring carries the synchronisation; a stamp slot is written by the producer
    // before the release that publishes its block and read by the consumer after the acquire that
    // sees it, and rewritten only after the consumer has released the block.
    public let blockSampleCount: Int
    public let blockCapacity: Int
    @usableFromInline let samples: SPSCRing<Int16>
    @usableFromInline let stamps: UnsafeMutablePointer<UInt64>

    /// A ring of `blockCapacity` blocks of `blockSampleCount` samples. Allocates.
    public init(blockSampleCount: Int, blockCapacity: Int) {
        precondition(blockSampleCount > 0 && blockCapacity > 0)
        self.blockSampleCount = blockSampleCount
        self.blockCapacity = blockCapacity
        // The tick writes here: touch the pages now so it never takes a page fault.
        self.samples = SPSCRing(capacity: blockSampleCount * blockCapacity, prefault: true)
        self.stamps = .allocate(capacity: blockCapacity)
        stamps.initialize(repeating: 0, count: blockCapacity)
    }

    deinit { stamps.deallocate() }

    public func takeProducer() -> Producer { Producer(ring: self, samples: samples.takeProducer()) }
    public func takeConsumer() -> Consumer { Consumer(ring: self, samples: samples.takeConsumer()) }

    /// Blocks queued now (any thread; exact only on the consumer's).
    @inlinable public func queuedBlockCount() -> Int {
        (samples.writtenCount() - samples.readCount()) / blockSampleCount
    }

    public struct Producer: ~Copyable, @unchecked Sendable {
        @usableFromInline let ring: BlockRing
        @usableFromInline var samples: SPSCRing<Int16>.Producer

        init(ring: BlockRing, samples: consuming SPSCRing<Int16>.Producer) {
            self.ring = ring
            self.samples = samples
        }

        /// Appends one block stamped `stamp`; false (and nothing written) when the ring is full.
        @inlinable
        public mutating func push(_ block: UnsafeBufferPointer<Int16>, stamp: UInt64) -> Bool {
            precondition(block.count == ring.blockSampleCount, "push exactly one block")
            guard samples.availableToWrite() >= block.count else { return false }
            ring.stamps[(samples.tail / ring.blockSampleCount) % ring.blockCapacity] = stamp
            return samples.write(block) == block.count
        }
    }

    public struct Consumer: ~Copyable, @unchecked Sendable {
        @usableFromInline let ring: BlockRing
        @usableFromInline var samples: SPSCRing<Int16>.Consumer

        init(ring: BlockRing, samples: consuming SPSCRing<Int16>.Consumer) {
            self.ring = ring
            self.samples = samples
        }

        /// Blocks ready now.
        @inlinable public mutating func availableBlockCount() -> Int {
            samples.availableToRead() / ring.blockSampleCount
        }

        /// Takes the oldest block stamped at least `minimumStamp`, first discarding any older ones.
        /// Returns whether a block was copied and how many stale blocks were discarded.
        @inlinable
        public mutating func pull(into block: UnsafeMutableBufferPointer<Int16>, minimumStamp: UInt64 = 0)
            -> (pulled: Bool, discarded: Int)
        {
            precondition(block.count == ring.blockSampleCount, "pull exactly one block")
            var discarded = 0
            while samples.availableToRead() >= block.count {
                let stamp = ring.stamps[(samples.head / ring.blockSampleCount) % ring.blockCapacity]
                if stamp < minimumStamp {
                    _ = samples.discard(upTo: block.count)
                    discarded += 1
                    continue
                }
                return (samples.read(into: block) == block.count, discarded)
            }
            return (false, discarded)
        }

        /// Drops every queued block; returns how many.
        @inlinable public mutating func discardAll() -> Int { samples.discardAll() / ring.blockSampleCount }
    }
}
