import ChamadeCore
import ChamadeEngine
@testable import ChamadeMedia
import Foundation
import Testing

/// RTCP both ways over real sockets: the leg reports on the stream it receives (an RR with a
/// report block and an SDES CNAME, to the far end's RTP port + 1), and reads the far end's reports
/// on its own stream into its statistics.
@Suite("RTP legs: RTCP", .serialized)
struct RTCPTests {
    /// A UDP socket pair on consecutive ports (RTP even, RTCP odd), like a real far end.
    static func socketPair() throws -> (UDPSocketPair, Endpoint) {
        let loopback = Endpoint(host: "127.0.0.1", port: 0)!.address
        for port in stride(from: 47000, to: 47998, by: 2) {
            guard let pair = try? UDPSocketPair(loopback, port: port) else { continue }
            return (pair, Endpoint(address: loopback, port: UInt16(port)))
        }
        throw SocketError(operation: "no free port pair", code: 0)
    }

    @Test func reportsBothWays() throws {
        let engine = Engine(configuration: .init(clock: .realTime))
        let media = try MediaRuntime(configuration: .init(bindAddress: "127.0.0.1", ports: 46600...46699, workerCount: 1))
        defer {
            media.shutdown()
            engine.shutdown()
        }
        let room = try engine.createRoom(nativeRate: .hz8000)
        let (pair, far) = try Self.socketPair()
        let rtp = pair.takeRTP()
        let rtcp = pair.takeRTCP()
        let leg = try media.openLeg(room: room, configuration: RTPLegConfiguration(codec: .pcmu, remote: far)) { _ in }
        defer { leg.close() }
        engine.start()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 8)
        defer { buffer.deallocate() }
        // 4 s of packets (every 10th missing) from the far end's RTP socket: the leg's first report
        // is due between 2.5 and 7.5 s after it opened (5 s ± 50 %, the first one at half that).
        let payload = [UInt8](repeating: 0xFF, count: 160)
        var next = MonotonicClock.now()
        var report: [UInt8]?
        for k in 0..<400 where report == nil {
            if k % 10 != 9 {
                let header = RTPHeader(marker: k == 0, payloadType: 0, sequenceNumber: UInt16(1000 + k), timestamp: UInt32(160 * k), ssrc: 0xFA12_0001)
                let n = payload.withUnsafeBytes { (try? RTPPacket.write(header, payload: $0, into: buffer)) ?? 0 }
                rtp.send(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), to: leg.local)
            }
            if let d = rtcp.receive(into: buffer) { report = Array(buffer[0..<d.byteCount]) }
            next += 20_000_000
            MonotonicClock.sleep(until: next)
        }
        let bytes = try #require(report, "no RTCP from the leg in 8 s")
        var legSSRC: UInt32 = 0
        var sawCNAME = false
        var block: RTCPReportBlock?
        try bytes.withUnsafeBytes { raw in
            var parser = RTCPCompoundParser(raw)
            while let packet = try parser.next() {
                switch packet {
                case .receiverReport(let ssrc, let count, let blocks):
                    legSSRC = ssrc
                    #expect(count == 1)
                    block = RTCPPacket.reportBlock(0, of: blocks, in: raw)
                case .senderReport: Issue.record("the leg sent no RTP, so it must not send an SR")
                case .sourceDescription(_, let cname): sawCNAME = cname != nil
                default: break
                }
            }
        }
        let b = try #require(block)
        #expect(sawCNAME)
        #expect(b.ssrc == 0xFA12_0001)
        // Sequence numbers 1000… with every tenth missing: the extended highest is the last sent,
        // and about a tenth was lost.
        #expect(b.extendedHighestSequence >= 1000 + 100)
        #expect(b.cumulativeLost >= 10)
        #expect((20...30).contains(Int(b.fractionLost)), "fraction lost \(b.fractionLost)/256")

        // The far end reports 25 % loss and 80 units (10 ms) of jitter on the leg's stream.
        let theirs = RTCPReportBlock(
            ssrc: legSSRC, fractionLost: 64, cumulativeLost: 3, extendedHighestSequence: 10, jitter: 80,
            lastSenderReport: 0, delaySinceLastSenderReport: 0)
        let n = try RTCPWriter.writeReceiverReport(ssrc: 0xFA12_0001, block: theirs, into: buffer)
        rtcp.send(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), to: leg.local.with(port: leg.local.port + 1))
        Foundation.Thread.sleep(forTimeInterval: 0.1)
        let s = leg.statistics
        #expect(s.rtcpReceived == 1)
        #expect(s.remoteFractionLost == 0.25)
        #expect(s.remoteJitterMilliseconds == 10)
        #expect(s.rtcpSent >= 1)
    }
}
