public import Synchronization

/// A wait-free single-producer single-consumer ring of fixed capacity, allocated once.
///
/// Create it, then take its two ends once each: `takeProducer()` for the writing thread and
/// `takeConsumer()` for the reading thread. The ends are `~Copyable`, so each has one owner.
/// A full ring refuses what does not fit and overwrites nothing; an empty ring yields nothing.
///
/// Indices grow monotonically (an `Int` does not wrap in the lifetime of a process at audio
/// rates: 2^63 samples at 48 kHz is 6 million years); the slot of index `i` is `i % capacity`.
/// Each end caches the opposite index and reloads it only when the cached value says the ring
/// is full (producer) or empty (consumer), so the common case touches no shared cache line.
///
/// Real-time safe: no operation allocates, locks or retains.
public final class SPSCRing<Element>: @unchecked Sendable {
    // SAFETY: @unchecked Sendable because the only shared mutable state is `head`/`tail` (atomics)
    // and the slots, whose ownership passes between the two ends through those atomics: a slot in
    // [head, tail) belongs to the consumer, every other slot to the producer.

    @usableFromInline let capacity: Int
    @usableFromInline let slots: UnsafeMutablePointer<Element>

    // Keep head and tail on separate cache lines (128 bytes covers adjacent-line prefetch).
    @usableFromInline let _padA: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    /// Next index to read. Written only by the consumer.
    @usableFromInline let head = Atomic<Int>(0)
    @usableFromInline let _padB: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    /// Next index to write. Written only by the producer.
    @usableFromInline let tail = Atomic<Int>(0)
    @usableFromInline let _padC: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    private let handedOut = Atomic<UInt8>(0)

    /// Allocates a ring that holds up to `capacity` elements. Not real-time safe (allocates).
    ///
    /// `prefault`: touch every page of the storage now, so that a real-time thread writing into it
    /// never takes a first-touch page fault (which can wait on the process's memory-map lock while
    /// another thread allocates). Use it for rings a tick writes into.
    public init(capacity: Int, prefault: Bool = false) {
        precondition(capacity > 0, "SPSCRing capacity must be positive")
        self.capacity = capacity
        self.slots = .allocate(capacity: capacity)
        if prefault {
            // SAFETY: the slots are uninitialised storage; writing bytes there initialises nothing
            // and is overwritten by real elements before any is read.
            UnsafeMutableRawPointer(slots).initializeMemory(
                as: UInt8.self, repeating: 0, count: capacity * MemoryLayout<Element>.stride)
        }
    }

    deinit {
        // Both ends are gone (they hold strong references), so no other thread touches the slots.
        let h = head.load(ordering: .relaxed)
        let t = tail.load(ordering: .relaxed)
        for i in h..<t { (slots + i % capacity).deinitialize(count: 1) }
        slots.deallocate()
    }

    /// The producer end. Call once; a second call traps.
    public func takeProducer() -> Producer {
        // ORDERING: relaxed; this flag only guards against handing out an end twice.
        precondition(handedOut.bitwiseOr(1, ordering: .relaxed).oldValue & 1 == 0, "producer already taken")
        return Producer(self)
    }

    /// The consumer end. Call once; a second call traps.
    public func takeConsumer() -> Consumer {
        // ORDERING: relaxed; this flag only guards against handing out an end twice.
        precondition(handedOut.bitwiseOr(2, ordering: .relaxed).oldValue & 2 == 0, "consumer already taken")
        return Consumer(self)
    }

    /// Elements ever written (the producer's index), as last published. Any thread. Real-time safe.
    @inlinable public func writtenCount() -> Int {
        // ORDERING: acquire pairs with the producer's release, so a caller that then reads
        // `readCount()` never sees it ahead of this value.
        tail.load(ordering: .acquiring)
    }

    /// Elements ever read or discarded (the consumer's index), as last published. Any thread.
    @inlinable public func readCount() -> Int {
        // ORDERING: acquire pairs with the consumer's release store of `head`.
        head.load(ordering: .acquiring)
    }

    /// The writing end. Owned by exactly one thread at a time.
    public struct Producer: ~Copyable, @unchecked Sendable {
        @usableFromInline let ring: SPSCRing<Element>
        /// Our own index (the ring's `tail`), kept locally so we never reload it.
        @usableFromInline var tail: Int
        /// Last seen value of the consumer's `head`.
        @usableFromInline var cachedHead: Int

        init(_ ring: SPSCRing<Element>) {
            self.ring = ring
            self.tail = ring.tail.load(ordering: .relaxed)
            self.cachedHead = ring.head.load(ordering: .acquiring)
        }

        /// The ring's capacity.
        @inlinable public var capacity: Int { ring.capacity }

        /// Free slots, exact at the time of the call (the consumer may free more concurrently).
        @inlinable
        public mutating func availableToWrite() -> Int {
            // ORDERING: acquire pairs with the consumer's release store of `head`, so slots it has
            // finished reading are not overwritten before its reads complete.
            cachedHead = ring.head.load(ordering: .acquiring)
            return ring.capacity - (tail - cachedHead)
        }

        @inlinable
        mutating func freeSpace(atLeast wanted: Int) -> Int {
            let free = ring.capacity - (tail - cachedHead)
            if free >= wanted { return free }
            return availableToWrite()
        }

        /// Appends one element. Returns false (and keeps nothing) when the ring is full.
        @inlinable
        public mutating func push(_ element: Element) -> Bool {
            guard freeSpace(atLeast: 1) >= 1 else { return false }
            // SAFETY: the slot at `tail` is free (checked above) and owned by the producer.
            (ring.slots + tail % ring.capacity).initialize(to: element)
            tail &+= 1
            // ORDERING: release publishes the initialised slot before the consumer can see the new tail.
            ring.tail.store(tail, ordering: .releasing)
            return true
        }

        /// Gives `body` the free space as two segments (the second non-empty only when the free
        /// space wraps). `body` initialises a prefix of the first segment, then of the second, and
        /// returns how many elements it wrote in all; those are published at once.
        @inlinable
        public mutating func withWritableSegments<E: Swift.Error>(
            _ body: (UnsafeMutableBufferPointer<Element>, UnsafeMutableBufferPointer<Element>) throws(E) -> Int
        ) throws(E) -> Int {
            let free = availableToWrite()
            let start = tail % ring.capacity
            let firstCount = min(free, ring.capacity - start)
            // SAFETY: both segments lie in the free region [tail, head + capacity), owned by the producer.
            let first = UnsafeMutableBufferPointer(start: ring.slots + start, count: firstCount)
            let second = UnsafeMutableBufferPointer(start: ring.slots, count: free - firstCount)
            let written = try body(first, second)
            precondition(written >= 0 && written <= free, "wrote outside the free segments")
            if written > 0 {
                tail &+= written
                // ORDERING: release publishes the written slots before the new tail.
                ring.tail.store(tail, ordering: .releasing)
            }
            return written
        }
    }

    /// The reading end. Owned by exactly one thread at a time.
    public struct Consumer: ~Copyable, @unchecked Sendable {
        @usableFromInline let ring: SPSCRing<Element>
        /// Our own index (the ring's `head`).
        @usableFromInline var head: Int
        /// Last seen value of the producer's `tail`.
        @usableFromInline var cachedTail: Int

        init(_ ring: SPSCRing<Element>) {
            self.ring = ring
            self.head = ring.head.load(ordering: .relaxed)
            self.cachedTail = ring.tail.load(ordering: .acquiring)
        }

        @inlinable public var capacity: Int { ring.capacity }

        /// Elements ready to read, exact at the time of the call (the producer may add more).
        @inlinable
        public mutating func availableToRead() -> Int {
            // ORDERING: acquire pairs with the producer's release store of `tail`, so the slots'
            // contents are visible before we read them.
            cachedTail = ring.tail.load(ordering: .acquiring)
            return cachedTail - head
        }

        @inlinable
        mutating func readable(atLeast wanted: Int) -> Int {
            let ready = cachedTail - head
            if ready >= wanted { return ready }
            return availableToRead()
        }

        /// Removes and returns the oldest element, or nil when the ring is empty.
        @inlinable
        public mutating func pop() -> Element? {
            guard readable(atLeast: 1) >= 1 else { return nil }
            // SAFETY: the slot at `head` was published by the producer (checked above).
            let element = (ring.slots + head % ring.capacity).move()
            head &+= 1
            // ORDERING: release hands the slot back to the producer after our read.
            ring.head.store(head, ordering: .releasing)
            return element
        }

        /// Gives `body` the readable elements as two segments (the second non-empty only when they
        /// wrap). `body` returns how many of them, from the front, it consumed; the consumed
        /// elements must have been moved out or be trivial, and are released to the producer.
        @inlinable
        public mutating func withReadableSegments<E: Swift.Error>(
            _ body: (UnsafeMutableBufferPointer<Element>, UnsafeMutableBufferPointer<Element>) throws(E) -> Int
        ) throws(E) -> Int {
            let ready = availableToRead()
            let start = head % ring.capacity
            let firstCount = min(ready, ring.capacity - start)
            // SAFETY: both segments lie in [head, tail), published by the producer and owned by us.
            let first = UnsafeMutableBufferPointer(start: ring.slots + start, count: firstCount)
            let second = UnsafeMutableBufferPointer(start: ring.slots, count: ready - firstCount)
            let consumed = try body(first, second)
            precondition(consumed >= 0 && consumed <= ready, "consumed more than was readable")
            if consumed > 0 {
                head &+= consumed
                // ORDERING: release returns the slots to the producer after our reads of them.
                ring.head.store(head, ordering: .releasing)
            }
            return consumed
        }
    }
}

extension SPSCRing.Producer where Element: BitwiseCopyable {
    /// Copies as many elements of `source` as fit and returns how many were written.
    @inlinable
    public mutating func write(_ source: UnsafeBufferPointer<Element>) -> Int {
        guard !source.isEmpty, let base = source.baseAddress else { return 0 }
        return withWritableSegments { first, second in
            let a = min(first.count, source.count)
            let b = min(second.count, source.count - a)
            // SAFETY: a <= first.count, b <= second.count, a + b <= source.count.
            if a > 0 { first.baseAddress!.initialize(from: base, count: a) }
            if b > 0 { second.baseAddress!.initialize(from: base + a, count: b) }
            return a + b
        }
    }
}

extension SPSCRing.Consumer where Element: BitwiseCopyable {
    /// Copies up to `destination.count` elements out and returns how many were read.
    @inlinable
    public mutating func read(into destination: UnsafeMutableBufferPointer<Element>) -> Int {
        guard !destination.isEmpty, let base = destination.baseAddress else { return 0 }
        return withReadableSegments { first, second in
            let a = min(first.count, destination.count)
            let b = min(second.count, destination.count - a)
            // SAFETY: a <= first.count, b <= second.count, a + b <= destination.count.
            if a > 0 { base.update(from: first.baseAddress!, count: a) }
            if b > 0 { (base + a).update(from: second.baseAddress!, count: b) }
            return a + b
        }
    }

    /// Discards up to `count` of the oldest elements and returns how many were dropped.
    @inlinable
    public mutating func discard(upTo count: Int) -> Int {
        withReadableSegments { first, second in min(count, first.count + second.count) }
    }

    /// Discards the oldest elements up to (not including) absolute index `index` (a value of
    /// `writtenCount()`), as far as they are readable; returns how many were dropped.
    @inlinable
    public mutating func discard(before index: Int) -> Int {
        discard(upTo: max(0, index - head))
    }

    /// Discards everything readable now and returns how many elements were dropped.
    @inlinable
    public mutating func discardAll() -> Int { discard(upTo: Int.max) }
}
