public import ChamadeCore
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Histogram
import HummingbirdWSClient
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// `chamade loadtest`: N agents over real WebSockets against a running server, in R rooms, each
/// streaming audio at a chosen rate (20 ms every 20 ms, paced on absolute deadlines) and receiving
/// its mix-minus. Latency is measured on the audio itself: in each room the agents take turns, every
/// 100 ms one of them sends a click (a full-scale 5 ms burst at the start of a chunk) and every other
/// agent of the room times the first frame in which it hears it.
public enum LoadTest {
    public struct Options: Sendable {
        public var url: String
        public var apiKey: String
        public var agents: Int
        public var rooms: Int
        public var rate: SampleRate
        public var seconds: Double
        /// The rooms' platform and meeting URL; `{room}` in it becomes the room's index. The default
        /// makes rooms of agents only.
        public var platform: String
        public var meetingURL: String?

        /// Whether a room's leg sends back what it hears (a SIP or RTP peer that echoes): then a lone
        /// agent's clicks come back to it, and the latency is the round trip through the leg.
        var echoes: Bool { platform == "sip" || platform == "rtp" }

        public init(
            url: String, apiKey: String, agents: Int, rooms: Int, rate: SampleRate, seconds: Double, platform: String = "discord",
            meetingURL: String? = nil
        ) {
            self.platform = platform
            self.meetingURL = meetingURL
            self.url = url
            self.apiKey = apiKey
            self.agents = agents
            self.rooms = rooms
            self.rate = rate
            self.seconds = seconds
        }
    }

    public struct Report: Sendable, Codable {
        public var agents: Int
        public var rooms: Int
        public var rate: Int
        public var seconds: Double
        public var frames_expected: Int
        public var frames_received: Int
        public var frames_lost: Int
        public var latency_ms: Latency
        public var clicks_sent: Int
        public var clicks_detected: Int
        public var server_late_ticks: Int?
        public var server_frames_dropped: Int?
        public var connect_failures: Int

        public struct Latency: Sendable, Codable {
            public var p50: Double
            public var p99: Double
            public var max: Double
        }
    }

    public enum Failure: Error, CustomStringConvertible {
        case http(String)
        public var description: String {
            switch self { case .http(let s): s }
        }
    }

    /// The clicks of one room: which agent clicks in which 100 ms slot, and when it sent them.
    final class Room: @unchecked Sendable {
        let lock = NSLock()
        var sendTimes: [Int: UInt64] = [:]  // slot → send time (ns, monotonic)
        let agentCount: Int
        init(agentCount: Int) { self.agentCount = agentCount }
    }

    final class Tally: @unchecked Sendable {
        let lock = NSLock()
        var received = 0
        var expected = 0
        var clicksSent = 0
        var clicksDetected = 0
        var latenciesNs: [UInt64] = []
        var connectFailures = 0
    }

    static let slotNs: UInt64 = 100_000_000
    static let blockNs: UInt64 = 20_000_000

    public static func run(_ o: Options, progress: ((String) -> Void)? = nil) async throws -> Report {
        let runID = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        // 1. Calls over HTTP, round robin over the rooms (one meeting URL per room).
        var calls: [(call: CreatedCall, room: Int)] = []
        for i in 0..<o.agents {
            let room = i % o.rooms
            let meeting = o.meetingURL.map { $0.replacingOccurrences(of: "{room}", with: "\(room)") }
                ?? "https://loadtest.chamade/\(runID)/room-\(room)"
            let created = try await createCall(o, meeting: meeting, name: "agent-\(i)")
            calls.append((created, room))
        }
        let before = try? await metrics(o)
        let rooms = (0..<o.rooms).map { r in Room(agentCount: calls.filter { $0.room == r }.count) }
        let tally = Tally()
        let start = DispatchTime.now().uptimeNanoseconds + 1_000_000_000  // all agents start together
        let end = start + UInt64(o.seconds * 1e9)
        let logger = {
            var l = Logger(label: "loadtest")
            l.logLevel = .critical
            return l
        }()
        progress?("loadtest: \(o.agents) agents in \(o.rooms) rooms at \(o.rate.hertz) Hz for \(o.seconds) s")
        await withTaskGroup(of: Void.self) { group in
            var indexInRoom = [Int](repeating: 0, count: o.rooms)
            for (i, call) in calls.enumerated() {
                let k = indexInRoom[call.room]
                indexInRoom[call.room] += 1
                let room = rooms[call.room]
                group.addTask {
                    await agent(o, call: call.call, index: i, turn: k, room: room, tally: tally, start: start, end: end, logger: logger)
                }
            }
        }
        let after = try? await metrics(o)
        for call in calls { try? await deleteCall(o, call.call.id) }
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for l in tally.latenciesNs { _ = histogram.record(l) }
        let ms = { (v: UInt64) in Double(v) / 1e6 }
        return Report(
            agents: o.agents, rooms: o.rooms, rate: o.rate.hertz, seconds: o.seconds,
            frames_expected: tally.expected, frames_received: tally.received,
            frames_lost: max(0, tally.expected - tally.received),
            latency_ms: .init(
                p50: tally.latenciesNs.isEmpty ? 0 : ms(histogram.valueAtPercentile(50)),
                p99: tally.latenciesNs.isEmpty ? 0 : ms(histogram.valueAtPercentile(99)),
                max: tally.latenciesNs.isEmpty ? 0 : ms(histogram.max)),
            clicks_sent: tally.clicksSent, clicks_detected: tally.clicksDetected,
            server_late_ticks: zip2(before?["chamade_late_ticks_total"], after?["chamade_late_ticks_total"]).map { $1 - $0 },
            server_frames_dropped: zip2(before.map(Self.dropped), after.map(Self.dropped)).map { $1 - $0 },
            connect_failures: tally.connectFailures)
    }

    static func zip2(_ a: Int?, _ b: Int?) -> (Int, Int)? {
        guard let a, let b else { return nil }
        return (a, b)
    }

    /// One agent: configure, then send 20 ms every 20 ms (a click in its turns) while timing the
    /// clicks of the others in what it receives.
    static func agent(
        _ o: Options, call: CreatedCall, index: Int, turn: Int, room: Room, tally: Tally, start: UInt64, end: UInt64,
        logger: Logger
    ) async {
        let wsURL = call.streamURL
        let block = o.rate.blockSampleCount
        // 5 ms: a receiver that fades in after a gap (a G.711 leg's concealment does, over 4 ms)
        // still hears it at full scale.
        let clickSamples = max(1, o.rate.hertz / 200)
        do {
            try await WebSocketClient.connect(
                url: wsURL, configuration: .init(maxFrameSize: 1 << 20), logger: logger
            ) { inbound, outbound, _ in
                try await outbound.write(.text("{\"type\":\"audio_config\",\"sample_rate\":\(o.rate.hertz),\"receive\":true}"))
                let sender = Task {
                    // Between clicks: digital silence, or, through an echoing leg, a quiet tone
                    // (-50 dBFS, far below a click) so the leg streams without pause both ways,
                    // as it does while a meeting talks.
                    var silence = ByteBuffer(repeating: 0, count: 2 * block)
                    if o.echoes {
                        for s in 0..<block { silence.setInteger(Int16(s % 8 < 4 ? 100 : -100), at: 2 * s, endianness: .little) }
                    }
                    var click = ByteBuffer(repeating: 0, count: 2 * block)
                    for s in 0..<clickSamples { click.setInteger(Int16(s % 2 == 0 ? 30000 : -30000), at: 2 * s, endianness: .little) }
                    var k: UInt64 = 0
                    while true {
                        let deadline = start + k * blockNs
                        if deadline >= end { break }
                        let now = DispatchTime.now().uptimeNanoseconds
                        if deadline > now { try await Task.sleep(nanoseconds: deadline - now) }
                        // Slot s belongs to agent s mod n of the room; its click opens the slot.
                        let slot = Int((deadline - start) / slotNs)
                        let opensSlot = (deadline - start) % slotNs == 0
                        // A lone agent behind an echo clicks every other slot: its echo may take
                        // more than a slot and must not be taken for the next click's.
                        if opensSlot && slot % room.agentCount == turn && (room.agentCount > 1 || (o.echoes && slot % 2 == 0)) {
                            let sent = DispatchTime.now().uptimeNanoseconds
                            room.lock.withLock { room.sendTimes[slot] = sent }
                            tally.lock.withLock { tally.clicksSent += 1 }
                            try await outbound.write(.binary(click))
                        } else {
                            try await outbound.write(.binary(silence))
                        }
                        silence.moveReaderIndex(to: 0)
                        k += 1
                    }
                }
                var lastDetectedSlot = -1
                var received = 0
                let settle = start + 200_000_000  // frames counted from 200 ms after the start
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard case .binary(let frame) = message else { continue }
                    let now = DispatchTime.now().uptimeNanoseconds
                    if now >= end + 200_000_000 { break }
                    if now >= settle && now < end { received += 1 }
                    guard now >= start, frame.readableBytes == 2 * block else { continue }
                    guard isLoud(frame) else { continue }
                    // The newest slot whose click was sent before this frame arrived is the one heard.
                    let slot = Int((now - start) / slotNs)
                    for candidate in stride(from: slot, through: max(0, slot - 1), by: -1) where candidate > lastDetectedSlot {
                        if let sent = room.lock.withLock({ room.sendTimes[candidate] }), sent <= now {
                            lastDetectedSlot = candidate
                            tally.lock.withLock {
                                tally.clicksDetected += 1
                                tally.latenciesNs.append(now - sent)
                            }
                            break
                        }
                    }
                }
                sender.cancel()
                tally.lock.withLock {
                    tally.received += received
                    tally.expected += Int((end - settle) / blockNs)
                }
                try? await outbound.close(.normalClosure, reason: "done")
            }
        } catch {
            tally.lock.withLock {
                tally.connectFailures += 1
                tally.expected += Int((end - start - 200_000_000) / blockNs)
            }
        }
    }

    static func request(_ o: Options, _ method: String, _ path: String, body: [String: Any]? = nil) async throws -> (Int, Data) {
        guard let url = URL(string: o.url + path) else { throw Failure.http("bad URL \(o.url)") }
        if url.scheme == "http", let host = url.host {
            var headers = [("X-API-Key", o.apiKey)]
            var data: Data?
            if let body {
                data = try JSONSerialization.data(withJSONObject: body)
                headers.append(("Content-Type", "application/json"))
            }
            let query = url.query.map { "?" + $0 } ?? ""
            return try await PlainHTTP.request(
                host: host, port: url.port ?? 80, method: method, path: url.path + query, headers: headers, body: data,
                timeout: 30)
        }
        var r = URLRequest(url: url, timeoutInterval: 30)
        r.httpMethod = method
        r.setValue(o.apiKey, forHTTPHeaderField: "X-API-Key")
        // One connection per request: a pool of idle keep-alive connections would sit in the
        // server's descriptor count, which a soak compares with its baseline.
        r.setValue("close", forHTTPHeaderField: "Connection")
        if let body {
            r.httpBody = try JSONSerialization.data(withJSONObject: body)
            r.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: r)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    /// A call the server made: its id and its WebSocket URL with the key (text_ws_url, which in a
    /// cluster is the call's node, not necessarily the one asked).
    struct CreatedCall: Sendable {
        var id: String
        var streamURL: String
    }

    static func createCall(_ o: Options, meeting: String, name: String) async throws -> CreatedCall {
        let (status, data) = try await request(o, "POST", "/api/call", body: ["platform": o.platform, "meeting_url": meeting, "agent_name": name])
        guard status == 200, let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let id = object["call_id"] as? String, let url = object["text_ws_url"] as? String
        else { throw Failure.http("POST /api/call answered \(status): \(String(decoding: data, as: UTF8.self))") }
        return CreatedCall(id: id, streamURL: url + "?api_key=" + o.apiKey)
    }

    static func deleteCall(_ o: Options, _ id: String) async throws {
        _ = try await request(o, "DELETE", "/api/call/\(id)")
    }

    /// Frames the server dropped, engine-side and socket-side.
    static func dropped(_ m: [String: Int]) -> Int {
        m["chamade_engine_dropped_blocks_total", default: 0] + m["chamade_socket_dropped_frames_total", default: 0]
    }

    /// Every unlabelled sample of `/metrics`, as numbers (gauges may be fractional).
    static func metricValues(_ o: Options) async throws -> [String: Double] {
        let (status, data) = try await request(o, "GET", "/metrics")
        guard status == 200 else { throw Failure.http("GET /metrics answered \(status)") }
        var out: [String: Double] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let v = Double(parts[1]) { out[String(parts[0])] = v }
        }
        return out
    }

    static func metrics(_ o: Options) async throws -> [String: Int] {
        try await metricValues(o).compactMapValues { Int(exactly: $0) }
    }

    /// Whether a frame holds a click (a sample past ±10,000). PCM s16le on a little-endian host,
    /// read in place; a frame's bytes need not be aligned for Int16.
    static func isLoud(_ frame: ByteBuffer) -> Bool {
        frame.withUnsafeReadableBytes { raw in
            stride(from: 0, to: raw.count - 1, by: 2).contains { i in
                let v = raw.loadUnaligned(fromByteOffset: i, as: Int16.self)
                return v > 10000 || v < -10000
            }
        }
    }
}
