import ChamadeCore
import ChamadeDSP
import ChamadeEngine
import ChamadeTesting
import Testing

@Suite("Engine mixing through the virtual clock")
struct MixingTests {
    /// A 16 kHz listener hears a 24 kHz participant's 1 kHz tone with SNR ≥ 70 dB in a 48 kHz room;
    /// the talker never hears itself (exactly nothing, since nobody else talks).
    @Test func mixedRatesAndNoSelf() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let talker = try room.join(rate: .hz24000)
        let listener = try room.join(rate: .hz16000)
        engine.tick()
        _ = talker.pullAll()
        _ = listener.pullAll()
        talker.push(samples: Signal.sine(frequency: 1000, dBFS: -6, sampleRate: 24000, count: 24000))
        var heard: [Int16] = []
        var own: [Int16] = []
        for _ in 0..<50 {
            engine.tick()
            heard += listener.pullAll()
            own += talker.pullAll()
        }
        let fit = Analysis.fitSine(Array(heard[640..<(heard.count - 640)]), frequency: 1000, sampleRate: 16000)
        #expect(fit.snrDB >= 70, "SNR \(fit.snrDB)")
        #expect(abs(Analysis.dB(fit.amplitude, relativeTo: Signal.amplitude(dBFS: -6))) < 0.2)
        #expect(own.count == 50 * 480)
        #expect(own.allSatisfy { $0 == 0 }, "the talker hears itself")
    }

    /// Two talkers: each hears only the other, a silent listener hears both (band energy).
    @Test func eachTalkerHearsOnlyTheOther() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let a = try room.join(rate: .hz16000)
        let b = try room.join(rate: .hz24000)
        let c = try room.join(rate: .hz8000)
        engine.tick()
        for p in [a, b, c] { _ = p.pullAll() }
        a.push(samples: Signal.sine(frequency: 440, dBFS: -6, sampleRate: 16000, count: 16000))
        b.push(samples: Signal.sine(frequency: 1000, dBFS: -6, sampleRate: 24000, count: 24000))
        var out: [[Int16]] = [[], [], []]
        for _ in 0..<50 {
            engine.tick()
            for (i, p) in [a, b, c].enumerated() { out[i] += p.pullAll() }
        }
        let full = Signal.amplitude(dBFS: -6)
        func level(_ i: Int, _ f: Double, _ rate: Int) -> Double {
            let s = out[i]
            return Analysis.dB(Analysis.toneAmplitude(Array(s[(s.count / 10)..<(s.count * 9 / 10)]), frequency: f, sampleRate: rate), relativeTo: full)
        }
        #expect(level(0, 1000, 16000) > -1)
        #expect(level(0, 440, 16000) < -60)
        #expect(level(1, 440, 24000) > -1)
        #expect(level(1, 1000, 24000) < -60)
        #expect(level(2, 440, 8000) > -1)
        #expect(level(2, 1000, 8000) > -1)
    }

    /// Sharing converters by linearity: every silent listener hears, within 1 LSB, what a private
    /// chain (talker's converter to the room rate, then a private converter to the listener's rate)
    /// gives; the talker itself hears silence.
    @Test(arguments: [SampleRate.hz48000, .hz16000])
    func silentListenersMatchPrivateConverters(native: SampleRate) throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: native)
        let talkerRate = SampleRate.hz24000
        let talker = try room.join(rate: talkerRate)
        let listenerRates: [SampleRate] = [.hz8000, .hz16000, .hz24000, .hz48000, try SampleRate(hertz: 22050)]
        let listeners = try listenerRates.map { try room.join(rate: $0) }
        engine.tick()
        for p in [talker] + listeners { _ = p.pullAll() }
        let blocks = 60
        // Talk for 40 blocks, then fall silent (the converters must drain exactly).
        let input = speechLike(rate: talkerRate.hertz, count: 40 * talkerRate.blockSampleCount)
        talker.push(samples: input)
        var heard = [[Int16]](repeating: [], count: listeners.count)
        for _ in 0..<blocks {
            engine.tick()
            for (i, l) in listeners.enumerated() { heard[i] += l.pullAll() }
        }
        // The private reference, block by block.
        var inbound = try SampleRateConverter(from: talkerRate, to: native)
        var rows: [Int16] = []
        let padded = input + [Int16](repeating: 0, count: (blocks - 40) * talkerRate.blockSampleCount)
        var fin = [Float](repeating: 0, count: 960)
        var fout = [Float](repeating: 0, count: 960)
        var row = [Int16](repeating: 0, count: native.blockSampleCount)
        for k in 0..<blocks {
            let n = talkerRate.blockSampleCount
            padded[(k * n)..<((k + 1) * n)].withUnsafeBufferPointer { i in
                inbound.process(
                    i, into: row.withUnsafeMutableBufferPointer { $0 },
                    inputScratch: fin.withUnsafeMutableBufferPointer { UnsafeMutableBufferPointer(rebasing: $0[0..<n]) },
                    outputScratch: fout.withUnsafeMutableBufferPointer { UnsafeMutableBufferPointer(rebasing: $0[0..<native.blockSampleCount]) })
            }
            rows += row
        }
        for (i, rate) in listenerRates.enumerated() {
            var priv = try SampleRateConverter(from: native, to: rate)
            var expected: [Int16] = []
            var out = [Int16](repeating: 0, count: rate.blockSampleCount)
            for k in 0..<blocks {
                let n = native.blockSampleCount
                rows[(k * n)..<((k + 1) * n)].withUnsafeBufferPointer { r in
                    priv.process(
                        r, into: out.withUnsafeMutableBufferPointer { $0 },
                        inputScratch: fin.withUnsafeMutableBufferPointer { UnsafeMutableBufferPointer(rebasing: $0[0..<n]) },
                        outputScratch: fout.withUnsafeMutableBufferPointer { UnsafeMutableBufferPointer(rebasing: $0[0..<rate.blockSampleCount]) })
                }
                expected += out
            }
            #expect(heard[i].count == expected.count)
            let worst = zip(heard[i], expected).map { abs(Int($0) - Int($1)) }.max() ?? 0
            #expect(worst <= 1, "\(rate) in a \(native) room: worst difference \(worst) LSB")
            #expect(Analysis.rms(heard[i]) > 500)
        }
    }

    /// With one talker, converter calls per tick do not grow with the number of silent listeners.
    @Test func costFollowsTalkersNotListeners() throws {
        var perTick: [Int] = []
        for listenerCount in [1, 10, 100] {
            let (engine, _) = virtualEngine()
            let room = try engine.createRoom(nativeRate: .hz48000, capacity: 128)
            let talker = try room.join(rate: .hz24000)
            let rates: [SampleRate] = [.hz8000, .hz16000, .hz24000, .hz48000]
            let listeners = try (0..<listenerCount).map { try room.join(rate: rates[$0 % 4]) }
            engine.tick()
            talker.push(samples: speechLike(rate: 24000, count: 24000))
            for _ in 0..<10 { engine.tick() }
            let before = room.converterCallCount
            for _ in 0..<20 { engine.tick() }
            perTick.append((room.converterCallCount - before) / 20)
            for l in listeners { _ = l.pullAll() }
        }
        // 1 listener: talker in + lane of its rate + talker's own out + the talker's lane: ≤ 4;
        // more listeners add at most one shared lane per new rate (4 rates here), never one each.
        #expect(perTick[1] == perTick[2], "\(perTick)")
        #expect(perTick[2] <= 2 + 3, "\(perTick)")
    }

    /// A participant joining and leaving mid-run changes nothing for the others.
    @Test func joinAndLeaveLoseNothingForOthers() throws {
        func run(withVisitor: Bool) throws -> [Int16] {
            let (engine, _) = virtualEngine()
            let room = try engine.createRoom(nativeRate: .hz48000)
            let talker = try room.join(rate: .hz24000, receiving: false)
            let listener = try room.join(rate: .hz16000)
            engine.tick()
            _ = listener.pullAll()
            talker.push(samples: speechLike(rate: 24000, count: 48000))
            var out: [Int16] = []
            var visitor: Participant?
            for t in 0..<120 {
                if withVisitor && t == 30 { visitor = try room.join(rate: .hz8000) }
                if withVisitor && t == 70 { visitor?.leave() }
                engine.tick()
                engine.drainEvents()
                out += listener.pullAll()
                _ = visitor?.pullAll()
            }
            return out
        }
        let alone = try run(withVisitor: false)
        let visited = try run(withVisitor: true)
        #expect(alone.count == 120 * 320)
        #expect(same(alone, visited))
    }

    /// A consumer that stops reading loses its oldest blocks (counted); the others get every block.
    @Test func slowConsumerIsCountedAndHarmless() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let talker = try room.join(rate: .hz48000, receiving: false)
        let slow = try room.join(rate: .hz16000)
        let fast = try room.join(rate: .hz16000)
        engine.tick()
        _ = slow.pullAll()
        _ = fast.pullAll()
        let input = (0..<(48000 * 4)).map { Int16(truncatingIfNeeded: $0 / 960) }  // block k holds value k
        talker.push(samples: input)
        var fastBlocks = 0
        for _ in 0..<200 {
            engine.tick()
            fastBlocks += fast.pullAll().count / 320
        }
        #expect(fastBlocks == 200)
        // The slow one's queue stopped at 64 blocks; it now reads only the newest second.
        let late = slow.pullAll()
        #expect(late.count / 320 <= Participant.outboundLimitBlocks)
        let stats = slow.statistics()
        #expect(stats.droppedBlockCount == 200 - late.count / 320)
        #expect(stats.outboundRefusedBlockCount == 200 - 64)
        #expect(fast.statistics().droppedBlockCount == 0)
    }

    /// A rate change takes effect at the next tick: new block size, audio at the new rate heard.
    @Test func rateChangeKeepsTheParticipant() throws {
        let (engine, log) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let a = try room.join(rate: .hz48000)
        let b = try room.join(rate: .hz16000)
        engine.tick()
        #expect(try a.setSampleRate(.hz48000) == false)
        a.push(samples: [Int16](repeating: 9, count: 9600))
        let m = a.mark()
        #expect(try a.setSampleRate(.hz24000))
        #expect(a.sampleRate == .hz24000)
        engine.tick()
        engine.drainEvents()
        #expect(log.take().contains(.markPlayed(a.id, mark: m.id)))
        _ = a.pullAll()
        _ = b.pullAll()
        b.push(samples: Signal.sine(frequency: 500, dBFS: -6, sampleRate: 16000, count: 16000))
        var heard: [Int16] = []
        for _ in 0..<40 {
            engine.tick()
            heard += a.pullAll()
        }
        #expect(heard.count == 40 * 480)
        let fit = Analysis.fitSine(Array(heard[960...]), frequency: 500, sampleRate: 24000)
        #expect(fit.snrDB > 60)
    }
}

@Suite("Cost of silence")
struct SilenceCostTests {
    /// Participants streaming digital silence cost no conversion: only a talker's converters and
    /// the shared lanes run, however many silent streamers there are.
    @Test func streamingZerosCostsNothing() throws {
        var perTick: [Int] = []
        for streamers in [0, 20] {
            let (engine, _) = virtualEngine()
            let room = try engine.createRoom(nativeRate: .hz48000, capacity: 64)
            let talker = try room.join(rate: .hz24000)
            let others = try (0..<streamers).map { _ in try room.join(rate: .hz24000) }
            engine.tick()
            talker.push(samples: speechLike(rate: 24000, count: 24000))
            for _ in 0..<10 {
                for o in others { o.push(samples: [Int16](repeating: 0, count: 480)) }
                engine.tick()
            }
            let before = room.converterCallCount
            for _ in 0..<20 {
                for o in others { o.push(samples: [Int16](repeating: 0, count: 480)) }
                engine.tick()
                for o in others { _ = o.pullAll() }
            }
            perTick.append((room.converterCallCount - before) / 20)
            // Everyone silent still hears the talker.
            #expect(others.allSatisfy { $0.statistics().outboundQueuedBlockCount >= 30 })
        }
        #expect(perTick[0] == perTick[1], "\(perTick)")
    }
}
