import ChamadeCore
import ChamadeEngine
import ChamadeTesting
import Testing

/// The room tap behind transcripts (SPEC §7): each talker's block as the room played it, in tick
/// order with its rate and stream position; nothing for silence; a full tap loses blocks (counted)
/// and never holds up the room; the tick allocates nothing with a tap on.
@Suite struct RoomTapTests {
    @Test func copiesEachTalkersBlockAsPlayed() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000, capacity: 4)
        let a = try room.join(rate: .hz16000, receiving: false)
        let b = try room.join(rate: .hz8000, receiving: false)
        let silent = try room.join(rate: .hz48000, receiving: false)
        let tap = RoomTap()
        room.setTap(tap)
        let sa = speechLike(rate: 16000, count: 16000 / 5, seed: 1)
        let sb = speechLike(rate: 8000, count: 8000 / 5, seed: 2)
        a.push(samples: sa)
        b.push(samples: sb)
        silent.push(samples: [Int16](repeating: 0, count: 48000 / 5))
        for _ in 0..<12 { engine.tick() }
        var got: [ParticipantID: [Int16]] = [:]
        var ticks: [ParticipantID: [UInt64]] = [:]
        tap.read { header, samples in
            got[header.participant, default: []] += samples
            ticks[header.participant, default: []].append(header.tick)
            #expect(header.rate == (header.participant == a.id ? .hz16000 : .hz8000))
            #expect(header.streamPosition == (ticks[header.participant]!.count - 1) * header.rate.blockSampleCount)
        }
        // Exactly what each sent (10 blocks of 200 ms each), nothing from digital silence.
        #expect(same(got[a.id] ?? [], sa))
        #expect(same(got[b.id] ?? [], sb))
        #expect(got[silent.id] == nil)
        // One block per tick, consecutive.
        #expect(ticks[a.id]?.count == 10 && zip(ticks[a.id]!, ticks[a.id]!.dropFirst()).allSatisfy { $1 == $0 + 1 })
        // Stopped: nothing more is copied.
        room.setTap(nil)
        a.push(samples: sa)
        for _ in 0..<5 { engine.tick() }
        var after = 0
        tap.read { _, _ in after += 1 }
        #expect(after == 0)
        engine.shutdown()
    }

    @Test func aFullTapLosesBlocksAndTheRoomGoesOn() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000, capacity: 4)
        let talker = try room.join(rate: .hz48000, receiving: false)
        let listener = try room.join(rate: .hz48000)
        let tap = RoomTap(seconds: 1)
        room.setTap(tap)
        // 3 s of speech, nobody reading the tap: it keeps 1 s and counts the rest.
        talker.push(samples: speechLike(rate: 48000, count: 48000 * 3))
        var heard = 0
        for _ in 0..<150 {
            engine.tick()
            heard += listener.pullAll().count
        }
        #expect(tap.lostBlockCount >= 95 && tap.lostBlockCount <= 101, "\(tap.lostBlockCount)")
        // The listener heard all 3 s all the same.
        #expect(heard == 150 * 960)
        var kept = 0
        tap.read { _, samples in kept += samples.count }
        #expect(kept == 48000 * 3 - tap.lostBlockCount * 960)
        engine.shutdown()
    }

    @Test func theTickAllocatesNothingWithATapOn() throws {
        #expect(Engine.isCountingTickAllocations)
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000, capacity: 24)
        let rates: [SampleRate] = [.hz8000, .hz16000, .hz48000]
        let talkers = try (0..<20).map { try room.join(rate: rates[$0 % 3], receiving: true) }
        let tap = RoomTap(seconds: 1)
        room.setTap(tap)
        let chunks = talkers.map { Signal.bytes(of: speechLike(rate: $0.sampleRate.hertz, count: $0.sampleRate.hertz / 10, seed: UInt64($0.id.rawValue))) }
        func step(_ t: Int) {
            if t % 5 == 0 { for (p, c) in zip(talkers, chunks) { c.withUnsafeBytes { _ = p.push($0) } } }
            engine.tick()
            engine.drainEvents()
            for p in talkers { _ = p.pullAll() }
            // The reader keeps up half the time, so both paths run: blocks handed over, and lost.
            if (t / 50) % 2 == 0 { tap.read { _, _ in } }
        }
        for t in 0..<100 { step(t) }
        let before = Engine.tickAllocationCountOnThisThread
        for t in 100..<1100 { step(t) }
        let allocations = Engine.tickAllocationCountOnThisThread - before
        #expect(allocations == 0, "\(allocations) allocations in 1000 ticks")
        #expect(tap.lostBlockCount > 0)
        engine.shutdown()
    }
}
