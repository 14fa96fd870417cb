import ChamadeCore
import ChamadeDSP
import ChamadeEngine
import ChamadeTesting
import Testing

@Suite("Engine playout through the virtual clock")
struct PlayoutTests {
    /// The same audio chunked three ways is heard identically by a listener.
    @Test func chunkingNeverChangesWhatIsHeard() throws {
        let input = speechLike(rate: 24000, count: 24000)
        let bytes = Signal.bytes(of: input)
        var heard: [[Int16]] = []
        for chunking in [[1], [3, 1, 4801, 2], [48000]] {
            let (engine, _) = virtualEngine()
            let room = try engine.createRoom(nativeRate: .hz48000)
            let talker = try room.join(rate: .hz24000, receiving: false)
            let listener = try room.join(rate: .hz16000)
            engine.tick()  // both installed
            _ = listener.pullAll()
            var offset = 0
            var k = 0
            while offset < bytes.count {
                let size = chunking[k % chunking.count]
                k += 1
                let end = min(bytes.count, offset + size)
                bytes[offset..<end].withUnsafeBytes { _ = talker.push($0) }
                offset = end
            }
            var out: [Int16] = []
            for _ in 0..<55 {
                engine.tick()
                out += listener.pullAll()
            }
            heard.append(out)
        }
        #expect(heard[0].count == 55 * 320)
        #expect(same(heard[0], heard[1]))
        #expect(same(heard[0], heard[2]))
        #expect(Analysis.rms(heard[0]) > 1000)
    }

    /// 10 s pushed at once is played over exactly 500 ticks, bit for bit at the native rate.
    @Test func tenSecondBurstTakesFiveHundredTicks() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let talker = try room.join(rate: .hz48000, receiving: false)
        let listener = try room.join(rate: .hz48000)
        engine.tick()
        _ = listener.pullAll()
        let input = speechLike(rate: 48000, count: 480_000)
        let pushed = talker.push(samples: input)
        #expect(pushed.acceptedSampleCount == 480_000)
        var out: [Int16] = []
        for t in 1...500 {
            engine.tick()
            out += listener.pullAll()
            #expect(talker.queuedSampleCount() == 480_000 - t * 960)
        }
        #expect(same(out, input))
        engine.tick()
        #expect(listener.pullAll().allSatisfy { $0 == 0 })
    }

    /// A clear drops the rest at once and reports the milliseconds dropped; audio sent after the
    /// clear request is kept.
    @Test func clearDropsTheRestAndSaysHowMuch() throws {
        let (engine, log) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz16000)
        let talker = try room.join(rate: .hz24000)
        engine.tick()
        talker.push(samples: speechLike(rate: 24000, count: 240_000))  // 10 s
        for _ in 0..<100 { engine.tick() }  // 2 s played
        let request = talker.requestClear()
        talker.push(samples: [Int16](repeating: 1000, count: 480))  // 20 ms after the clear: kept
        engine.tick()
        engine.drainEvents()
        let cleared = log.take().compactMap { e -> EngineEvent? in if case .cleared = e { e } else { nil } }
        #expect(cleared.count == 1)
        #expect(cleared.first == .cleared(talker.id, droppedSampleCount: 8 * 24000, sampleRate: .hz24000, request: request))
        #expect(cleared.first?.droppedMilliseconds == 8000)
        // The tick after the clear played the 20 ms pushed after it.
        #expect(talker.queuedSampleCount() == 0)
    }

    /// Marks come back after exactly the audio before them: at once when nothing is queued, and
    /// at a clear for marks still pending.
    @Test func marksFollowTheAudio() throws {
        let (engine, log) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let talker = try room.join(rate: .hz16000)
        engine.tick()
        let first = talker.mark()
        #expect(first.isReached)
        talker.push(samples: [Int16](repeating: 100, count: 16000))  // 1 s
        let m1 = talker.mark()
        talker.push(samples: [Int16](repeating: 100, count: 16000 + 160))  // 1 s + 10 ms
        let m2 = talker.mark()
        #expect(!m1.isReached && !m2.isReached)
        var seen: [UInt64: Int] = [:]
        for t in 1...102 {
            engine.tick()
            engine.drainEvents()
            for case .markPlayed(_, let mark) in log.take() { seen[mark] = t }
        }
        #expect(seen[m1.id] == 50)
        #expect(seen[m2.id] == 101)  // the last 10 ms go out in tick 101, padded with silence

        talker.push(samples: [Int16](repeating: 5, count: 16000))
        let m3 = talker.mark()
        talker.requestClear()
        engine.tick()
        engine.drainEvents()
        let events = log.take()
        #expect(events.contains(.markPlayed(talker.id, mark: m3.id)))
    }

    /// Beyond 60 s the excess is refused and reported; what fits is kept and played.
    @Test func overflowBeyondSixtySeconds() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz8000)
        let talker = try room.join(rate: .hz8000)
        engine.tick()
        let result = talker.push(samples: [Int16](repeating: 7, count: 8000 * 61))
        // The queue holds 60 s plus one block of slack.
        #expect(result.acceptedSampleCount == 8000 * 60 + 160)
        #expect(result.droppedSampleCount == 8000 * 61 - result.acceptedSampleCount)
        #expect(talker.statistics().overflowSampleCount == result.droppedSampleCount)
        #expect(talker.queuedSampleCount() == result.acceptedSampleCount)
    }

    /// Underrun plays silence, never stale audio.
    @Test func underrunIsSilence() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let talker = try room.join(rate: .hz48000, receiving: false)
        let listener = try room.join(rate: .hz48000)
        engine.tick()
        _ = listener.pullAll()
        talker.push(samples: [Int16](repeating: 1234, count: 1440))  // 30 ms
        engine.tick()
        let b1 = listener.pullAll()
        engine.tick()
        let b2 = listener.pullAll()
        engine.tick()
        let b3 = listener.pullAll()
        #expect(same(b1, [Int16](repeating: 1234, count: 960)))
        #expect(same(b2, [Int16](repeating: 1234, count: 480) + [Int16](repeating: 0, count: 480)))
        #expect(same(b3, [Int16](repeating: 0, count: 960)))
    }
}

@Suite("Jitter: underrun debt paid back in silence only")
struct JitterTests {
    /// A real-time stream of silence with clicks: one chunk arrives after its tick. The late block
    /// costs one glitch, not a lasting block of latency: later clicks come out as early as before.
    @Test func lateChunkCostsNoLastingLatency() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let talker = try room.join(rate: .hz48000, receiving: false)
        let listener = try room.join(rate: .hz48000)
        engine.tick()
        _ = listener.pullAll()
        var click = [Int16](repeating: 0, count: 960)
        click[0] = 20000
        let silence = [Int16](repeating: 0, count: 960)
        var clickTicks: [Int] = []
        var pending: [[Int16]] = []
        for t in 0..<40 {
            let chunk = t % 5 == 0 ? click : silence
            if t == 12 {
                pending.append(chunk)  // arrives late: after this tick
            } else {
                for p in pending { talker.push(samples: p) }
                pending = []
                talker.push(samples: chunk)
            }
            engine.tick()
            let heard = listener.pullAll()
            if heard.contains(20000) { clickTicks.append(t) }
        }
        // Every click is heard in the tick it was sent: the debt from tick 12 was paid in silence.
        #expect(clickTicks == stride(from: 0, to: 40, by: 5).map { $0 }, "\(clickTicks)")
    }

    /// Audio is never skipped: with no silence in the stream, the late block stays late, and a
    /// 10 s burst plays whole.
    @Test func soundIsNeverSkipped() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let talker = try room.join(rate: .hz48000, receiving: false)
        let listener = try room.join(rate: .hz48000)
        engine.tick()
        _ = listener.pullAll()
        let tone = Signal.sine(frequency: 300, dBFS: -20, sampleRate: 48000, count: 960 * 30).map { $0 == 0 ? 1 : $0 }
        var sent: [Int16] = []
        var heard: [Int16] = []
        for t in 0..<30 {
            let chunk = Array(tone[(t * 960)..<((t + 1) * 960)])
            if t != 10 { talker.push(samples: chunk) } else { engine.tick(); heard += listener.pullAll(); talker.push(samples: chunk) }
            sent += chunk
            engine.tick()
            heard += listener.pullAll()
        }
        for _ in 0..<3 {
            engine.tick()
            heard += listener.pullAll()
        }
        let nonZero = heard.filter { $0 != 0 }
        #expect(same(nonZero, sent))
    }
}
