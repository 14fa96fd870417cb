import ChamadeCore
import ChamadeTesting
import Foundation
import Testing

@Suite("SPSC ring")
struct SPSCRingTests {
    /// Every (capacity, start offset, count) over small capacities: bulk write then bulk read gives
    /// back exactly what fitted, in order, and the segments wrap exactly where the layout says.
    @Test(arguments: 1...9)
    func everyLayout(capacity: Int) {
        for start in 0..<(2 * capacity + 1) {
            for count in 0...(capacity + 2) {
                let ring = SPSCRing<Int32>(capacity: capacity)
                var producer = ring.takeProducer()
                var consumer = ring.takeConsumer()
                // Move both indices to `start` so the next write begins at slot start % capacity.
                for i in 0..<start {
                    do { let c1 = producer.push(Int32(i)); #expect(c1) }
                    do { let c2 = consumer.pop() == Int32(i); #expect(c2) }
                }
                let values = (0..<count).map { Int32(1000 + $0) }
                let written = values.withUnsafeBufferPointer { producer.write($0) }
                #expect(written == min(count, capacity))
                do { let c3 = producer.availableToWrite() == capacity - written; #expect(c3) }
                do { let c4 = consumer.availableToRead() == written; #expect(c4) }

                // The readable segments: the first runs to the end of storage, the second wraps.
                let slot = start % capacity
                let expectFirst = min(written, capacity - slot)
                _ = consumer.withReadableSegments { first, second in
                    #expect(first.count == expectFirst)
                    #expect(second.count == written - expectFirst)
                    return 0
                }
                var out = [Int32](repeating: -1, count: count + 1)
                let read = out.withUnsafeMutableBufferPointer { consumer.read(into: $0) }
                #expect(read == written)
                #expect(Array(out[0..<read]) == Array(values[0..<written]))
                do { let c5 = consumer.availableToRead() == 0; #expect(c5) }
                do { let c6 = consumer.pop() == nil; #expect(c6) }
            }
        }
    }

    @Test func fullRingRefusesAndOverwritesNothing() {
        let ring = SPSCRing<Int16>(capacity: 4)
        var producer = ring.takeProducer()
        var consumer = ring.takeConsumer()
        for v in Int16(1)...4 { let ok = producer.push(v); #expect(ok) }
        do { let c7 = !producer.push(99); #expect(c7) }
        do { let c8 = producer.availableToWrite() == 0; #expect(c8) }
        let extra: [Int16] = [7, 8, 9]
        do { let c9 = extra.withUnsafeBufferPointer { producer.write($0) } == 0; #expect(c9) }
        do { let c10 = consumer.pop() == 1; #expect(c10) }
        do { let c11 = extra.withUnsafeBufferPointer { producer.write($0) } == 1; #expect(c11) }
        var out = [Int16](repeating: 0, count: 8)
        let n = out.withUnsafeMutableBufferPointer { consumer.read(into: $0) }
        #expect(Array(out[0..<n]) == [2, 3, 4, 7])
    }

    @Test func emptyRingYieldsNothing() {
        let ring = SPSCRing<Int16>(capacity: 3)
        var consumer = ring.takeConsumer()
        do { let c12 = consumer.pop() == nil; #expect(c12) }
        do { let c13 = consumer.availableToRead() == 0; #expect(c13) }
        do { let c14 = consumer.discardAll() == 0; #expect(c14) }
        var out = [Int16](repeating: 5, count: 2)
        do { let c15 = out.withUnsafeMutableBufferPointer { consumer.read(into: $0) } == 0; #expect(c15) }
        #expect(out == [5, 5])
    }

    @Test func discardDropsOldestFirst() {
        let ring = SPSCRing<Int16>(capacity: 8)
        var producer = ring.takeProducer()
        var consumer = ring.takeConsumer()
        for v in Int16(0)..<6 { _ = producer.push(v) }
        do { let c16 = consumer.discard(upTo: 4) == 4; #expect(c16) }
        do { let c17 = consumer.pop() == 4; #expect(c17) }
        do { let c18 = consumer.discardAll() == 1; #expect(c18) }
        do { let c19 = consumer.pop() == nil; #expect(c19) }
    }

    final class Tracked {
        static let live = LiveCounter()
        init() { Self.live.add(1) }
        deinit { Self.live.add(-1) }
    }

    final class LiveCounter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func add(_ d: Int) { lock.withLock { value += d } }
        var count: Int { lock.withLock { value } }
    }

    /// Non-trivial elements (class references, as in command rings) are moved out by pop and
    /// released with the ring when never popped.
    @Test func referencesAreReleased() {
        let before = Tracked.live.count
        do {
            let ring = SPSCRing<Tracked>(capacity: 4)
            var producer = ring.takeProducer()
            var consumer = ring.takeConsumer()
            for _ in 0..<3 { let ok = producer.push(Tracked()); #expect(ok) }
            #expect(Tracked.live.count == before + 3)
            _ = consumer.pop()
            #expect(Tracked.live.count == before + 2)
        }
        #expect(Tracked.live.count == before)
    }

    /// Two real threads, millions of elements in random chunk sizes, every element checked in order.
    /// Also run under ThreadSanitizer by `make test`.
    @Test(.timeLimit(.minutes(2)))
    func twoThreadStress() async {
        let total = 10_000_000
        let ring = SPSCRing<Int32>(capacity: 4096)
        let producerEnd = Box(ring.takeProducer())
        let consumerEnd = Box(ring.takeConsumer())
        let failures = LiveCounter()
        let producerThread = Thread {
            var producer = producerEnd.take()
            var rng = SeededRandom(seed: 1)
            var buffer = [Int32](repeating: 0, count: 4800)
            var next: Int32 = 0
            while Int(next) < total {
                let want = min(Int.random(in: 1...4800, using: &rng), total - Int(next))
                for i in 0..<want { buffer[i] = next &+ Int32(i) }
                let n = buffer.withUnsafeBufferPointer { producer.write(UnsafeBufferPointer(rebasing: $0[0..<want])) }
                next &+= Int32(n)
            }
        }
        let consumerThread = Thread {
            var consumer = consumerEnd.take()
            var rng = SeededRandom(seed: 2)
            var buffer = [Int32](repeating: 0, count: 4800)
            var expected: Int32 = 0
            while Int(expected) < total {
                let want = Int.random(in: 1...4800, using: &rng)
                let n = buffer.withUnsafeMutableBufferPointer {
                    consumer.read(into: UnsafeMutableBufferPointer(rebasing: $0[0..<want]))
                }
                for i in 0..<n where buffer[i] != expected &+ Int32(i) { failures.add(1) }
                expected &+= Int32(n)
            }
        }
        let done = Done(count: 2)
        producerThread.completionHandler = done
        consumerThread.completionHandler = done
        producerThread.start()
        consumerThread.start()
        await done.wait()
        #expect(failures.count == 0)
        #expect(producerEnd.isEmpty && consumerEnd.isEmpty)
    }
}

/// Hands a ~Copyable ring end to a thread.
final class Box<T: ~Copyable>: @unchecked Sendable {
    private var value: T?
    init(_ value: consuming T) { self.value = consume value }
    func take() -> T { value.take()! }
    var isEmpty: Bool { value == nil }
}

extension Optional where Wrapped: ~Copyable {
    static func == (lhs: borrowing Self, rhs: _OptionalNilComparisonType) -> Bool {
        switch lhs {
        case .none: true
        case .some: false
        }
    }
}
