public import ChamadeCore
public import ChamadeEngine
import Foundation
import Histogram

/// `chamade bench`: rooms of participants on the real 20 ms clock, talkers pushing speech-like
/// audio in random chunk sizes from their own thread, every participant pulling its mix-minus from
/// another; reports the per-tick processing time, lateness, CPU per participant, head-room, drops
/// and heap allocations on the tick in steady state (measured by the malloc counter).
public enum Bench {
    public struct Options: Sendable {
        public var participants: Int
        public var talkers: Int?
        /// Receiving participants per room (default: all); the others neither receive nor are pulled.
        public var receivers: Int?
        public var rooms: Int
        public var seconds: Double
        public var nativeRate: SampleRate
        public var warmUpSeconds: Double

        public init(
            participants: Int = 10, talkers: Int? = nil, receivers: Int? = nil, rooms: Int = 1, seconds: Double = 10,
            nativeRate: SampleRate = .hz48000, warmUpSeconds: Double = 1
        ) {
            self.participants = participants
            self.talkers = talkers
            self.receivers = receivers
            self.rooms = rooms
            self.seconds = seconds
            self.nativeRate = nativeRate
            self.warmUpSeconds = warmUpSeconds
        }
    }

    public struct Report: Sendable, Codable {
        public var rooms: Int
        public var participants: Int
        public var talkers: Int
        public var receivers: Int
        public var seconds: Double
        public var ticks: Int
        public var late_ticks: Int
        public var skipped_ticks: Int
        public var tick_us: Percentiles
        public var cpu_us_per_participant_tick: Double
        public var headroom: Double
        public var allocs_per_tick: Double
        /// `src_process` calls per 20 ms tick, summed over the rooms (rate groups: at most two per
        /// non-native rate per room, whatever the number of talkers).
        public var converter_calls_per_tick: Double
        /// CPU time of the clock threads over the measurement, in % of one core (from
        /// /proc/self/task; -1 where unavailable).
        public var clock_cpu_percent: Double
        public var allocation_counting: Bool
        public var frames_dropped: Int
        public var frames_received: Int
        public var shards: Int
        /// p99 tick time per second of the run (µs), for the plot.
        public var p99_per_second_us: [Double]
        /// Tick-time histogram for the plot: (upper bound µs, count).
        public var histogram_us: [[Double]]

        public struct Percentiles: Sendable, Codable {
            public var p50: Double
            public var p99: Double
            public var p999: Double
            public var max: Double
        }
    }

    /// The rates participants cycle through.
    public static let rates: [SampleRate] = [.hz8000, .hz16000, .hz24000, .hz48000]

    public static func run(_ options: Options, progress: ((String) -> Void)? = nil) throws -> Report {
        let talkersPerRoom = min(options.talkers ?? options.participants, options.participants)
        let receiversPerRoom = min(options.receivers ?? options.participants, options.participants)
        let engine = Engine(configuration: .init(clock: .realTime))
        defer { engine.shutdown() }
        var rooms: [Room] = []
        var everyone: [Participant] = []
        var talkers: [Participant] = []
        for _ in 0..<options.rooms {
            let room = try engine.createRoom(nativeRate: options.nativeRate, capacity: options.participants)
            rooms.append(room)
            for i in 0..<options.participants {
                let p = try room.join(rate: rates[i % rates.count], receiving: i < receiversPerRoom)
                if i < receiversPerRoom { everyone.append(p) }
                if i < talkersPerRoom { talkers.append(p) }
            }
        }
        let speech = Dictionary(uniqueKeysWithValues: rates.map { ($0.hertz, speechLike(rate: $0, seconds: 3)) })

        let talkerList = talkers
        let everyoneList = everyone
        let stop = LockedFlag()
        let received = LockedCounter()
        // One feeder thread: each talker gets 20 ms of audio every 20 ms, in random chunk sizes.
        let feeder = Thread {
            var rng = SeededRandom(seed: 7)
            var offsets = [Int](repeating: 0, count: talkerList.count)
            for i in offsets.indices { offsets[i] = Int(rng.next() % 100_000) * 2 }
            var next = MonotonicClock.now()
            while !stop.isSet {
                for (i, t) in talkerList.enumerated() {
                    let bytes = speech[t.sampleRate.hertz]!
                    var remaining = t.sampleRate.blockByteCount
                    while remaining > 0 {
                        let size = min(remaining, Int(rng.next() % UInt64(t.sampleRate.blockByteCount)) + 1)
                        let start = offsets[i] % (bytes.count - size)
                        bytes[start..<(start + size)].withUnsafeBytes { _ = t.push($0) }
                        offsets[i] = start + size
                        remaining -= size
                    }
                }
                next += 20_000_000
                MonotonicClock.sleep(until: next)
            }
        }
        // One reader thread: pulls every participant's blocks every 10 ms.
        let reader = Thread {
            var block = [Int16](repeating: 0, count: 960)
            while !stop.isSet {
                var n = 0
                for p in everyoneList {
                    let count = p.sampleRate.blockSampleCount
                    while block.withUnsafeMutableBufferPointer({ p.pullBlock(into: UnsafeMutableBufferPointer(rebasing: $0[0..<count])) }) {
                        n += 1
                    }
                }
                received.add(n)
                usleep(10_000)
            }
        }
        feeder.start()
        reader.start()
        engine.start()

        // Warm up, then measure.
        Foundation.Thread.sleep(forTimeInterval: options.warmUpSeconds)
        engine.drainTickTimes { _ in }
        let start = engine.statistics()
        let startAllocations = Engine.tickAllocationCount
        let startTicks = rooms.map { Int($0.tickCount) }
        let startCalls = rooms.map(\.converterCallCount)
        let startClockCPU = clockThreadCPUSeconds()
        let startReceived = received.value
        var histogram = Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
        var perSecond: [Double] = []
        let began = MonotonicClock.now()
        let end = began + Int64(options.seconds * 1e9)
        while MonotonicClock.now() < end {
            let secondEnd = min(end, MonotonicClock.now() + 1_000_000_000)
            MonotonicClock.sleep(until: secondEnd)
            var second = Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
            engine.drainTickTimes { ns in
                _ = histogram.record(UInt64(max(0, ns)))
                _ = second.record(UInt64(max(0, ns)))
            }
            if second.totalCount > 0 { perSecond.append(Double(second.valueAtPercentile(99)) / 1000) }
            progress?("bench: \(perSecond.count) s, p99 \(String(format: "%.1f", perSecond.last ?? 0)) µs")
        }
        let elapsed = Double(MonotonicClock.now() - began) / 1e9
        let clockCPU = clockThreadCPUSeconds().map { end in startClockCPU.map { end - $0 } ?? -1 } ?? -1
        let calls = zip(rooms, zip(startCalls, startTicks)).reduce(0.0) { sum, r in
            let ticks = Int(r.0.tickCount) - r.1.1
            return sum + (ticks > 0 ? Double(r.0.converterCallCount - r.1.0) / Double(ticks) : 0)
        }
        let final = engine.statistics()
        let allocations = Engine.tickAllocationCount - startAllocations
        stop.set()
        let participantTicks = zip(rooms, startTicks).reduce(0) { $0 + (Int($1.0.tickCount) - $1.1) * options.participants }
        let shardTicks = final.ticks - start.ticks
        let tickNs = final.tickNanosecondsTotal - start.tickNanosecondsTotal
        let p99 = Double(histogram.valueAtPercentile(99)) / 1000
        var buckets: [[Double]] = []
        for v in histogram.linearBucketValues(valueUnitsPerBucket: 10_000) where v.count > 0 {
            buckets.append([Double(v.value) / 1000, Double(v.count)])
        }
        return Report(
            rooms: options.rooms, participants: options.participants, talkers: talkersPerRoom,
            receivers: receiversPerRoom, seconds: elapsed,
            ticks: shardTicks, late_ticks: final.lateTicks - start.lateTicks,
            skipped_ticks: final.skippedTicks - start.skippedTicks,
            tick_us: .init(
                p50: Double(histogram.valueAtPercentile(50)) / 1000, p99: p99,
                p999: Double(histogram.valueAtPercentile(99.9)) / 1000, max: Double(histogram.max) / 1000),
            cpu_us_per_participant_tick: participantTicks > 0 ? Double(tickNs) / 1000 / Double(participantTicks) : 0,
            headroom: p99 > 0 ? 20_000 / p99 : .infinity,
            allocs_per_tick: shardTicks > 0 ? Double(allocations) / Double(shardTicks) : 0,
            converter_calls_per_tick: calls,
            clock_cpu_percent: clockCPU >= 0 ? 100 * clockCPU / elapsed : -1,
            allocation_counting: Engine.isCountingTickAllocations,
            frames_dropped: final.droppedBlocks - start.droppedBlocks,
            frames_received: received.value - startReceived,
            shards: engine.configuration.shardCount,
            p99_per_second_us: perSecond, histogram_us: buckets)
    }

    /// User + system CPU seconds of the engine's clock threads (named `chamade-clock…`), from
    /// /proc/self/task/*/stat; nil where there is no /proc.
    static func clockThreadCPUSeconds() -> Double? { threadCPUSeconds(named: "chamade-clock") }

    /// User + system CPU seconds of this process's threads whose name starts with `prefix`.
    static func threadCPUSeconds(named prefix: String) -> Double? {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return nil }
        let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
        var total = 0.0
        for task in tasks {
            guard let comm = try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8),
                comm.hasPrefix(prefix),
                let stat = try? String(contentsOfFile: "/proc/self/task/\(task)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
            total += (user + system) / ticksPerSecond
        }
        return total
    }

    /// Three seconds of speech-like PCM bytes: a voiced fundamental with harmonics under a syllable
    /// envelope, with pauses, plus a little noise; deterministic.
    static func speechLike(rate: SampleRate, seconds: Int) -> [UInt8] {
        var rng = SeededRandom(seed: UInt64(rate.hertz))
        let n = rate.hertz * seconds
        var samples = [Int16](repeating: 0, count: n)
        for i in 0..<n {
            let t = Double(i) / Double(rate.hertz)
            let f0 = 120 + 30 * sin(2 * .pi * 0.7 * t)
            var v = 0.0
            for h in 1...6 where Double(h) * f0 < Double(rate.hertz) / 2 { v += sin(2 * .pi * Double(h) * f0 * t) / Double(h) }
            let syllable = max(0, sin(2 * .pi * 3.5 * t))
            let pause = (Int(t * 2) % 5 == 4) ? 0.0 : 1.0
            let noise = Double(Int64(bitPattern: rng.next() % 2001) - 1000) / 1000
            samples[i] = Int16(clamping: Int(6000 * v * syllable * pause + 200 * noise))
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(2 * n)
        for s in samples {
            bytes.append(UInt8(truncatingIfNeeded: s))
            bytes.append(UInt8(truncatingIfNeeded: s >> 8))
        }
        return bytes
    }

    /// An SVG of the tick-time histogram and the per-second p99 over the run.
    public static func svg(_ r: Report) -> String {
        let w = 900.0, h = 320.0, pad = 50.0
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(2 * h + 40))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(pad)\" y=\"20\" font-size=\"14\">chamade bench: \(r.rooms) room(s) × \(r.participants) participants, \(r.talkers) talking; p50 \(f(r.tick_us.p50)) µs, p99 \(f(r.tick_us.p99)) µs, max \(f(r.tick_us.max)) µs, late \(r.late_ticks)</text>\n"
        // Histogram.
        let maxX = max(1, r.histogram_us.map { $0[0] }.max() ?? 1)
        let maxY = max(1, r.histogram_us.map { $0[1] }.max() ?? 1)
        let top = 40.0
        s += axes(x0: pad, y0: top + h - pad, width: w - 2 * pad, height: h - 2 * pad, xLabel: "tick processing time (µs)", yLabel: "ticks", xMax: maxX, yMax: maxY)
        let barW = max(1, (w - 2 * pad) / max(1, maxX / 10))
        for b in r.histogram_us {
            let x = pad + (b[0] / maxX) * (w - 2 * pad) - barW
            let bh = (b[1] / maxY) * (h - 2 * pad)
            s += "<rect x=\"\(f(x))\" y=\"\(f(top + h - pad - bh))\" width=\"\(f(barW))\" height=\"\(f(bh))\" fill=\"steelblue\"/>\n"
        }
        // p99 per second.
        let top2 = top + h
        let maxP = max(1, r.p99_per_second_us.max() ?? 1)
        let count = max(1, r.p99_per_second_us.count - 1)
        s += axes(x0: pad, y0: top2 + h - pad, width: w - 2 * pad, height: h - 2 * pad, xLabel: "second of the run", yLabel: "p99 tick time (µs)", xMax: Double(count), yMax: maxP)
        let points = r.p99_per_second_us.enumerated().map { i, v in
            "\(f(pad + Double(i) / Double(count) * (w - 2 * pad))),\(f(top2 + h - pad - v / maxP * (h - 2 * pad)))"
        }.joined(separator: " ")
        s += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"crimson\" stroke-width=\"2\"/>\n"
        s += "</svg>\n"
        return s
    }

    private static func axes(x0: Double, y0: Double, width: Double, height: Double, xLabel: String, yLabel: String, xMax: Double, yMax: Double) -> String {
        var s = "<line x1=\"\(f(x0))\" y1=\"\(f(y0))\" x2=\"\(f(x0 + width))\" y2=\"\(f(y0))\" stroke=\"black\"/>\n"
        s += "<line x1=\"\(f(x0))\" y1=\"\(f(y0))\" x2=\"\(f(x0))\" y2=\"\(f(y0 - height))\" stroke=\"black\"/>\n"
        s += "<text x=\"\(f(x0 + width / 2))\" y=\"\(f(y0 + 30))\" text-anchor=\"middle\">\(xLabel)</text>\n"
        s += "<text x=\"\(f(x0 - 8))\" y=\"\(f(y0 - height - 8))\">\(yLabel)</text>\n"
        for k in 0...4 {
            let fx = Double(k) / 4
            s += "<text x=\"\(f(x0 + fx * width))\" y=\"\(f(y0 + 15))\" text-anchor=\"middle\">\(f(fx * xMax))</text>\n"
            s += "<text x=\"\(f(x0 - 5))\" y=\"\(f(y0 - fx * height + 4))\" text-anchor=\"end\">\(f(fx * yMax))</text>\n"
        }
        return s
    }

    private static func f(_ v: Double) -> String { String(format: "%.1f", v) }
}

final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    var isSet: Bool { lock.withLock { flag } }
    func set() { lock.withLock { flag = true } }
}

final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func add(_ n: Int) { lock.withLock { count += n } }
}

/// A joinable real thread for the bench's feeder and reader.
final class Thread: @unchecked Sendable {
    private let thread: Foundation.Thread
    init(_ body: @escaping @Sendable () -> Void) { thread = Foundation.Thread(block: body) }
    func start() { thread.start() }
}
