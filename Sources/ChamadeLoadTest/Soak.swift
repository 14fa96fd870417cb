import ChamadeCore
import ChamadeMedia
import Foundation
import Histogram
import HummingbirdWSClient
import Logging
import NIOCore
import NIOWebSocket

/// `chamade loadtest --soak SECONDS --churn N`: a steady population of agents that join and leave
/// all the time, watched for drift (issue 13, SPEC §9).
///
/// Every agent slot lives one call after another: it creates a call, streams and listens for a
/// random lifetime (mean: agents ÷ churn minutes), ends the call and starts again, so about N
/// agents leave and N join every minute. The slots are mixed as a meeting gateway sees them:
/// native-rate agents, resampled ones (16 and 24 kHz into a 48 kHz room), agents sending marks and
/// clears, and slow readers that fall behind (not counted in the lost frames: the server is meant to
/// drop for them). Every 10 s the server's footprint and counters are sampled from `/metrics`.
public enum Soak {
    public struct Options: Sendable {
        public var base: LoadTest.Options
        /// Agents replaced per minute.
        public var churnPerMinute: Int
        public var sampleSeconds: Double

        public init(base: LoadTest.Options, churnPerMinute: Int, sampleSeconds: Double = 10) {
            (self.base, self.churnPerMinute, self.sampleSeconds) = (base, churnPerMinute, sampleSeconds)
        }
    }

    /// One 10-second sample.
    public struct Sample: Sendable, Codable {
        public var t: Double
        public var rss_mb: Double
        public var threads: Int
        public var fds: Int
        public var calls: Int
        public var websockets: Int
        public var late_ticks: Int
        public var server_dropped_frames: Int
        /// Agent-to-agent latency over the window (ms), nil without clicks heard.
        public var latency_p99_ms: Double?
        public var latency_p50_ms: Double?
    }

    public struct Report: Sendable, Codable {
        public var agents: Int
        public var rooms: Int
        public var seconds: Double
        public var churn_per_minute: Int
        public var calls_created: Int
        /// Of those, calls in `rtp` rooms: a leg opened and closed with each.
        public var rtp_leg_calls: Int
        /// Blocks the agents could not send before the tick they were meant for (the load
        /// generator's own stalls), dropped rather than sent late, and when those stalls were
        /// (seconds into the run, the first 20).
        public var late_blocks_dropped: Int
        public var late_block_times_s: [Double]
        public var connect_failures: Int
        /// Creates that got no answer in 30 s and were retried once (then counted in `calls_created`).
        public var create_retries: Int
        public var failures: [String]
        /// Frames of well-behaved agents (native, resampled, marks and clears): expected from the
        /// first frame each heard to its last, against what it received.
        public var frames_expected: Int
        public var frames_received: Int
        public var frames_lost: Int
        public var slow_reader_frames_received: Int
        /// Slow readers the server closed (they could not answer its pings in time).
        public var slow_readers_closed: Int
        public var marks_sent: Int
        public var marks_answered: Int
        public var clears_sent: Int
        public var clears_answered: Int
        public var late_ticks: Int
        public var latency_p99_first_minute_ms: Double
        public var latency_p99_last_minute_ms: Double
        /// RSS after the warm-up (the first minute, or a quarter of a shorter run). Drift: the mean
        /// of the second half of the steady samples against the first half's, in percent (a trend,
        /// what a leak makes). Swing: the largest departure of one sample from the first, which
        /// calls coming and going make without any trend.
        public var rss_after_warmup_mb: Double
        public var rss_drift_percent: Double
        public var rss_swing_percent: Double
        public var baseline: Footprint
        public var final: Footprint
        public var samples: [Sample]
    }

    public struct Footprint: Sendable, Codable {
        public var rss_mb: Double
        public var threads: Int
        public var fds: Int
    }

    enum Kind {
        case native, resampled16k, resampled24k, marksAndClears, slowReader
        /// An agent alone in an `rtp` room whose leg (PCMU) sends to the soak's echo peer: it hears
        /// itself through the leg, both ways over real UDP; a new leg (and port pair) each life.
        case rtpLeg

        /// The slot's kind: one in ten of each special kind, one in twenty slow readers and RTP
        /// legs, the rest native.
        static func of(slot: Int) -> Kind {
            switch slot % 20 {
            case 1, 11: .resampled16k
            case 5, 15: .resampled24k
            case 7, 17: .marksAndClears
            case 3: .slowReader
            case 13: .rtpLeg
            default: .native
            }
        }

        func rate(room: SampleRate) -> SampleRate {
            switch self {
            case .resampled16k: .hz16000
            case .resampled24k: (try? SampleRate(hertz: 24000)) ?? room
            default: room
            }
        }
    }

    /// One room's click schedule: every 100 ms one present agent (the first to claim the slot)
    /// sends a click, and the others time it.
    final class Room: @unchecked Sendable {
        // SAFETY: every field is behind `lock`.
        let lock = NSLock()
        var sendTimes: [Int: UInt64] = [:]
        var claimed = -1

        func claim(_ slot: Int, at time: UInt64) -> Bool {
            lock.withLock {
                guard slot > claimed else { return false }
                claimed = slot
                sendTimes[slot] = time
                // Old slots are never looked up again.
                if slot % 100 == 0 { sendTimes = sendTimes.filter { $0.key > slot - 50 } }
                return true
            }
        }

        func sendTime(_ slot: Int) -> UInt64? { lock.withLock { sendTimes[slot] } }
    }

    final class Tally: @unchecked Sendable {
        // SAFETY: every field is behind `lock`.
        let lock = NSLock()
        var expected = 0, received = 0, slowReceived = 0, slowReadersClosed = 0
        var marksSent = 0, marksAnswered = 0, clearsSent = 0, clearsAnswered = 0
        var calls = 0, connectFailures = 0, createRetries = 0, legCalls = 0
        var lateBlocks = 0
        var lateTimes: [UInt64] = []
        /// The first few failures, in words, for the report.
        var failureSamples: [String] = []
        /// (arrival time, latency) of every click heard.
        var latencies: [(UInt64, UInt64)] = []
    }

    static let slotNs: UInt64 = 100_000_000
    static let blockNs: UInt64 = 20_000_000

    public static func run(_ o: Options, progress: (@Sendable (String) -> Void)? = nil) async throws -> Report {
        let b = o.base
        let runID = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let baselineMetrics = try await LoadTest.metricValues(b)
        let baseline = footprint(baselineMetrics)
        let rooms = (0..<b.rooms).map { _ in Room() }
        let tally = Tally()
        let echo = try UDPEcho()
        defer { echo.stop() }
        let clock0 = DispatchTime.now().uptimeNanoseconds
        let end = clock0 + UInt64(o.sampleSeconds * 1e9 * (b.seconds / o.sampleSeconds).rounded(.up))
        let meanLifetime = Double(b.agents) / Double(max(1, o.churnPerMinute)) * 60
        let logger = {
            var l = Logger(label: "soak")
            l.logLevel = .critical
            return l
        }()
        progress?(
            "soak: \(b.agents) agents in \(b.rooms) rooms for \(b.seconds) s, \(o.churnPerMinute) replaced a minute (mean life \(Int(meanLifetime)) s)"
        )
        var samples: [Sample] = []
        await withTaskGroup(of: [Sample].self) { group in
            group.addTask {
                await sampler(o, start: clock0, end: end, baseline: baselineMetrics, tally: tally, progress: progress)
            }
            for slot in 0..<b.agents {
                group.addTask {
                    var rng = SystemRandomNumberGenerator()
                    // Joining is spread over the first seconds (25 a second), not a burst of N.
                    try? await Task.sleep(nanoseconds: UInt64(slot) * 40_000_000)
                    // The first lives are spread from 0 to 1.5× the mean, so that leaving is steady
                    // from the start, not synchronized.
                    var lifetime = Double.random(in: 0.02...1.5, using: &rng) * meanLifetime
                    var life = 0
                    while DispatchTime.now().uptimeNanoseconds + 1_000_000_000 < end {
                        let room = slot % b.rooms
                        let leave = min(end, DispatchTime.now().uptimeNanoseconds + UInt64(max(1, lifetime) * 1e9))
                        await agentLife(
                            o, slot: slot, life: life, runID: runID, room: room, clicks: rooms[room], tally: tally, leave: leave,
                            echoPort: echo.port, logger: logger)
                        life += 1
                        lifetime = Double.random(in: 0.5...1.5, using: &rng) * meanLifetime
                    }
                    return []
                }
            }
            for await s in group { samples += s }
        }
        // Everything ended: once the server counts no call, give it a few seconds to close sockets
        // and give back what it held (SPEC §9: the idle footprint again).
        for _ in 0..<30 {
            if let m = try? await LoadTest.metricValues(b), (m["chamade_calls"] ?? 1) == 0 { break }
            try? await Task.sleep(nanoseconds: 1_000_000_000)
        }
        try? await Task.sleep(nanoseconds: 5_000_000_000)
        let final = footprint(try await LoadTest.metricValues(b))
        return report(o, samples: samples, tally: tally, baseline: baseline, final: final, clock0: clock0)
    }

    static func footprint(_ m: [String: Double]) -> Footprint {
        Footprint(
            rss_mb: (m["process_resident_memory_bytes"] ?? 0) / 1e6, threads: Int(m["process_threads"] ?? 0),
            fds: Int(m["process_open_fds"] ?? 0))
    }

    static func sampler(
        _ o: Options, start: UInt64, end: UInt64, baseline: [String: Double], tally: Tally, progress: (@Sendable (String) -> Void)?
    ) async -> [Sample] {
        var samples: [Sample] = []
        var k: UInt64 = 1
        let interval = UInt64(o.sampleSeconds * 1e9)
        var lastLatencyIndex = 0
        while start + k * interval <= end {
            let now = DispatchTime.now().uptimeNanoseconds
            if start + k * interval > now { try? await Task.sleep(nanoseconds: start + k * interval - now) }
            guard let m = try? await LoadTest.metricValues(o.base) else {
                k += 1
                continue
            }
            let window = tally.lock.withLock { () -> [UInt64] in
                defer { lastLatencyIndex = tally.latencies.count }
                return tally.latencies[lastLatencyIndex...].map(\.1)
            }
            let (p50, p99) = percentiles(window)
            let f = footprint(m)
            let s = Sample(
                t: Double(k) * o.sampleSeconds, rss_mb: f.rss_mb, threads: f.threads, fds: f.fds,
                calls: Int(m["chamade_calls"] ?? 0), websockets: Int(m["chamade_websockets"] ?? 0),
                late_ticks: Int((m["chamade_late_ticks_total"] ?? 0) - (baseline["chamade_late_ticks_total"] ?? 0)),
                server_dropped_frames: Int(
                    (m["chamade_socket_dropped_frames_total"] ?? 0) + (m["chamade_engine_dropped_blocks_total"] ?? 0)
                        - (baseline["chamade_socket_dropped_frames_total"] ?? 0) - (baseline["chamade_engine_dropped_blocks_total"] ?? 0)),
                latency_p99_ms: p99, latency_p50_ms: p50)
            samples.append(s)
            progress?(
                String(
                    format: "t=%4.0f s  rss %.0f MB  threads %d  fds %d  calls %d  late ticks %d  latency p50 %@ p99 %@ ms",
                    s.t, s.rss_mb, s.threads, s.fds, s.calls, s.late_ticks, p50.map { String(format: "%.1f", $0) } ?? "-",
                    p99.map { String(format: "%.1f", $0) } ?? "-"))
            k += 1
        }
        return samples
    }

    static func percentiles(_ ns: [UInt64]) -> (Double?, Double?) {
        guard !ns.isEmpty else { return (nil, nil) }
        var h = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for v in ns { _ = h.record(v) }
        return (Double(h.valueAtPercentile(50)) / 1e6, Double(h.valueAtPercentile(99)) / 1e6)
    }

    static func report(_ o: Options, samples: [Sample], tally: Tally, baseline: Footprint, final: Footprint, clock0: UInt64) -> Report {
        let b = o.base
        let duration = b.seconds
        let minute = min(60, duration / 2)
        let (first, last) = tally.lock.withLock { () -> ([UInt64], [UInt64]) in
            let t0 = tally.latencies.first?.0 ?? 0
            let t1 = tally.latencies.last?.0 ?? 0
            let span = UInt64(minute * 1e9)
            return (
                tally.latencies.filter { $0.0 < t0 + span }.map(\.1),
                tally.latencies.filter { $0.0 + span > t1 }.map(\.1)
            )
        }
        // Warm-up: the first minute, or a quarter of a shorter run. The sample at the very end is
        // taken as the agents leave, so it is not steady state.
        let warm = min(60, duration / 4)
        let steady = samples.filter { $0.t >= warm && $0.t < duration }
        let reference = steady.first?.rss_mb ?? 0
        let swing = steady.map { abs($0.rss_mb - reference) / max(reference, 1) * 100 }.max() ?? 0
        let half = steady.count / 2
        let mean = { (s: ArraySlice<Sample>) in s.isEmpty ? 0 : s.map(\.rss_mb).reduce(0, +) / Double(s.count) }
        let early = mean(steady[..<half]), late = mean(steady[half...])
        let drift = early > 0 ? abs(late - early) / early * 100 : 0
        return tally.lock.withLock {
            Report(
                agents: b.agents, rooms: b.rooms, seconds: duration, churn_per_minute: o.churnPerMinute,
                calls_created: tally.calls, rtp_leg_calls: tally.legCalls,
                late_blocks_dropped: tally.lateBlocks,
                late_block_times_s: tally.lateTimes.prefix(20).map { Double($0 &- clock0) / 1e9 },
                connect_failures: tally.connectFailures, create_retries: tally.createRetries, failures: tally.failureSamples,
                frames_expected: tally.expected, frames_received: tally.received,
                frames_lost: max(0, tally.expected - tally.received), slow_reader_frames_received: tally.slowReceived,
                slow_readers_closed: tally.slowReadersClosed,
                marks_sent: tally.marksSent, marks_answered: tally.marksAnswered,
                clears_sent: tally.clearsSent, clears_answered: tally.clearsAnswered,
                late_ticks: samples.last?.late_ticks ?? 0,
                latency_p99_first_minute_ms: percentiles(first).1 ?? 0,
                latency_p99_last_minute_ms: percentiles(last).1 ?? 0,
                rss_after_warmup_mb: reference, rss_drift_percent: drift, rss_swing_percent: swing,
                baseline: baseline, final: final, samples: samples)
        }
    }

    /// One call of a slot: create, stream and listen until `leave`, end.
    static func agentLife(
        _ o: Options, slot: Int, life: Int, runID: String, room: Int, clicks: Room, tally: Tally, leave: UInt64,
        echoPort: Int, logger: Logger
    ) async {
        var b = o.base
        let kind = Kind.of(slot: slot)
        var meeting = "https://soak.chamade/\(runID)/room-\(room)"
        if kind == .rtpLeg {
            // A room of its own (the name makes the URL unique), with its own click schedule.
            b.platform = "rtp"
            meeting = "rtp://127.0.0.1:\(echoPort)?codec=pcmu&name=soak-\(runID)-\(slot)-\(life)"
        }
        let clicks = kind == .rtpLeg ? Room() : clicks
        let rate = kind == .rtpLeg ? .hz8000 : kind.rate(room: b.rate)
        let call: LoadTest.CreatedCall
        do {
            do {
                call = try await LoadTest.createCall(b, meeting: meeting, name: "soak-\(slot)-\(life)")
            } catch {
                // A client retries a create that got no answer; the retry is counted and reported.
                tally.lock.withLock {
                    tally.createRetries += 1
                    if tally.failureSamples.count < 5 { tally.failureSamples.append("create retried, \(kind) life \(life): \(error)") }
                }
                call = try await LoadTest.createCall(b, meeting: meeting, name: "soak-\(slot)-\(life)")
            }
        } catch {
            tally.lock.withLock {
                tally.connectFailures += 1
                if tally.failureSamples.count < 5 { tally.failureSamples.append("create, \(kind) life \(life): \(error)") }
            }
            try? await Task.sleep(nanoseconds: 1_000_000_000)
            return
        }
        tally.lock.withLock {
            tally.calls += 1
            if kind == .rtpLeg { tally.legCalls += 1 }
        }
        let wsURL = call.streamURL
        let block = rate.blockSampleCount
        do {
            try await WebSocketClient.connect(url: wsURL, configuration: .init(maxFrameSize: 1 << 20), logger: logger) {
                inbound, outbound, _ in
                try await outbound.write(.text("{\"type\":\"audio_config\",\"sample_rate\":\(rate.hertz),\"receive\":true}"))
                let sender = Task { try await send(kind, rate: rate, block: block, clicks: clicks, tally: tally, leave: leave, outbound: outbound) }
                var first: UInt64?
                var firstCounted: UInt64?
                var lastFrame: UInt64 = 0
                var received = 0
                var lastDetected = -1
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    let now = DispatchTime.now().uptimeNanoseconds
                    if now >= leave { break }
                    switch message {
                    case .text(let text):
                        if text.contains("\"type\":\"mark\"") { tally.lock.withLock { tally.marksAnswered += 1 } }
                        if text.contains("\"type\":\"cleared\"") { tally.lock.withLock { tally.clearsAnswered += 1 } }
                    case .binary(let frame):
                        if kind == .slowReader {
                            received += 1
                            try await Task.sleep(nanoseconds: 60_000_000)  // reads at a third of the pace
                            continue
                        }
                        guard frame.readableBytes == 2 * block else { continue }
                        // Counting starts 200 ms after the first frame, once the first was heard.
                        if first == nil { first = now + 200_000_000 }
                        if let f = first, now >= f {
                            received += 1
                            lastFrame = now
                            if firstCounted == nil { firstCounted = now }
                        }
                        // A leg's agent hears its own clicks back through the echo: not a latency
                        // between agents, so not timed.
                        guard let f = first, now >= f, kind != .rtpLeg, LoadTest.isLoud(frame) else { continue }
                        let slotNow = Int((now - 0) / slotNs)
                        for candidate in stride(from: slotNow, through: slotNow - 1, by: -1) where candidate > lastDetected {
                            if let sent = clicks.sendTime(candidate), sent <= now {
                                lastDetected = candidate
                                tally.lock.withLock { tally.latencies.append((now, now - sent)) }
                                break
                            }
                        }
                    }
                }
                sender.cancel()
                tally.lock.withLock {
                    if kind == .slowReader {
                        tally.slowReceived += received
                    } else if let f = firstCounted, received > 0 {
                        // Frames come on the server's 20 ms grid: first to last counted, inclusive.
                        tally.expected += Int((Double(lastFrame - f) / Double(blockNs)).rounded()) + 1
                        tally.received += received
                    }
                }
                try? await outbound.close(.normalClosure, reason: "done")
            }
        } catch {
            tally.lock.withLock {
                if kind == .slowReader {
                    // Too slow to answer the server's ping in time: closed by the server, as meant.
                    tally.slowReadersClosed += 1
                } else {
                    tally.connectFailures += 1
                    if tally.failureSamples.count < 5 { tally.failureSamples.append("\(kind) life \(life): \(error)") }
                }
            }
        }
        try? await LoadTest.deleteCall(b, call.id)
    }

    /// Streams 20 ms every 20 ms until `leave`: silence, a click when the room's slot is claimed,
    /// and for `.marksAndClears` a mark every second and a clear every five.
    static func send(
        _ kind: Kind, rate: SampleRate, block: Int, clicks: Room, tally: Tally, leave: UInt64, outbound: WebSocketOutboundWriter
    ) async throws {
        let silence = ByteBuffer(repeating: 0, count: 2 * block)
        // A 1 kHz square burst of 5 ms: it survives resampling to and from any rate (a
        // sample-alternating click would be above a 16 kHz agent's band).
        var click = ByteBuffer(repeating: 0, count: 2 * block)
        let clickSamples = rate.hertz / 200
        for s in 0..<clickSamples {
            click.setInteger(Int16((s * 2000 / rate.hertz) % 2 == 0 ? 28000 : -28000), at: 2 * s, endianness: .little)
        }
        // Every agent sends on the same grid, 10 ms after each multiple of 20 ms of the monotonic
        // clock, which is half a period from the server's ticks (they fall on those multiples):
        // each click waits the same for its tick, whoever sends it and whenever it joined, so the
        // latency figures compare from minute to minute.
        let now0 = DispatchTime.now().uptimeNanoseconds
        let start = (now0 / blockNs + 1) * blockNs + blockNs / 2
        var k: UInt64 = 0
        while true {
            let deadline = start + k * blockNs
            if deadline + blockNs >= leave { break }
            var now = DispatchTime.now().uptimeNanoseconds
            if deadline > now {
                try await Task.sleep(nanoseconds: deadline - now)
                now = DispatchTime.now().uptimeNanoseconds
            }
            // A block that would reach the server after the tick it was meant for (ticks fall half
            // a block after the deadlines) is dropped, as a live source drops what it could not
            // send in time. Sent late, it would wait a tick in the server's playout queue, and so
            // would every block after it (the queue plays what it is given, in order, a block a
            // tick): a sender that caught up after a stall would carry its stall as latency to the
            // end of the call, and the soak would time the load generator instead of the server.
            if now > deadline + blockNs / 2 {
                let missed = (now - deadline - blockNs / 2) / blockNs + 1
                tally.lock.withLock {
                    tally.lateBlocks += Int(missed)
                    tally.lateTimes.append(now)
                }
                k += missed
                continue
            }
            let slot = Int(DispatchTime.now().uptimeNanoseconds / slotNs)
            // The first block that starts in a new 100 ms slot may click, once per room and slot.
            let opens = Int((DispatchTime.now().uptimeNanoseconds - blockNs) / slotNs) < slot
            if opens, kind != .slowReader, clicks.claim(slot, at: DispatchTime.now().uptimeNanoseconds) {
                try await outbound.write(.binary(click))
            } else {
                try await outbound.write(.binary(silence))
            }
            if kind == .marksAndClears, k > 0, deadline + 1_000_000_000 < leave {
                if k % 250 == 0 {
                    tally.lock.withLock { tally.clearsSent += 1 }
                    try await outbound.write(.text("{\"type\":\"clear\"}"))
                } else if k % 50 == 0 {
                    tally.lock.withLock { tally.marksSent += 1 }
                    try await outbound.write(.text("{\"type\":\"mark\",\"name\":\"m\(k)\"}"))
                }
            }
            k += 1
        }
    }
}

/// The far end of the soak's RTP legs: a UDP socket on 127.0.0.1 that sends every datagram back to
/// where it came from, on a thread of its own.
final class UDPEcho: @unchecked Sendable {
    // SAFETY: `socket` is only read (its calls never block); `stopping` is behind `lock`.
    private let socket: UDPSocket
    private let lock = NSLock()
    private var stopping = false
    private let done = DispatchSemaphore(value: 0)
    var port: Int { Int(socket.local.port) }

    init() throws {
        do {
            socket = try UDPSocket(binding: Endpoint(address: 0x7F00_0001, port: 0))
        } catch {
            throw LoadTest.Failure.http("cannot bind the soak's UDP echo: \(error)")
        }
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 2048)
            var ready = pollfd(fd: socket.descriptor, events: Int16(POLLIN), revents: 0)
            while !lock.withLock({ stopping }) {
                // Wakes at least every 200 ms to see whether it should stop.
                guard poll(&ready, 1, 200) > 0 else { continue }
                buffer.withUnsafeMutableBytes { bytes in
                    while let datagram = socket.receive(into: bytes) {
                        socket.send(UnsafeRawBufferPointer(rebasing: bytes[0..<datagram.byteCount]), to: datagram.source)
                    }
                }
            }
            done.signal()
        }
        thread.start()
    }

    func stop() {
        lock.withLock { stopping = true }
        done.wait()
    }
}
