import ChamadeCore
import FuzzSupport

// RTP and RTCP parsing of any datagram. An RTP packet that parses has ranges inside the datagram,
// in order, and writing its header back gives the same fixed header; an RTCP compound is walked to
// its end or its first error, every range it hands out inside the datagram.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let bytes = FuzzInput(data, count).bytes
    if let p = try? RTPPacket.parse(bytes) {
        let n = bytes.count
        fuzzCheck(p.csrcByteRange.upperBound <= p.extensionByteRange.lowerBound, "CSRCs overlap the extension")
        fuzzCheck(p.extensionByteRange.upperBound <= p.payloadByteRange.lowerBound, "extension overlaps the payload")
        fuzzCheck(p.payloadByteRange.upperBound + p.paddingByteCount == n, "payload and padding do not end the packet")
        fuzzCheck(p.payloadByteRange.lowerBound <= p.payloadByteRange.upperBound, "negative payload")
        var sum: UInt32 = 0
        for i in 0..<p.csrcCount { sum &+= p.csrc(i, in: bytes) }
        for i in p.payloadByteRange { sum &+= UInt32(bytes[i]) }
        var header = [UInt8](repeating: 0, count: RTPHeader.fixedByteCount)
        let written = header.withUnsafeMutableBytes { try? p.header.write(into: $0) }
        fuzzCheck(written == RTPHeader.fixedByteCount, "header did not write back")
        // Version, marker, payload type, sequence, timestamp, SSRC: bytes 1–11, and V in byte 0.
        fuzzCheck(header[0] >> 6 == 2 && Array(header[1..<12]) == Array(bytes[1..<12]), "header changed on the way back")
        _ = sum
    }
    var parser = RTCPCompoundParser(bytes)
    var packets = 0
    while let packet = try? parser.next() {
        packets += 1
        fuzzCheck(parser.offset <= bytes.count, "walked past the datagram")
        switch packet {
        case .senderReport(_, _, let count, let blocks), .receiverReport(_, let count, let blocks):
            fuzzCheck(blocks.upperBound <= bytes.count, "report blocks past the datagram")
            for i in 0..<count { _ = RTCPPacket.reportBlock(i, of: blocks, in: bytes) }
        case .sourceDescription(_, let cname):
            if let cname { fuzzCheck(cname.upperBound <= bytes.count, "CNAME past the datagram") }
        case .other(_, let range): fuzzCheck(range.upperBound <= bytes.count, "packet past the datagram")
        case .bye: break
        }
        fuzzCheck(packets <= bytes.count / 4, "more packets than words")
    }
    return 0
}
