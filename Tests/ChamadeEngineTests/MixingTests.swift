import ChamadeCore
import ChamadeDSP
import ChamadeEngine
import ChamadeTesting
import Foundation
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

    /// Rate groups by linearity: for every talker rate and every listener rate among 8/16/24/48 kHz
    /// and 22050 Hz, in 48 and 16 kHz rooms, a silent listener hears, within 1 LSB, what a private
    /// chain gives (the talker's rate up to the room's, then down to the listener's); a listener at
    /// the talker's own rate hears its samples exactly, with no delay; the talker hears silence.
    @Test(arguments: [SampleRate.hz48000, .hz16000], [8000, 16000, 22050, 24000, 48000])
    func silentListenersMatchPrivateChains(native: SampleRate, talkerHertz: Int) throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: native)
        let talkerRate = try SampleRate(hertz: talkerHertz)
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
        var own: [Int16] = []
        for _ in 0..<blocks {
            engine.tick()
            for (i, l) in listeners.enumerated() { heard[i] += l.pullAll() }
            own += talker.pullAll()
        }
        #expect(own.count == blocks * talkerRate.blockSampleCount)
        #expect(own.allSatisfy { $0 == 0 }, "the talker hears itself")
        let padded = input + [Int16](repeating: 0, count: (blocks - 40) * talkerRate.blockSampleCount)
        let rows = try privateChain(padded, from: talkerRate, to: native, blocks: blocks)
        for (i, rate) in listenerRates.enumerated() {
            let expected = rate == talkerRate ? padded : try privateChain(rows, from: native, to: rate, blocks: blocks)
            #expect(heard[i].count == expected.count)
            let worst = zip(heard[i], expected).map { abs(Int($0) - Int($1)) }.max() ?? 0
            if rate == talkerRate {
                #expect(same(heard[i], expected), "\(rate) hears \(talkerRate) in a \(native) room: not exact")
            } else {
                #expect(worst <= 1, "\(talkerRate) → \(rate) in a \(native) room: worst difference \(worst) LSB")
            }
            #expect(Analysis.rms(heard[i]) > 500)
        }
    }

    /// Two participants at 16 kHz in a 48 kHz room, both talking: each hears the other's samples
    /// bit for bit, from the very first block (no filter, no delay), and never itself.
    @Test func sameRateMembersHearEachOtherExactly() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let a = try room.join(rate: .hz16000)
        let b = try room.join(rate: .hz16000)
        let other = try room.join(rate: .hz24000)  // a silent member elsewhere changes nothing
        engine.tick()
        for p in [a, b, other] { _ = p.pullAll() }
        let sa = speechLike(rate: 16000, count: 30 * 320, seed: 1)
        let sb = speechLike(rate: 16000, count: 30 * 320, seed: 2).map { $0 / 2 }
        a.push(samples: sa)
        b.push(samples: sb)
        var ha: [Int16] = []
        var hb: [Int16] = []
        for _ in 0..<40 {
            engine.tick()
            ha += a.pullAll()
            hb += b.pullAll()
            _ = other.pullAll()
        }
        let tail = [Int16](repeating: 0, count: 10 * 320)
        #expect(same(ha, sb + tail), "a does not hear b exactly")
        #expect(same(hb, sa + tail), "b does not hear a exactly")
        // Alone, a talker hears exactly nothing of itself.
        a.push(samples: sa)
        var alone: [Int16] = []
        for _ in 0..<30 {
            engine.tick()
            alone += a.pullAll()
            _ = b.pullAll()
            _ = other.pullAll()
        }
        #expect(alone.count == 30 * 320)
        #expect(alone.allSatisfy { $0 == 0 }, "a hears itself")
    }

    /// Converter calls per tick are two per non-native group that talks and hears someone outside
    /// it, whatever the number of talkers: a talking native-rate leg plus T talkers at 16 kHz cost 2;
    /// T talkers spread over 8, 16 and 24 kHz cost 6. Silent listeners add nothing.
    @Test(arguments: [1, 10, 100])
    func converterCallsFollowGroupsNotTalkers(talkers: Int) throws {
        func callsPerTick(rates: [SampleRate]) throws -> Int {
            let (engine, _) = virtualEngine()
            let room = try engine.createRoom(nativeRate: .hz48000, capacity: 160)
            let leg = try room.join(rate: .hz48000)
            let speakers = try rates.map { try room.join(rate: $0) }
            let listeners = try (0..<20).map { _ in try room.join(rate: .hz16000) }
            let everyone = [leg] + speakers + listeners
            engine.tick()
            func step() {
                leg.push(samples: speechLike(rate: 48000, count: 960, seed: 9))
                for (i, p) in speakers.enumerated() {
                    p.push(samples: speechLike(rate: p.sampleRate.hertz, count: p.sampleRate.blockSampleCount, seed: UInt64(i)))
                }
                engine.tick()
                for p in everyone { _ = p.pullAll() }
            }
            for _ in 0..<10 { step() }
            let before = room.converterCallCount
            for _ in 0..<20 { step() }
            return (room.converterCallCount - before) / 20
        }
        #expect(try callsPerTick(rates: [SampleRate](repeating: .hz16000, count: talkers)) == 2)
        let spread: [SampleRate] = [.hz8000, .hz16000, .hz24000]
        let count = max(talkers, 3)
        #expect(try callsPerTick(rates: (0..<count).map { spread[$0 % 3] }) == 6)
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
        // 1 listener (8 kHz): the 24 kHz group up, the 8 kHz group down. 10 and 100 listeners add
        // the 16 kHz group's down; the 24 kHz and 48 kHz listeners need no conversion of their own.
        #expect(perTick == [2, 3, 3], "\(perTick)")
    }

    /// Rate changes mid-talk move participants between groups at a tick boundary with no click for
    /// anyone else: while a talker speaks a steady tone, others change rate into, out of and
    /// between groups (one leaving a group empty, which drains and goes); every listener's audio is
    /// bit for bit what it is without them, and its largest sample step stays within the tone's own.
    @Test func rateChangesMidTalkAreSilentForOthers() throws {
        func run(moving: Bool) throws -> [[Int16]] {
            let (engine, _) = virtualEngine()
            let room = try engine.createRoom(nativeRate: .hz48000)
            let talker = try room.join(rate: .hz24000)
            let listeners = try [SampleRate.hz8000, .hz16000, .hz24000, .hz48000].map { try room.join(rate: $0) }
            let movers = try [room.join(rate: .hz16000), room.join(rate: try SampleRate(hertz: 22050))]
            engine.tick()
            for p in listeners + movers + [talker] { _ = p.pullAll() }
            talker.push(samples: Signal.sine(frequency: 440, dBFS: -6, sampleRate: 24000, count: 24000 * 2))
            let plan: [Int: [(Int, SampleRate)]] = [
                20: [(0, .hz24000), (1, .hz8000)], 40: [(0, .hz8000)], 60: [(0, .hz48000), (1, .hz16000)],
                80: [(0, .hz16000), (1, try SampleRate(hertz: 22050))],
            ]
            var heard = [[Int16]](repeating: [], count: listeners.count)
            for t in 0..<100 {
                if moving, let changes = plan[t] {
                    for (m, rate) in changes { try movers[m].setSampleRate(rate) }
                }
                engine.tick()
                engine.drainEvents()
                for (i, l) in listeners.enumerated() { heard[i] += l.pullAll() }
                for p in movers + [talker] { _ = p.pullAll() }
            }
            return heard
        }
        let still = try run(moving: false)
        let moved = try run(moving: true)
        let rates = [8000, 16000, 24000, 48000]
        for i in still.indices {
            #expect(same(still[i], moved[i]), "listener at \(rates[i]) Hz")
            // The tone's own largest step at this rate, plus a rounding LSB; skip the first blocks
            // (the tone's onset through the filters).
            let own = Signal.amplitude(dBFS: -6) * 2 * sin(Double.pi * 440 / Double(rates[i])) + 1
            let s = moved[i].dropFirst(rates[i] / 50 * 3)
            let step = zip(s, s.dropFirst()).map { abs(Int($1) - Int($0)) }.max() ?? 0
            #expect(Double(step) <= own, "listener at \(rates[i]) Hz: step \(step) > \(own)")
        }
    }

    /// A talker that changes rate while it speaks: its voice moves from one path to another (exact
    /// at one rate, through a filter's delay at another). Others hear a short crossfade across the
    /// change, never a step: the largest sample step of every listener stays within the tone's own
    /// (plus the crossfade's slope), over the whole run, at every change (24 → 16 → 48 → 8 kHz, streamed a block per tick with a block of
    /// lead, as a real-time agent would).
    @Test func talkersOwnRateChangeIsFadedNotStepped() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let talker = try room.join(rate: .hz24000)
        let listenerRates = [8000, 16000, 24000, 48000]
        let listeners = try listenerRates.map { try room.join(rate: try SampleRate(hertz: $0)) }
        let changes: [Int: Int] = [30: 16000, 60: 48000, 80: 8000]
        var rate = 24000
        // The tone is a function of absolute time, so each rate's blocks continue it.
        func block(_ tick: Int, _ rate: Int) -> [Int16] {
            let n = rate / 50
            let a = Signal.amplitude(dBFS: -6)
            return (0..<n).map { i in
                Int16((a * sin(2 * Double.pi * 440 * (Double(tick) * 0.02 + Double(i) / Double(rate)))).rounded())
            }
        }
        talker.push(samples: block(0, rate))
        var heard = [[Int16]](repeating: [], count: listeners.count)
        for t in 0..<110 {
            if let next = changes[t] {
                rate = next
                try talker.setSampleRate(try SampleRate(hertz: rate))
                talker.push(samples: block(t, rate))
            }
            talker.push(samples: block(t + 1, rate))
            engine.tick()
            engine.drainEvents()
            for (i, l) in listeners.enumerated() { heard[i] += l.pullAll() }
            _ = talker.pullAll()
        }
        for (i, r) in listenerRates.enumerated() {
            // The tone's own largest step at this rate, with 15 % for the crossfade: the two paths'
            // delays differ by about a millisecond (half a cycle of 440 Hz through 24 → 48 → 16 kHz),
            // so the fade's slope times their difference adds to the step (measured: at most 10 %).
            // A click is a step of the order of the amplitude (15,000–17,000 here with the overlap
            // unfaded).
            let own = 1.15 * Signal.amplitude(dBFS: -6) * 2 * sin(Double.pi * 440 / Double(r)) + 2
            let s = heard[i].dropFirst(r / 50 * 3)
            let steps = zip(s, s.dropFirst()).map { abs(Int($1) - Int($0)) }
            let step = steps.max() ?? 0
            let at = (steps.firstIndex(of: step) ?? 0) / (r / 50) + 3
            #expect(Double(step) <= own, "listener at \(r) Hz: step \(step) > \(own) in tick \(at)")
            // And the tone is heard throughout (the fades are dips, not gaps of a tick or more).
            #expect(s.count >= 100 * r / 50, "listener at \(r) Hz heard \(s.count) samples")
        }
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

@Suite("Quiet rooms")
struct QuietRoomTests {
    /// A room with no talker and no receiver skips its ticks (it costs one load), and wakes for
    /// anything an I/O thread does: audio, the receive flag, a mark, a clear, a rate change.
    @Test func aQuietRoomWakesForEverything() throws {
        let (engine, log) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let a = try room.join(rate: .hz16000, receiving: false)
        let b = try room.join(rate: .hz16000, receiving: false)
        for _ in 0..<20 { engine.tick() }
        #expect(a.pullAll().isEmpty && b.pullAll().isEmpty)
        b.setReceiving(true)
        let tone = Signal.sine(frequency: 500, dBFS: -6, sampleRate: 16000, count: 10 * 320)
        a.push(samples: tone)
        let m = a.mark()
        var heard: [Int16] = []
        for _ in 0..<12 {
            engine.tick()
            heard += b.pullAll()
        }
        #expect(same(heard, tone + [Int16](repeating: 0, count: 2 * 320)))
        engine.drainEvents()
        #expect(log.take().contains(.markPlayed(a.id, mark: m.id)))
        // Quiet again (nobody receives, nobody talks), then a clear and a rate change are served.
        b.setReceiving(false)
        for _ in 0..<20 { engine.tick() }
        a.push(samples: tone)
        for _ in 0..<20 { engine.tick() }
        a.push(samples: tone)
        let request = a.requestClear()
        engine.tick()
        engine.drainEvents()
        #expect(log.take().contains { if case .cleared(a.id, _, _, request) = $0 { true } else { false } })
        #expect(try b.setSampleRate(.hz24000))
        b.setReceiving(true)
        a.push(samples: tone)
        var later: [Int16] = []
        for _ in 0..<12 {
            engine.tick()
            later += b.pullAll()
        }
        // The tick that applies the rate change delivers no block to `b`: its old and new states
        // fade across it, and each would hear the other (its own voice).
        #expect(later.count == 11 * 480)
        #expect(Analysis.rms(later) > 1000)
    }
}

@Suite("Rate group churn")
struct RateGroupChurnTests {
    /// A talker changing rate every tick leaves a draining group behind each time; the table fills
    /// and an empty group is retired early. Nothing breaks: a listener keeps hearing it, and once it
    /// settles the room is back to two conversions per tick and everything is freed on leaving.
    @Test func rateChangesEveryTickFillTheGroupTable() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000, capacity: 2)
        let talker = try room.join(rate: .hz16000)
        let listener = try room.join(rate: .hz48000)
        engine.tick()
        let rates = try [8000, 11000, 12000, 16000, 22050, 24000, 32000, 44100, 8050, 9000, 10000, 12500, 14000]
            .map { try SampleRate(hertz: $0) }
        var heard: [Int16] = []
        for (t, rate) in (rates + rates).enumerated() {
            try talker.setSampleRate(rate)
            talker.push(samples: speechLike(rate: rate.hertz, count: rate.blockSampleCount, seed: UInt64(t)))
            engine.tick()
            engine.drainEvents()
            heard += listener.pullAll()
            _ = talker.pullAll()
        }
        #expect(heard.count == (2 * rates.count + 1) * 960)
        #expect(Analysis.rms(Array(heard[960...])) > 500)
        try talker.setSampleRate(.hz16000)
        let before = room.converterCallCount
        for _ in 0..<20 {
            talker.push(samples: speechLike(rate: 16000, count: 320))
            engine.tick()
            engine.drainEvents()
            _ = listener.pullAll()
        }
        // The 16 kHz group's up-conversion only (nobody outside it talks, nobody else is at 16 kHz),
        // once the other groups have drained.
        #expect((room.converterCallCount - before) <= 20 + 12 * 5, "\(room.converterCallCount - before)")
        let settled = room.converterCallCount
        for _ in 0..<10 {
            talker.push(samples: speechLike(rate: 16000, count: 320))
            engine.tick()
        }
        #expect(room.converterCallCount - settled == 10)
        talker.leave()
        listener.leave()
        for _ in 0..<10 { engine.tick() }
        engine.drainEvents()
    }
}
