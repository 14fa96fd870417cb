import CChamadeShims
import ChamadeCore
import Testing

/// The media-plane codecs a platform leg runs per packet — G.711 both ways and its concealment, RTP
/// header write and parse, RFC 4733 payloads and the digit sender, RFC 3550 receive statistics, RTCP
/// reports — allocate nothing once warm.
/// In ChamadeEngineTests because this target links the malloc counter (ChamadeCoreTests does not).
@Suite("Media codec allocations")
struct MediaCodecAllocationTests {
    @Test func perPacketPathsAllocateNothing() throws {
        // The counter is linked into this test binary (else the zero below would prove nothing).
        #expect(cchamade_allocation_counting_available() != 0)
        let samples = UnsafeMutableBufferPointer<Int16>.allocate(capacity: 160)
        let codes = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: 160)
        let packet = UnsafeMutableRawBufferPointer.allocate(byteCount: 1500, alignment: 8)
        let report = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        defer {
            samples.deallocate()
            codes.deallocate()
            packet.deallocate()
            report.deallocate()
        }
        for i in 0..<160 { samples[i] = Int16(truncatingIfNeeded: i &* 397) }
        var statistics = RTPReceiveStatistics()
        var concealment = G711Concealment()
        var dtmf = try TelephoneEventSender(clockRate: 8000)
        var checksum = 0
        func cycle(_ k: Int) throws {
            let law: G711.Law = k % 2 == 0 ? .mu : .a
            law.encode(UnsafeBufferPointer(samples), into: codes)
            let header = RTPHeader(
                marker: k % 50 == 0, payloadType: law.staticPayloadType, sequenceNumber: UInt16(truncatingIfNeeded: k),
                timestamp: UInt32(truncatingIfNeeded: k * 160), ssrc: 0x1234_5678)
            let headerBytes = try header.write(into: packet)
            packet.baseAddress!.advanced(by: headerBytes).copyMemory(from: codes.baseAddress!, byteCount: 160)
            let parsed = try RTPPacket.parse(UnsafeRawBufferPointer(rebasing: packet[0..<(headerBytes + 160)]))
            let payload = UnsafeRawBufferPointer(rebasing: packet[parsed.payloadByteRange])
            law.decode(payload.bindMemory(to: UInt8.self), into: samples)
            // Every ninth block is lost and concealed; the others pass through.
            if k % 9 == 0 {
                concealment.lost(into: samples)
            } else {
                concealment.received(UnsafeBufferPointer(samples), into: samples)
            }
            if k % 40 == 0 { try dtmf.enqueue("12#") }
            if let p = dtmf.next(at: UInt32(truncatingIfNeeded: k * 160)) { checksum &+= Int(p.event.event) }
            _ = statistics.record(
                sequence: parsed.header.sequenceNumber, timestamp: parsed.header.timestamp,
                arrival: UInt32(truncatingIfNeeded: k * 160 + k % 7))
            let event = TelephoneEvent(event: UInt8(k % 16), end: k % 3 == 0, duration: UInt16(k % 800))
            let eventBytes = try event.write(into: packet)
            checksum &+= Int(try TelephoneEvent.parse(UnsafeRawBufferPointer(rebasing: packet[0..<eventBytes])).event)
            if k % 250 == 0 {
                let block = RTCPReportBlock(
                    ssrc: 1, fractionLost: 3, cumulativeLost: Int32(k), extendedHighestSequence: UInt32(k),
                    jitter: 12, lastSenderReport: 0, delaySinceLastSenderReport: 0)
                let end = try RTCPWriter.writeReceiverReport(ssrc: 9, block: block, into: report)
                var parser = RTCPCompoundParser(UnsafeRawBufferPointer(rebasing: report[0..<end]))
                while try parser.next() != nil { checksum &+= 1 }
            }
        }
        for k in 0..<500 { try cycle(k) }
        let before = cchamade_tick_allocation_count_on_this_thread()
        cchamade_tick_enter()
        for k in 500..<20_500 { try cycle(k) }
        cchamade_tick_exit()
        let allocations = cchamade_tick_allocation_count_on_this_thread() - before
        #expect(allocations == 0)
        #expect(checksum > 0)
    }
}
