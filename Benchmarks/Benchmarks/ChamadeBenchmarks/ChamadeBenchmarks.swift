import Benchmark
import ChamadeCore
import ChamadeDSP
import ChamadeEngine
import Foundation

// Every tick-path stage, one 20 ms block per iteration (scaling factor kilo: each sample runs a
// thousand blocks and reports per block). Set-up happens before `startMeasurement()`, so the malloc
// counts are those of the measured blocks alone: they must be 0.

let metrics: [BenchmarkMetric] = [.wallClock, .cpuTotal, .mallocCountTotal, .instructions]

func blockConfiguration(_ seconds: Int = 1) -> Benchmark.Configuration {
    .init(metrics: metrics, timeUnits: .nanoseconds, scalingFactor: .kilo, maxDuration: .seconds(seconds),
          maxIterations: 1_000_000)
}

/// A speech-like signal: a few tones plus deterministic noise, at `rate`, `seconds` long.
func speechLike(_ rate: SampleRate, blocks: Int) -> [Float] {
    var x: UInt32 = 12345
    return (0..<(blocks * rate.blockSampleCount)).map { i in
        x = x &* 1_664_525 &+ 1_013_904_223
        let t = Float(i) / Float(rate.hertz)
        let noise = Float(Int32(bitPattern: x) >> 16) / 32768 * 0.02
        return 0.3 * sin(2 * .pi * 220 * t) + 0.1 * sin(2 * .pi * 1330 * t) + noise
    }
}

let benchmarks: @Sendable () -> Void = {
    // MARK: converter, each type × each pair among 8/16/24/48 kHz
    let rates: [SampleRate] = [.hz8000, .hz16000, .hz24000, .hz48000]
    for quality in [ConverterQuality.fastest, .medium, .best, .linear] {
        for a in rates {
            for b in rates where a != b {
                Benchmark("convert \(quality) \(a.hertz / 1000)k→\(b.hertz / 1000)k", configuration: blockConfiguration()) {
                    benchmark in
                    var converter = try! SampleRateConverter(from: a, to: b, quality: quality)
                    let input = speechLike(a, blocks: 50)
                    var output = [Float](repeating: 0, count: b.blockSampleCount)
                    input.withUnsafeBufferPointer { inp in
                        output.withUnsafeMutableBufferPointer { out in
                            let n = a.blockSampleCount
                            for k in 0..<5 { converter.process(UnsafeBufferPointer(rebasing: inp[(k * n)..<((k + 1) * n)]), into: out) }
                            benchmark.startMeasurement()
                            for i in benchmark.scaledIterations {
                                let k = i % 50
                                converter.process(UnsafeBufferPointer(rebasing: inp[(k * n)..<((k + 1) * n)]), into: out)
                            }
                            benchmark.stopMeasurement()
                            blackHole(out[0])
                        }
                    }
                }
            }
        }
    }

    // MARK: aligner: random chunk sizes in, one 48 kHz block out per iteration
    Benchmark("aligner 48k random chunks", configuration: blockConfiguration()) { benchmark in
        var aligner = FrameAligner(sampleRate: .hz48000, capacitySampleCount: 48000 * 2)
        var seed: UInt64 = 99
        let bytes = [UInt8](repeating: 0x5a, count: 4801)
        var block = [Int16](repeating: 0, count: 960)
        bytes.withUnsafeBytes { raw in
            block.withUnsafeMutableBufferPointer { out in
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    // Keep about one block's worth flowing in per block out, in odd-sized chunks.
                    while aligner.queuedSampleCount() < 960 {
                        seed = seed &* 6_364_136_223_846_793_005 &+ 1
                        let size = Int(seed >> 33) % 3841 + 1
                        aligner.append(UnsafeRawBufferPointer(rebasing: raw[0..<size]))
                    }
                    blackHole(aligner.nextBlock(into: out))
                }
                benchmark.stopMeasurement()
            }
        }
    }

    // MARK: mix-minus kernel at 48 kHz: total + every participant's output
    for n in [10, 100, 1000] {
        let config = Benchmark.Configuration(
            metrics: metrics, timeUnits: .nanoseconds, scalingFactor: n >= 1000 ? .one : .kilo,
            maxDuration: .seconds(1), maxIterations: 1_000_000)
        Benchmark("mix-minus N=\(n) 48k", configuration: config) { benchmark in
            let samples = 960
            var x: UInt32 = 7
            let rows = (0..<(n * samples)).map { _ -> Int16 in
                x = x &* 1_664_525 &+ 1_013_904_223
                return Int16(truncatingIfNeeded: Int32(bitPattern: x) >> 20)
            }
            var total = [Int32](repeating: 0, count: samples)
            var outputs = [Int16](repeating: 0, count: n * samples)
            rows.withUnsafeBufferPointer { r in
                total.withUnsafeMutableBufferPointer { t in
                    outputs.withUnsafeMutableBufferPointer { o in
                        benchmark.startMeasurement()
                        for _ in benchmark.scaledIterations {
                            MixMinus.mix(rows: r, participantCount: n, sampleCount: samples, total: t, outputs: o)
                        }
                        benchmark.stopMeasurement()
                        blackHole(o[0])
                    }
                }
            }
        }
    }

    // MARK: ring: push a random 1–4800 samples, pop a 960-sample block (one thread)
    Benchmark("ring push random, pop 960", configuration: blockConfiguration()) { benchmark in
        let ring = SPSCRing<Int16>(capacity: 48000)
        var producer = ring.takeProducer()
        var consumer = ring.takeConsumer()
        let chunk = [Int16](repeating: 3, count: 4800)
        var block = [Int16](repeating: 0, count: 960)
        var seed: UInt64 = 5
        chunk.withUnsafeBufferPointer { c in
            block.withUnsafeMutableBufferPointer { b in
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    seed = seed &* 6_364_136_223_846_793_005 &+ 1
                    let size = Int(seed >> 33) % 4800 + 1
                    _ = producer.write(UnsafeBufferPointer(rebasing: c[0..<size]))
                    _ = consumer.read(into: b)
                    if consumer.availableToRead() > 40000 { _ = consumer.discardAll() }
                }
                benchmark.stopMeasurement()
                blackHole(b[0])
            }
        }
    }

    // MARK: the harness's own cost, the baseline the malloc counts are compared with
    Benchmark("empty (harness baseline)", configuration: .init(metrics: metrics, scalingFactor: .one, maxDuration: .seconds(1))) {
        benchmark in
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { blackHole(0) }
        benchmark.stopMeasurement()
    }

    // MARK: whole-room tick (virtual clock): N participants at 8/16/24/48 kHz in a 48 kHz room, every
    // one receiving; all talking, or some. One iteration = push one block per talker, one tick, pull
    // every block: the room's whole real-time path plus its I/O hand-off. Built once in `setup`.
    // 100 and 1000 all talking: with rate groups the conversion cost is two calls per non-native
    // rate (six here), whatever N, so these show what mixing and the I/O hand-off cost per participant.
    for (n, talkers) in [(10, 10), (100, 100), (100, 5), (500, 5), (500, 50), (1000, 1000)] {
        let config = Benchmark.Configuration(
            metrics: metrics, timeUnits: .microseconds, scalingFactor: .one, maxDuration: .seconds(2),
            maxIterations: 100_000)
        let name = "room tick N=\(n) talkers=\(talkers)"
        Benchmark(name, configuration: config) { benchmark in
            let bench = RoomBench.current!
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { bench.step() }
            benchmark.stopMeasurement()
        } setup: {
            RoomBench.current = RoomBench(participants: n, talkers: talkers)
            for _ in 0..<60 { RoomBench.current!.step() }
        } teardown: {
            RoomBench.current?.engine.shutdown()
            RoomBench.current = nil
        }
    }
}

/// A room driven by the virtual clock, for the whole-tick benchmarks.
final class RoomBench: @unchecked Sendable {
    nonisolated(unsafe) static var current: RoomBench?
    let engine = Engine(configuration: .init(clock: .virtual, shardCount: 1))
    let participants: [Participant]
    let talkers: Int
    let audio: [[Int16]]
    let rates: [SampleRate] = [.hz8000, .hz16000, .hz24000, .hz48000]
    let block = UnsafeMutableBufferPointer<Int16>.allocate(capacity: 960)
    var k = 0

    init(participants n: Int, talkers: Int) {
        let room = try! engine.createRoom(nativeRate: .hz48000, capacity: n)
        participants = (0..<n).map { [rates] in try! room.join(rate: rates[$0 % 4]) }
        self.talkers = talkers
        audio = rates.map { rate in speechLike(rate, blocks: 50).map { Int16(($0 * 32767).rounded()) } }
        engine.tick()
        engine.drainEvents()
    }

    func step() {
        for i in 0..<talkers {
            let size = rates[i % 4].blockSampleCount
            audio[i % 4].withUnsafeBytes { raw in
                _ = participants[i].push(UnsafeRawBufferPointer(rebasing: raw[(2 * size * (k % 50))..<(2 * size * (k % 50 + 1))]))
            }
        }
        k += 1
        engine.tick()
        for p in participants {
            while p.pullBlock(into: UnsafeMutableBufferPointer(rebasing: block[0..<p.sampleRate.blockSampleCount])) {}
        }
    }
}
