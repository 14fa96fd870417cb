public import ChamadeCore
import ChamadeDSP
import ChamadeEngine
public import ChamadeMedia
import Foundation

/// The cost of platform legs: N RTP legs in a room (or R rooms) on the real clock, every leg fed
/// 50 packets a second and sending its mix-minus back, measured as CPU per leg-tick of the media
/// workers and the clock together.
///
/// Without `peer`, the bench feeds the legs itself: one thread replays one second of packets
/// encoded once at start (so the feeding costs next to nothing and is not the codec under test)
/// from one socket per leg, and drains what the legs send. With `peer`, leg i sends to
/// `peer.port + 2i` and outside senders (GStreamer, a relay) feed `ports.lowerBound + 2i`.
public enum LegBench {
    public enum Mode: String, Sendable, CaseIterable {
        /// Every leg talks all the time.
        case talk
        /// Every leg talks one second and is silent the next (in step), so the mix each leg is
        /// sent is silent half the time.
        case half
    }

    public struct Options: Sendable {
        public var legs: Int
        public var rooms: Int
        public var codec: MediaCodec
        public var mode: Mode
        public var ports: ClosedRange<Int>
        public var peer: Endpoint?
        public var seconds: Double
        public var warmUpSeconds: Double
        public var opusComplexity: Int

        public init(
            legs: Int, rooms: Int = 1, codec: MediaCodec = .opus, mode: Mode = .talk, ports: ClosedRange<Int> = 40000...49999,
            peer: Endpoint? = nil, seconds: Double = 10, warmUpSeconds: Double = 2, opusComplexity: Int = 5
        ) {
            (self.legs, self.rooms, self.codec, self.mode, self.ports, self.peer) = (legs, rooms, codec, mode, ports, peer)
            (self.seconds, self.warmUpSeconds, self.opusComplexity) = (seconds, warmUpSeconds, opusComplexity)
        }
    }

    public struct Report: Sendable, Codable {
        public var legs: Int
        public var rooms: Int
        public var codec: String
        public var mode: String
        public var opus_complexity: Int
        public var seconds: Double
        public var ticks: Int
        public var late_ticks: Int
        public var late_media_steps: Int
        /// Media workers + clock threads, µs per leg per 20 ms.
        public var cpu_us_per_leg_tick: Double
        public var media_cpu_percent: Double
        public var clock_cpu_percent: Double
        /// The whole process (feeder included), % of one core.
        public var process_cpu_percent: Double
        public var feeder_cpu_percent: Double
        public var packets_in_per_leg_second: Double
        public var packets_out_per_leg_second: Double
        public var packets_lost: Int
        public var packets_late: Int
        public var concealed_ms: Double
    }

    public static func run(_ o: Options, progress: ((String) -> Void)? = nil) throws -> Report {
        let engine = Engine(configuration: .init(clock: .realTime))
        defer { engine.shutdown() }
        let media = try MediaRuntime(configuration: .init(bindAddress: "127.0.0.1", ports: o.ports))
        defer { media.shutdown() }
        let rooms = try (0..<o.rooms).map { _ in try engine.createRoom(nativeRate: o.codec.nativeRate, capacity: o.legs + 1) }
        // The feeder's sockets: the legs' far ends.
        var feederSockets: [UDPSocketBox] = []
        var legs: [RTPLeg] = []
        for i in 0..<o.legs {
            let remote: Endpoint
            if let peer = o.peer {
                remote = peer.with(port: peer.port + UInt16(2 * i))
            } else {
                let s = try UDPSocket(binding: Endpoint(host: "127.0.0.1", port: 0)!)
                remote = s.local

                feederSockets.append(UDPSocketBox(s))
            }
            var settings = Opus.Settings(bitRate: 32_000, complexity: o.opusComplexity, inbandFEC: true)
            settings.expectedPacketLossPercent = 5
            let configuration = RTPLegConfiguration(codec: o.codec, remote: remote, opus: settings, timeoutSeconds: 3600)
            legs.append(try media.openLeg(room: rooms[i % o.rooms], configuration: configuration) { _ in })
        }
        let stop = LockedFlag()
        let feederCPU = LockedCounter()
        var feeder: Thread?
        if o.peer == nil {
            let packets = try encodedSecond(codec: o.codec, complexity: o.opusComplexity)
            let targets = legs.map(\.local)
            let sockets = FeederSockets(feederSockets)
            let mode = o.mode
            let codec = o.codec
            feeder = Thread {
                Self.feed(sockets: sockets, targets: targets, packets: packets, codec: codec, mode: mode, stop: stop)
                feederCPU.add(Int(MonotonicClock.threadCPUTime() / 1000))
            }
            feeder!.start()
        }
        engine.start()
        Foundation.Thread.sleep(forTimeInterval: o.warmUpSeconds)
        let start = engine.statistics()
        let startMedia = Bench.threadCPUSeconds(named: "chamade-media") ?? 0
        let startClock = Bench.clockThreadCPUSeconds() ?? 0
        let startProcess = processCPUSeconds()
        let startLate = media.lateSteps
        let startStats = legs.map(\.statistics)
        let began = MonotonicClock.now()
        var elapsed = 0.0
        while elapsed < o.seconds {
            Foundation.Thread.sleep(forTimeInterval: min(1, o.seconds - elapsed))
            elapsed = Double(MonotonicClock.now() - began) / 1e9
            progress?("leg bench: \(Int(elapsed)) s")
        }
        let mediaCPU = (Bench.threadCPUSeconds(named: "chamade-media") ?? 0) - startMedia
        let clockCPU = (Bench.clockThreadCPUSeconds() ?? 0) - startClock
        let processCPU = processCPUSeconds() - startProcess
        let final = engine.statistics()
        let lateSteps = media.lateSteps - startLate
        let endStats = legs.map(\.statistics)
        stop.set()
        feeder.map { _ in Foundation.Thread.sleep(forTimeInterval: 0.1) }
        for leg in legs { leg.close() }
        let ticks = final.ticks - start.ticks
        let legTicks = Double(o.legs) * elapsed * 50
        let received = zip(endStats, startStats).reduce(0) { $0 + $1.0.packetsReceived - $1.1.packetsReceived }
        let sent = zip(endStats, startStats).reduce(0) { $0 + $1.0.packetsSent - $1.1.packetsSent }
        return Report(
            legs: o.legs, rooms: o.rooms, codec: o.codec.rawValue, mode: o.mode.rawValue, opus_complexity: o.opusComplexity,
            seconds: elapsed, ticks: ticks, late_ticks: final.lateTicks - start.lateTicks, late_media_steps: lateSteps,
            cpu_us_per_leg_tick: (mediaCPU + clockCPU) * 1e6 / legTicks,
            media_cpu_percent: 100 * mediaCPU / elapsed, clock_cpu_percent: 100 * clockCPU / elapsed,
            process_cpu_percent: 100 * processCPU / elapsed,
            feeder_cpu_percent: 100 * Double(feederCPU.value) / 1e6 / max(elapsed + o.warmUpSeconds, 1),
            packets_in_per_leg_second: Double(received) / Double(o.legs) / elapsed,
            packets_out_per_leg_second: Double(sent) / Double(o.legs) / elapsed,
            packets_lost: endStats.reduce(0) { $0 + $1.packetsLost }, packets_late: endStats.reduce(0) { $0 + $1.packetsLate },
            concealed_ms: endStats.reduce(0) { $0 + $1.concealedMilliseconds })
    }

    /// One second of a 440 Hz tone at −30 dBFS (100 legs' mix stays far from clipping), as 50
    /// payloads of the codec.
    static func encodedSecond(codec: MediaCodec, complexity: Int) throws -> [[UInt8]] {
        let rate = codec.nativeRate
        let n = rate.blockSampleCount
        var block = [Int16](repeating: 0, count: n)
        var payloads: [[UInt8]] = []
        var opus = codec == .opus ? try Opus.Encoder(sampleRate: rate, settings: .init(bitRate: 32_000, complexity: complexity)) : nil
        for k in 0..<50 {
            for i in 0..<n { block[i] = Int16(1000 * sin(2 * .pi * 440 * Double(k * n + i) / Double(rate.hertz))) }
            var out = [UInt8](repeating: 0, count: 1500)
            let count: Int
            switch codec {
            case .opus:
                count = try block.withUnsafeBufferPointer { b in try out.withUnsafeMutableBytes { try opus!.encode(b, into: $0) } }
            case .pcmu, .pcma:
                let law: G711.Law = codec == .pcmu ? .mu : .a
                for i in 0..<n { out[i] = law.encode(block[i]) }
                count = n
            }
            payloads.append(Array(out[0..<count]))
        }
        _ = opus.take()
        return payloads
    }

    /// The feeder: every 20 ms one packet to each leg from that leg's socket, and whatever the legs
    /// sent drained and dropped.
    static func feed(sockets: FeederSockets, targets: [Endpoint], packets: [[UInt8]], codec: MediaCodec, mode: Mode, stop: LockedFlag) {
        let units = UInt32(codec.clockRate / 50)
        var sequence: UInt16 = 1
        var timestamp: UInt32 = 1000
        var tick = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 8)
        defer { buffer.deallocate() }
        var next = MonotonicClock.now()
        var talking = false
        while !stop.isSet {
            let speaking = mode == .talk || (tick / 50) % 2 == 0
            if speaking {
                let payload = packets[tick % packets.count]
                let header = RTPHeader(marker: !talking, payloadType: codec.defaultPayloadType, sequenceNumber: sequence, timestamp: timestamp, ssrc: 0x1234_5678)
                let n = payload.withUnsafeBytes { (try? RTPPacket.write(header, payload: $0, into: buffer)) ?? 0 }
                for (i, target) in targets.enumerated() {
                    sockets.withSocket(i) { $0.send(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), to: target) }
                }
                sequence &+= 1
            }
            talking = speaking
            timestamp &+= units
            for i in targets.indices {
                sockets.withSocket(i) { s in while s.receive(into: buffer) != nil {} }
            }
            tick += 1
            next += 20_000_000
            MonotonicClock.sleep(until: next)
        }
    }

    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}

/// The feeder's sockets, handed to its thread.
final class FeederSockets: @unchecked Sendable {
    // SAFETY: used by the feeder thread only once handed over.
    private let sockets: [UDPSocketBox]
    init(_ sockets: [UDPSocketBox]) { self.sockets = sockets }
    func withSocket<R>(_ i: Int, _ body: (borrowing UDPSocket) -> R) -> R { body(sockets[i].socket) }
}

final class UDPSocketBox {
    let socket: UDPSocket
    init(_ socket: consuming UDPSocket) { self.socket = socket }
}
