import ChamadeCore
import ChamadeEngine
import ChamadeTesting
import Foundation
import Synchronization
import Testing

@Suite("Real-time rules")
struct RealTimeTests {
    /// The tick allocates nothing: a busy room (mixed rates, talkers in random chunks, listeners,
    /// clears, marks, a join and a leave, a slow consumer) ticks 2000 times in steady state while
    /// the malloc counter watches the ticking thread.
    @Test func tickAllocatesNothing() throws {
        #expect(Engine.isCountingTickAllocations)
        let (engine, _) = virtualEngine(shards: 2)
        let rates: [SampleRate] = [.hz8000, .hz16000, .hz24000, .hz48000, try SampleRate(hertz: 22050)]
        let rooms = try [SampleRate.hz48000, .hz16000].map { try engine.createRoom(nativeRate: $0, capacity: 32) }
        var participants: [Participant] = []
        for room in rooms {
            for i in 0..<10 { participants.append(try room.join(rate: rates[i % rates.count], receiving: i != 9)) }
        }
        let chunks = participants.map { Signal.bytes(of: speechLike(rate: $0.sampleRate.hertz, count: $0.sampleRate.hertz / 10)) }
        var rng = SeededRandom(seed: 3)
        func step(_ t: Int) {
            for (i, p) in participants.enumerated() where i % 3 == 0 || (t / 100) % 2 == 0 {
                let c = chunks[i]
                let size = Int.random(in: 1...c.count, using: &rng)
                c[0..<size].withUnsafeBytes { _ = p.push($0) }
            }
            if t % 50 == 0 { _ = participants[1].mark() }
            if t % 170 == 0 { participants[2].requestClear() }
            engine.tick()
            engine.drainEvents()
            for (i, p) in participants.enumerated() where i != 5 { _ = p.pullAll() }
        }
        // Warm up: first-use metadata, rate groups, drains. Every command kind is applied once here:
        // in a debug build the first `.remove` a process applies instantiates generic metadata on
        // the tick (3 mallocs, once per process; seen when this test runs alone).
        let early = try rooms[1].join(rate: .hz24000)
        for t in 0..<150 { step(t) }
        try early.setSampleRate(.hz8000)
        step(150)
        early.leave()
        for t in 151..<300 { step(t) }
        // Counted on this thread only: other suites' real-clock engines tick elsewhere in the process.
        let before = Engine.tickAllocationCountOnThisThread
        var visitor: Participant?
        for t in 300..<2300 {
            if t == 1000 { visitor = try rooms[0].join(rate: .hz16000) }
            if t == 1500 { visitor?.leave() }
            step(t)
        }
        let allocations = Engine.tickAllocationCountOnThisThread - before
        #expect(allocations == 0, "\(allocations) allocations in 2000 ticks")
        // The counter does count: allocating with the flag up is seen.
        #expect(MallocProbe.allocationsWhileFlagged() > 0)
    }

    /// Real threads: talkers push from their own threads, listeners pull from theirs, while the real
    /// clock ticks and participants join and leave. Run under ThreadSanitizer by `make test`.
    @Test(.timeLimit(.minutes(1)))
    func realThreadsAroundTheClock() async throws {
        let engine = Engine(configuration: .init(clock: .realTime, shardCount: 2))
        let room = try engine.createRoom(nativeRate: .hz48000, capacity: 16)
        let talker = try room.join(rate: .hz24000, receiving: false)
        let listener = try room.join(rate: .hz16000)
        engine.start()
        let stop = Atomic<Bool>(false)
        let received = Atomic<Int>(0)
        let pushThread = ChamadeTesting.Thread {
            let bytes = Signal.bytes(of: speechLike(rate: 24000, count: 480))
            var rng = SeededRandom(seed: 9)
            while !stop.load(ordering: .relaxed) {
                let cut = Int.random(in: 1..<bytes.count, using: &rng)
                bytes[0..<cut].withUnsafeBytes { _ = talker.push($0) }
                bytes[cut...].withUnsafeBytes { _ = talker.push($0) }
                usleep(20_000)
            }
        }
        let pullThread = ChamadeTesting.Thread {
            var block = [Int16](repeating: 0, count: 320)
            while !stop.load(ordering: .relaxed) {
                while block.withUnsafeMutableBufferPointer({ listener.pullBlock(into: $0) }) {
                    received.wrappingAdd(1, ordering: .relaxed)
                }
                usleep(5000)
            }
        }
        let churnThread = ChamadeTesting.Thread {
            while !stop.load(ordering: .relaxed) {
                if let p = try? room.join(rate: .hz8000) {
                    _ = p.mark()
                    p.requestClear()
                    usleep(30_000)
                    p.leave()
                }
            }
        }
        let done = Done(count: 3)
        for t in [pushThread, pullThread, churnThread] {
            t.completionHandler = done
            t.start()
        }
        try await Task.sleep(for: .seconds(2))
        stop.store(true, ordering: .relaxed)
        await done.wait()
        engine.shutdown()
        #expect(received.load(ordering: .relaxed) >= 80)
        #expect(engine.statistics().lostEvents == 0)
    }
}
