import ChamadeCore
import ChamadeEngine
@testable import ChamadeMedia
import Foundation

/// The far end of a leg in tests: a real UDP socket on 127.0.0.1 that sends RTP on a 20 ms cadence
/// and collects what the leg sends.
final class Peer {
    let socket: UDPSocket
    let endpoint: Endpoint
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 8)
    var sequence: UInt16 = 100
    var timestamp: UInt32 = 5000
    let ssrc: UInt32 = 0xCAFE_F00D

    init() throws {
        socket = try UDPSocket(binding: Endpoint(host: "127.0.0.1", port: 0)!)
        endpoint = socket.local
    }

    deinit { buffer.deallocate() }

    /// Sends one RTP packet (raw payload).
    func send(payloadType: UInt8, payload: [UInt8], marker: Bool = false, timestamp ts: UInt32? = nil, to leg: Endpoint) {
        let header = RTPHeader(marker: marker, payloadType: payloadType, sequenceNumber: sequence, timestamp: ts ?? timestamp, ssrc: ssrc)
        let n = payload.withUnsafeBytes { (try? RTPPacket.write(header, payload: $0, into: buffer)) ?? 0 }
        socket.send(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), to: leg)
        sequence &+= 1
    }

    /// Sends raw bytes (malformed packets).
    func sendRaw(_ bytes: [UInt8], to leg: Endpoint) {
        bytes.withUnsafeBytes { _ = socket.send($0, to: leg) }
    }

    struct Received {
        var header: RTPHeader
        var payload: [UInt8]
    }

    /// Every RTP packet waiting now.
    func drain() -> [Received] {
        var out: [Received] = []
        while let d = socket.receive(into: buffer) {
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<d.byteCount])
            guard let p = try? RTPPacket.parse(bytes) else { continue }
            out.append(Received(header: p.header, payload: Array(bytes[p.payloadByteRange])))
        }
        return out
    }
}

enum LegTestSupport {
    /// A tone as Int16 samples.
    static func tone(_ frequency: Double, rate: Int, count: Int, amplitude: Double = 8000, offset: Int = 0) -> [Int16] {
        (0..<count).map { Int16(amplitude * sin(2 * .pi * frequency * Double(offset + $0) / Double(rate))) }
    }

    /// Events of a leg, collected across threads.
    final class Events: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [RTPLegEvent] = []
        func add(_ e: RTPLegEvent) { lock.withLock { list.append(e) } }
        var all: [RTPLegEvent] { lock.withLock { list } }
    }

    /// Everything an agent of the room hears, pulled on its own thread.
    final class Listener: @unchecked Sendable {
        private let lock = NSLock()
        private var samples: [Int16] = []
        private var running = true
        let participant: Participant
        init(_ p: Participant) {
            participant = p
            let t = Foundation.Thread { [self] in
                var block = [Int16](repeating: 0, count: 960)
                while lock.withLock({ running }) {
                    let n = participant.sampleRate.blockSampleCount
                    while block.withUnsafeMutableBufferPointer({ participant.pullBlock(into: UnsafeMutableBufferPointer(rebasing: $0[0..<n])) }) {
                        lock.withLock { samples += block[0..<n] }
                    }
                    usleep(5000)
                }
            }
            t.start()
        }
        func stop() { lock.withLock { running = false } }
        var heard: [Int16] { lock.withLock { samples } }
    }
}
