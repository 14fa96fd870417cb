import ChamadeCore
import ChamadeTesting
import Testing

private func parse(_ bytes: [UInt8]) throws -> RTPPacket {
    try bytes.withUnsafeBytes { (raw) throws -> RTPPacket in try RTPPacket.parse(raw) }
}

struct MalformedRTP: Sendable, CustomStringConvertible {
    let name: String
    let bytes: [UInt8]
    let error: RTPPacket.ParseError
    var description: String { name }

    static let fixed: [UInt8] = [0x80, 0x00, 0x12, 0x34, 0, 0, 0x01, 0x40, 0xDE, 0xAD, 0xBE, 0xEF]
    static func with(first: UInt8, _ rest: [UInt8] = []) -> [UInt8] { [first] + fixed.dropFirst() + rest }

    static let all: [MalformedRTP] = [
        MalformedRTP(name: "empty", bytes: [], error: .tooShort),
        MalformedRTP(name: "1 byte", bytes: [0x80], error: .tooShort),
        MalformedRTP(name: "11 bytes", bytes: Array(fixed.prefix(11)), error: .tooShort),
        MalformedRTP(name: "version 0", bytes: with(first: 0x00), error: .wrongVersion(0)),
        MalformedRTP(name: "version 1", bytes: with(first: 0x40), error: .wrongVersion(1)),
        MalformedRTP(name: "version 3", bytes: with(first: 0xC0, [1, 2]), error: .wrongVersion(3)),
        MalformedRTP(name: "CC 1, no CSRC", bytes: with(first: 0x81), error: .csrcPastEnd),
        MalformedRTP(name: "CC 2, one CSRC", bytes: with(first: 0x82, [0, 0, 0, 1]), error: .csrcPastEnd),
        MalformedRTP(name: "CC 15, 3 bytes", bytes: with(first: 0x8F, [1, 2, 3]), error: .csrcPastEnd),
        MalformedRTP(name: "X, no ext header", bytes: with(first: 0x90), error: .extensionPastEnd),
        MalformedRTP(name: "X, half ext header", bytes: with(first: 0x90, [0xBE, 0xDE]), error: .extensionPastEnd),
        MalformedRTP(
            name: "X, 2 words declared, 1 present", bytes: with(first: 0x90, [0xBE, 0xDE, 0, 2, 1, 2, 3, 4]),
            error: .extensionPastEnd),
        MalformedRTP(
            name: "X after CSRC, length past end", bytes: with(first: 0x91, [0, 0, 0, 9, 0xBE, 0xDE, 0xFF, 0xFF]),
            error: .extensionPastEnd),
        MalformedRTP(name: "P, nothing after header", bytes: with(first: 0xA0), error: .paddingTooLarge),
        MalformedRTP(name: "P, count 5 with 3 bytes", bytes: with(first: 0xA0, [1, 2, 5]), error: .paddingTooLarge),
        MalformedRTP(name: "P, count 255", bytes: with(first: 0xA0, [0xFF]), error: .paddingTooLarge),
        MalformedRTP(name: "P, count 0", bytes: with(first: 0xA0, [1, 2, 0]), error: .paddingZero),
        MalformedRTP(
            name: "P, count covers extension", bytes: with(first: 0xB0, [0, 0, 0, 1, 9, 9, 9, 9, 8]),
            error: .paddingTooLarge),
    ]
}

@Suite("RTP packets (RFC 3550 §5.1)")
struct RTPPacketTests {
    @Test(arguments: MalformedRTP.all)
    func malformedGivesTypedError(_ c: MalformedRTP) {
        #expect(throws: c.error) { try parse(c.bytes) }
    }

    /// A captured-style PCMU packet: marker, PT 0, seq 0x1234, ts 320, SSRC 0xDEADBEEF, 4 payload bytes.
    @Test func capturedPCMUPacket() throws {
        let bytes: [UInt8] = [0x80, 0x80, 0x12, 0x34, 0x00, 0x00, 0x01, 0x40, 0xDE, 0xAD, 0xBE, 0xEF, 0xFF, 0x7F, 0x00, 0x80]
        let p = try parse(bytes)
        #expect(p.header == RTPHeader(marker: true, payloadType: 0, sequenceNumber: 0x1234, timestamp: 320, ssrc: 0xDEAD_BEEF))
        #expect(p.payloadByteRange == 12..<16)
        #expect(p.csrcCount == 0 && p.extensionProfile == nil && p.paddingByteCount == 0)
        var out = [UInt8](repeating: 0, count: 12)
        let n = try out.withUnsafeMutableBytes { (b) throws -> Int in try p.header.write(into: b) }
        #expect(n == 12 && out == Array(bytes.prefix(12)))
    }

    /// A packet with padding exactly to the end and an empty payload is valid.
    @Test func paddingMayFillThePayload() throws {
        let p = try parse(MalformedRTP.with(first: 0xA0, [0, 0, 3]))
        #expect(p.paddingByteCount == 3 && p.payloadByteRange == 12..<12)
    }

    /// Every field survives write then parse, over random headers, CSRC lists, extensions, padding and payloads.
    @Test func everyFieldRoundTrips() throws {
        var rng = SeededRandom(seed: 3550)
        var buffer = [UInt8](repeating: 0, count: 12 + 60 + 4 + 64 + 200 + 255)
        for _ in 0..<2000 {
            let header = RTPHeader(
                marker: Bool.random(using: &rng), payloadType: UInt8.random(in: 0...127, using: &rng),
                sequenceNumber: .random(in: .min ... .max, using: &rng), timestamp: .random(in: .min ... .max, using: &rng),
                ssrc: .random(in: .min ... .max, using: &rng))
            let csrcs = (0..<Int.random(in: 0...15, using: &rng)).map { _ in UInt32.random(in: .min ... .max, using: &rng) }
            let ext: [UInt8]? =
                Bool.random(using: &rng)
                ? (0..<(4 * Int.random(in: 0...16, using: &rng))).map { _ in UInt8.random(in: 0...255, using: &rng) } : nil
            let profile = UInt16.random(in: .min ... .max, using: &rng)
            let payload = (0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let padding = Bool.random(using: &rng) ? Int.random(in: 1...255, using: &rng) : 0
            let n = try buffer.withUnsafeMutableBytes { (out) throws -> Int in
                try payload.withUnsafeBytes { (pl) throws -> Int in
                    try csrcs.withUnsafeBufferPointer { (cs) throws -> Int in
                        if let ext {
                            return try ext.withUnsafeBytes { (e) throws -> Int in
                                try RTPPacket.write(
                                    header, payload: pl, into: out, csrcs: cs, extensionProfile: profile, extensionData: e,
                                    paddingByteCount: padding)
                            }
                        }
                        return try RTPPacket.write(header, payload: pl, into: out, csrcs: cs, paddingByteCount: padding)
                    }
                }
            }
            let wire = Array(buffer[0..<n])
            let p = try parse(wire)
            #expect(p.header == header)
            #expect(p.csrcCount == csrcs.count)
            let parsedCSRCs = wire.withUnsafeBytes { raw in (0..<p.csrcCount).map { p.csrc($0, in: raw) } }
            #expect(parsedCSRCs == csrcs)
            #expect(p.extensionProfile == (ext == nil ? nil : profile))
            #expect(Array(wire[p.extensionByteRange]) == (ext ?? []))
            #expect(Array(wire[p.payloadByteRange]) == payload)
            #expect(p.paddingByteCount == padding)
            #expect(n == 12 + 4 * csrcs.count + (ext.map { 4 + $0.count } ?? 0) + payload.count + padding)
        }
    }

    @Test func writeRefusesBadFieldsAndSmallBuffers() {
        var small = [UInt8](repeating: 0, count: 11)
        #expect(throws: RTPPacket.WriteError.bufferTooSmall) {
            try small.withUnsafeMutableBytes { (b) throws -> Int in
                try RTPHeader(payloadType: 0, sequenceNumber: 0, timestamp: 0, ssrc: 0).write(into: b)
            }
        }
        var big = [UInt8](repeating: 0, count: 100)
        let odd: [UInt8] = [1, 2, 3]
        #expect(throws: RTPPacket.WriteError.invalidField) {
            try big.withUnsafeMutableBytes { (b) throws -> Int in
                try odd.withUnsafeBytes { (e) throws -> Int in
                    try RTPPacket.write(
                        RTPHeader(payloadType: 0, sequenceNumber: 0, timestamp: 0, ssrc: 0), payload: e, into: b,
                        extensionData: e)
                }
            }
        }
        let payload = [UInt8](repeating: 0, count: 89)
        #expect(throws: RTPPacket.WriteError.bufferTooSmall) {
            try big.withUnsafeMutableBytes { (b) throws -> Int in
                try payload.withUnsafeBytes { (p) throws -> Int in
                    try RTPPacket.write(RTPHeader(payloadType: 0, sequenceNumber: 0, timestamp: 0, ssrc: 0), payload: p, into: b)
                }
            }
        }
    }
}

@Suite("RTP receiver statistics (RFC 3550 A.1, A.3, A.8)")
struct RTPStatisticsTests {
    /// Feeds sequence numbers with timestamps 160 apart and arrivals equal to timestamps (no jitter).
    static func feed(_ seqs: [UInt16], into s: inout RTPReceiveStatistics) -> [RTPReceiveStatistics.Outcome] {
        seqs.map { s.record(sequence: $0, timestamp: UInt32($0) &* 160, arrival: UInt32($0) &* 160) }
    }

    @Test func wrapAt65535CountsACycle() {
        var s = RTPReceiveStatistics()
        let seqs: [UInt16] = [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5]
        let outcomes = Self.feed(seqs, into: &s)
        #expect(outcomes.first == .probation && outcomes.dropFirst().allSatisfy { $0 == .accepted })
        #expect(s.cycles == 65536)
        #expect(s.extendedHighestSequence == 65536 + 5)
        #expect(s.baseSequence == 65531)
        #expect(s.expected == 11 && s.received == 11 && s.lost == 0)
    }

    @Test func lossReorderingAndDuplicates() {
        var s = RTPReceiveStatistics()
        // 10 is dropped, 13 and 12 swap, 14 arrives twice.
        _ = Self.feed([7, 8, 9, 11, 13, 12, 14, 14, 15], into: &s)
        #expect(s.extendedHighestSequence == 15)
        #expect(s.expected == 8)  // 8...15
        #expect(s.received == 8)  // 8 9 11 13 12 14 14 15
        #expect(s.lost == 0)  // the duplicate hides the loss, as in A.3
        var t = RTPReceiveStatistics()
        _ = Self.feed([7, 8, 9, 11, 12, 15], into: &t)
        #expect(t.lost == 3)
        let block = t.makeReportBlock(ssrc: 42)
        #expect(block.cumulativeLost == 3 && block.fractionLost == UInt8((3 << 8) / 8))
        #expect(block.extendedHighestSequence == 15 && block.ssrc == 42)
        // A second report with nothing new: fraction 0, cumulative unchanged.
        #expect(t.makeReportBlock(ssrc: 42).fractionLost == 0)
    }

    /// A jump beyond MAX_DROPOUT is refused once; a second in-sequence packet from there restarts.
    @Test func bigJumpRestartsAfterTwoPackets() {
        var s = RTPReceiveStatistics()
        _ = Self.feed([100, 101, 102], into: &s)
        #expect(Self.feed([20000], into: &s) == [.badSequence])
        #expect(s.received == 2)
        #expect(Self.feed([20001], into: &s) == [.accepted])
        #expect(s.baseSequence == 20001 && s.received == 1 && s.expected == 1)
        // A small step back is reordering, counted.
        #expect(Self.feed([19990], into: &s) == [.accepted])
    }

    /// Worked example: 20 ms packets at 8 kHz whose transit times are 1000, 1010, 1000, 1020 units
    /// once counting starts: D = 10, 10, 20, so J = 10/16, then +(10 − J)/16, then +(20 − J)/16.
    @Test func jitterFollowsTheA8Formula() {
        var s = RTPReceiveStatistics()
        let transits: [UInt32] = [0, 1000, 1010, 1000, 1020]  // the first packet is probation
        for (k, transit) in transits.enumerated() {
            let ts = UInt32(k) * 160 &+ 4_294_967_000  // across the 32-bit timestamp wrap
            s.record(sequence: UInt16(k), timestamp: ts, arrival: ts &+ transit)
        }
        var j = 0.0
        for d in [10.0, 10, 20] { j += (d - j) / 16 }
        #expect(j == 2.38525390625)
        #expect(s.jitter == j)
        #expect(s.makeReportBlock(ssrc: 1).jitter == 2)
    }
}

@Suite("RTCP (RFC 3550 §6.4)")
struct RTCPTests {
    static let block = RTCPReportBlock(
        ssrc: 0x0102_0304, fractionLost: 0x40, cumulativeLost: -5, extendedHighestSequence: 0x0001_0005,
        jitter: 77, lastSenderReport: 0xAABB_CCDD, delaySinceLastSenderReport: 0x0001_8000)
    static let info = RTCPSenderInfo(
        ntpTimestamp: 0xE8F1_2345_8000_0000, rtpTimestamp: 160_000, packetCount: 1000, octetCount: 160_000)

    static func walk(_ bytes: [UInt8]) throws -> [RTCPPacket] {
        try bytes.withUnsafeBytes { (raw) throws -> [RTCPPacket] in
            var parser = RTCPCompoundParser(raw)
            var out: [RTCPPacket] = []
            while let p = try parser.next() { out.append(p) }
            return out
        }
    }

    @Test func senderReportWithSDESRoundTrips() throws {
        var buffer = [UInt8](repeating: 0xEE, count: 200)
        let cname = Array("chamade@127.0.0.1".utf8)
        let n = try buffer.withUnsafeMutableBytes { (b) throws -> Int in
            let o = try RTCPWriter.writeSenderReport(ssrc: 0x5555_0001, info: Self.info, block: Self.block, into: b)
            return try cname.withUnsafeBytes { (c) throws -> Int in
                try RTCPWriter.writeSourceDescription(ssrc: 0x5555_0001, cname: c, into: b, at: o)
            }
        }
        #expect(n == 52 + 28)
        let wire = Array(buffer[0..<n])
        let packets = try Self.walk(wire)
        #expect(packets.count == 2)
        guard case .senderReport(let ssrc, let info, let count, let blocks) = packets[0] else {
            Issue.record("not an SR")
            return
        }
        #expect(ssrc == 0x5555_0001 && info == Self.info && count == 1)
        #expect(wire.withUnsafeBytes { RTCPPacket.reportBlock(0, of: blocks, in: $0) } == Self.block)
        guard case .sourceDescription(let sdesSSRC, let range?) = packets[1] else {
            Issue.record("no CNAME")
            return
        }
        #expect(sdesSSRC == 0x5555_0001 && Array(wire[range]) == cname)
        #expect(Self.info.compactNTP == 0x2345_8000)
    }

    @Test(arguments: [Int32(0), 1, -1, 0x7F_FFFF, -0x80_0000])
    func receiverReportRoundTripsCumulativeLost(lost: Int32) throws {
        var block = Self.block
        block.cumulativeLost = lost
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = try buffer.withUnsafeMutableBytes { (b) throws -> Int in
            try RTCPWriter.writeReceiverReport(ssrc: 9, block: block, into: b)
        }
        #expect(n == 32)
        let packets = try Self.walk(buffer)
        guard case .receiverReport(9, 1, let blocks) = packets[0] else {
            Issue.record("not an RR")
            return
        }
        #expect(buffer.withUnsafeBytes { RTCPPacket.reportBlock(0, of: blocks, in: $0) } == block)
    }

    @Test func cumulativeLostBeyond24BitsIsClamped() throws {
        var block = Self.block
        block.cumulativeLost = 0x100_0000
        var buffer = [UInt8](repeating: 0, count: 32)
        _ = try buffer.withUnsafeMutableBytes { (b) throws -> Int in
            try RTCPWriter.writeReceiverReport(ssrc: 9, block: block, into: b)
        }
        guard case .receiverReport(_, _, let blocks) = try Self.walk(buffer)[0] else { return }
        #expect(buffer.withUnsafeBytes { RTCPPacket.reportBlock(0, of: blocks, in: $0) }.cumulativeLost == 0x7F_FFFF)
    }

    /// A compound as a softphone sends it: RR with one block, SDES CNAME "u@h" plus a NOTE item, BYE.
    @Test func capturedStyleCompound() throws {
        let wire: [UInt8] = [
            0x81, 0xC9, 0x00, 0x07, 0x11, 0x22, 0x33, 0x44,  // RR, 1 block, length 7
            0x55, 0x66, 0x77, 0x88, 0x0A, 0xFF, 0xFF, 0xFE,  // SSRC, fraction 10, lost −2
            0x00, 0x02, 0xFF, 0xF0, 0x00, 0x00, 0x00, 0x2A,  // ext seq 0x2FFF0, jitter 42
            0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x40, 0x00,  // LSR, DLSR 0.25 s
            0x81, 0xCA, 0x00, 0x04, 0x11, 0x22, 0x33, 0x44,  // SDES, 1 chunk, length 4
            0x01, 0x03, 0x75, 0x40, 0x68, 0x07, 0x02, 0x68,  // CNAME "u@h", NOTE "hi"
            0x69, 0x00, 0x00, 0x00,  // end of items, pad
            0x81, 0xCB, 0x00, 0x01, 0x11, 0x22, 0x33, 0x44,  // BYE
        ]
        let packets = try Self.walk(wire)
        #expect(packets.count == 3)
        guard case .receiverReport(0x1122_3344, 1, let blocks) = packets[0] else {
            Issue.record("not an RR")
            return
        }
        let expected = RTCPReportBlock(
            ssrc: 0x5566_7788, fractionLost: 10, cumulativeLost: -2, extendedHighestSequence: 0x2FFF0, jitter: 42,
            lastSenderReport: 0x1234_5678, delaySinceLastSenderReport: 0x4000)
        #expect(wire.withUnsafeBytes { RTCPPacket.reportBlock(0, of: blocks, in: $0) } == expected)
        #expect(packets[1] == .sourceDescription(ssrc: 0x1122_3344, cname: 42..<45))
        #expect(packets[2] == .bye(sourceCount: 1, firstSSRC: 0x1122_3344))
    }

    struct Malformed: Sendable, CustomStringConvertible {
        let name: String
        let bytes: [UInt8]
        let error: RTCPCompoundParser.ParseError
        var description: String { name }
    }

    static let rr: [UInt8] = [0x80, 0xC9, 0x00, 0x01, 0, 0, 0, 1]
    static let malformed: [Malformed] = [
        Malformed(name: "3 bytes", bytes: [0x80, 0xC9, 0x00], error: .tooShort),
        Malformed(name: "version 1", bytes: [0x40, 0xC9, 0x00, 0x01, 0, 0, 0, 1], error: .wrongVersion(1)),
        Malformed(name: "length past end", bytes: [0x80, 0xC9, 0x00, 0x02, 0, 0, 0, 1], error: .lengthPastEnd),
        Malformed(name: "starts with SDES", bytes: [0x80, 0xCA, 0x00, 0x01, 0, 0, 0, 1], error: .notStartingWithReport),
        Malformed(name: "RR count 1, no block", bytes: [0x81, 0xC9, 0x00, 0x01, 0, 0, 0, 1], error: .countPastEnd),
        Malformed(name: "SR too short for sender info", bytes: [0x80, 0xC8, 0x00, 0x01, 0, 0, 0, 1], error: .countPastEnd),
        Malformed(name: "trailing 2 bytes", bytes: rr + [0x80, 0xCB], error: .tooShort),
        Malformed(name: "BYE count past length", bytes: rr + [0x82, 0xCB, 0x00, 0x01, 0, 0, 0, 1], error: .countPastEnd),
        Malformed(
            name: "SDES item past end", bytes: rr + [0x81, 0xCA, 0x00, 0x02, 0, 0, 0, 1, 0x01, 0x09, 0x41, 0x42],
            error: .countPastEnd),
        Malformed(name: "padding not last", bytes: [0xA0, 0xC9, 0x00, 0x01, 0, 0, 0, 1] + rr, error: .badPadding),
        Malformed(name: "padding too large", bytes: [0xA0, 0xC9, 0x00, 0x01, 0, 0, 0, 9], error: .badPadding),
        Malformed(name: "padding zero", bytes: [0xA0, 0xC9, 0x00, 0x01, 0, 0, 0, 0], error: .badPadding),
    ]

    @Test(arguments: malformed)
    func malformedGivesTypedError(_ c: Malformed) {
        #expect(throws: c.error) { try Self.walk(c.bytes) }
    }

    @Test func unknownTypesAreSkipped() throws {
        let app: [UInt8] = [0x80, 0xCC, 0x00, 0x02, 0, 0, 0, 1, 0x41, 0x42, 0x43, 0x44]
        #expect(try Self.walk(Self.rr + app) == [.receiverReport(ssrc: 1, blockCount: 0, blocks: 8..<8), .other(packetType: 204, bytes: 8..<20)])
    }
}

@Suite("Telephone events (RFC 4733)")
struct TelephoneEventTests {
    static let digits = Array("0123456789*#ABCD".utf8)

    @Test(arguments: 0..<16)
    func everyDigitRoundTrips(event: Int) throws {
        let ascii = Self.digits[event]
        #expect(TelephoneEvent.event(ofDigit: ascii) == UInt8(event))
        #expect(TelephoneEvent.digit(ofEvent: UInt8(event)) == ascii)
        for end in [false, true] {
            let e = TelephoneEvent(event: UInt8(event), end: end, volume: 63, duration: 800)
            var buffer = [UInt8](repeating: 0, count: 4)
            let n = try buffer.withUnsafeMutableBytes { (b) throws -> Int in try e.write(into: b) }
            #expect(n == 4)
            let back = try buffer.withUnsafeBytes { (b) throws -> TelephoneEvent in
                try TelephoneEvent.parse(b)
            }
            #expect(back == e && back.digit == ascii)
        }
    }

    /// RFC 4733 §2.3 layout: digit 5, end, R set (ignored), volume 10, duration 1600 (200 ms at 8 kHz).
    @Test func wireLayout() throws {
        let bytes: [UInt8] = [0x05, 0xCA, 0x06, 0x40]
        let e = try bytes.withUnsafeBytes { (b) throws -> TelephoneEvent in try TelephoneEvent.parse(b) }
        #expect(e == TelephoneEvent(event: 5, end: true, volume: 10, duration: 1600))
        #expect(throws: TelephoneEvent.ParseError.tooShort) {
            try [UInt8]([5, 0x80, 0]).withUnsafeBytes { (b) throws -> TelephoneEvent in
                try TelephoneEvent.parse(b)
            }
        }
    }

    @Test func nonDigitsAreRefused() {
        for ascii in Array("EFez !\u{0}".utf8) {
            #expect(TelephoneEvent.event(ofDigit: ascii) == nil)
        }
        #expect(TelephoneEvent.event(ofDigit: UInt8(ascii: "d")) == 15)
        #expect(TelephoneEvent.digit(ofEvent: 16) == nil)
    }
}
