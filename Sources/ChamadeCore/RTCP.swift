/// One reception report block (RFC 3550 §6.4.1): what a receiver says about one source.
///
/// Value type. Real-time safe.
public struct RTCPReportBlock: Sendable, Hashable {
    /// The source this block is about.
    public var ssrc: UInt32
    /// Fraction lost since the previous report, in 1/256 units.
    public var fractionLost: UInt8
    /// Cumulative packets lost, a 24-bit signed value (−8388608...8388607; duplicates can make it negative).
    public var cumulativeLost: Int32
    /// Extended highest sequence number received (cycles << 16 | highest).
    public var extendedHighestSequence: UInt32
    /// Interarrival jitter, in RTP timestamp units.
    public var jitter: UInt32
    /// LSR: the middle 32 bits of the last SR's NTP timestamp, 0 if none.
    public var lastSenderReport: UInt32
    /// DLSR: delay since that SR, in 1/65536 s.
    public var delaySinceLastSenderReport: UInt32

    /// A block from its fields; `cumulativeLost` is clamped to 24 bits on write. Real-time safe.
    public init(
        ssrc: UInt32, fractionLost: UInt8, cumulativeLost: Int32, extendedHighestSequence: UInt32, jitter: UInt32,
        lastSenderReport: UInt32, delaySinceLastSenderReport: UInt32
    ) {
        self.ssrc = ssrc
        self.fractionLost = fractionLost
        self.cumulativeLost = cumulativeLost
        self.extendedHighestSequence = extendedHighestSequence
        self.jitter = jitter
        self.lastSenderReport = lastSenderReport
        self.delaySinceLastSenderReport = delaySinceLastSenderReport
    }

    /// Bytes per block on the wire.
    public static let byteCount = 24

    @inlinable
    static func read(at o: Int, in b: UnsafeRawBufferPointer) -> RTCPReportBlock {
        let word = RTPBytes.load(UInt32.self, at: o + 4, in: b)
        // Sign-extend the low 24 bits.
        let lost = Int32(bitPattern: word << 8) >> 8
        return RTCPReportBlock(
            ssrc: RTPBytes.load(UInt32.self, at: o, in: b), fractionLost: UInt8(word >> 24), cumulativeLost: lost,
            extendedHighestSequence: RTPBytes.load(UInt32.self, at: o + 8, in: b),
            jitter: RTPBytes.load(UInt32.self, at: o + 12, in: b),
            lastSenderReport: RTPBytes.load(UInt32.self, at: o + 16, in: b),
            delaySinceLastSenderReport: RTPBytes.load(UInt32.self, at: o + 20, in: b))
    }

    @inlinable
    func write(at o: Int, in b: UnsafeMutableRawBufferPointer) {
        let lost = UInt32(bitPattern: min(max(cumulativeLost, -0x80_0000), 0x7F_FFFF)) & 0xFF_FFFF
        RTPBytes.store(ssrc, at: o, in: b)
        RTPBytes.store(UInt32(fractionLost) << 24 | lost, at: o + 4, in: b)
        RTPBytes.store(extendedHighestSequence, at: o + 8, in: b)
        RTPBytes.store(jitter, at: o + 12, in: b)
        RTPBytes.store(lastSenderReport, at: o + 16, in: b)
        RTPBytes.store(delaySinceLastSenderReport, at: o + 20, in: b)
    }
}

/// The sender information of an SR (RFC 3550 §6.4.1).
public struct RTCPSenderInfo: Sendable, Hashable {
    /// NTP timestamp (64-bit: seconds since 1900 << 32 | fraction) of when the report was sent.
    public var ntpTimestamp: UInt64
    /// The same instant in the RTP clock of the sender's media.
    public var rtpTimestamp: UInt32
    /// Packets sent since the start of transmission.
    public var packetCount: UInt32
    /// Payload bytes sent since the start of transmission.
    public var octetCount: UInt32

    /// Sender information from its fields. Real-time safe.
    public init(ntpTimestamp: UInt64, rtpTimestamp: UInt32, packetCount: UInt32, octetCount: UInt32) {
        self.ntpTimestamp = ntpTimestamp
        self.rtpTimestamp = rtpTimestamp
        self.packetCount = packetCount
        self.octetCount = octetCount
    }

    /// The middle 32 bits of the NTP timestamp: what a receiver echoes as LSR.
    public var compactNTP: UInt32 { UInt32(truncatingIfNeeded: ntpTimestamp >> 16) }
}

/// One packet of a compound RTCP datagram, as a view over the caller's bytes.
///
/// Ranges index the parsed buffer. Real-time safe.
public enum RTCPPacket: Sendable, Hashable {
    /// SR (PT 200): the reporter, its sender information, and `blockCount` report blocks at `blocks`.
    case senderReport(ssrc: UInt32, info: RTCPSenderInfo, blockCount: Int, blocks: Range<Int>)
    /// RR (PT 201): the reporter and `blockCount` report blocks at `blocks`.
    case receiverReport(ssrc: UInt32, blockCount: Int, blocks: Range<Int>)
    /// SDES (PT 202): the first chunk's SSRC and where its CNAME text is (nil if it has none).
    case sourceDescription(ssrc: UInt32, cname: Range<Int>?)
    /// BYE (PT 203): how many sources leave and the first of them (0 if none).
    case bye(sourceCount: Int, firstSSRC: UInt32)
    /// Any other type (APP, feedback, XR...): recognised as a well-formed packet and skipped.
    case other(packetType: UInt8, bytes: Range<Int>)

    /// The `index`th report block of an SR or RR whose `blocks` range came from `bytes`. Real-time safe.
    public static func reportBlock(_ index: Int, of blocks: Range<Int>, in bytes: UnsafeRawBufferPointer)
        -> RTCPReportBlock
    {
        let o = blocks.lowerBound + RTCPReportBlock.byteCount * index
        precondition(index >= 0 && o + RTCPReportBlock.byteCount <= blocks.upperBound, "block index out of range")
        return RTCPReportBlock.read(at: o, in: bytes)
    }
}

/// Walks a compound RTCP datagram packet by packet (RFC 3550 §6.1), validating as it goes.
///
/// `next()` returns nil at the end; any malformed packet throws, and the rest of the datagram should
/// then be dropped (A.2). No allocation. Real-time safe.
public struct RTCPCompoundParser {
    /// Why bytes are not valid RTCP.
    public enum ParseError: Error, Sendable, Hashable {
        /// Fewer than 4 bytes left for a common header, or a datagram shorter than 8 bytes.
        case tooShort
        /// Version not 2 (carries the version found).
        case wrongVersion(UInt8)
        /// The length field runs past the end of the datagram.
        case lengthPastEnd
        /// The first packet is neither SR nor RR (A.2: a compound starts with a report).
        case notStartingWithReport
        /// The report count needs more bytes than the packet's length gives, or an SDES item runs past its packet.
        case countPastEnd
        /// The P bit on a packet that is not the last, or a padding count too large.
        case badPadding
    }

    /// The datagram being walked.
    public let bytes: UnsafeRawBufferPointer
    /// Offset of the next packet.
    public private(set) var offset = 0

    /// A parser over `bytes`, which must stay valid while it is used. Real-time safe.
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// The next packet, nil at the end, or the first error. Real-time safe.
    public mutating func next() throws(ParseError) -> RTCPPacket? {
        let n = bytes.count
        if offset == n { return nil }
        guard n - offset >= 4 else { throw .tooShort }
        let b0 = bytes[offset]
        let version = b0 >> 6
        guard version == 2 else { throw .wrongVersion(version) }
        let count = Int(b0 & 0x1F)
        let type = bytes[offset + 1]
        let length = 4 * (Int(RTPBytes.load(UInt16.self, at: offset + 2, in: bytes)) + 1)
        let start = offset
        guard length <= n - start else { throw .lengthPastEnd }
        var end = start + length
        if offset == 0 && type != 200 && type != 201 { throw .notStartingWithReport }
        if b0 & 0x20 != 0 {
            guard end == n else { throw .badPadding }
            let padding = Int(bytes[end - 1])
            guard padding != 0, padding <= length - 4 else { throw .badPadding }
            end -= padding
        }
        offset = start + length
        switch type {
        case 200:
            let blocks = start + 28
            guard blocks + count * RTCPReportBlock.byteCount <= end else { throw .countPastEnd }
            let info = RTCPSenderInfo(
                ntpTimestamp: RTPBytes.load(UInt64.self, at: start + 8, in: bytes),
                rtpTimestamp: RTPBytes.load(UInt32.self, at: start + 16, in: bytes),
                packetCount: RTPBytes.load(UInt32.self, at: start + 20, in: bytes),
                octetCount: RTPBytes.load(UInt32.self, at: start + 24, in: bytes))
            return .senderReport(
                ssrc: RTPBytes.load(UInt32.self, at: start + 4, in: bytes), info: info, blockCount: count,
                blocks: blocks..<(blocks + count * RTCPReportBlock.byteCount))
        case 201:
            let blocks = start + 8
            guard blocks + count * RTCPReportBlock.byteCount <= end else { throw .countPastEnd }
            return .receiverReport(
                ssrc: RTPBytes.load(UInt32.self, at: start + 4, in: bytes), blockCount: count,
                blocks: blocks..<(blocks + count * RTCPReportBlock.byteCount))
        case 202:
            guard count > 0 else { return .other(packetType: type, bytes: start..<offset) }
            guard start + 8 <= end else { throw .countPastEnd }
            let ssrc = RTPBytes.load(UInt32.self, at: start + 4, in: bytes)
            // Items of the first chunk: type, length, text; a zero type ends the list.
            var o = start + 8
            var cname: Range<Int>? = nil
            while o < end {
                let item = bytes[o]
                if item == 0 { break }
                guard o + 2 <= end, o + 2 + Int(bytes[o + 1]) <= end else { throw .countPastEnd }
                if item == 1 && cname == nil { cname = (o + 2)..<(o + 2 + Int(bytes[o + 1])) }
                o += 2 + Int(bytes[o + 1])
            }
            return .sourceDescription(ssrc: ssrc, cname: cname)
        case 203:
            guard start + 4 + 4 * count <= end else { throw .countPastEnd }
            let first = count > 0 ? RTPBytes.load(UInt32.self, at: start + 4, in: bytes) : 0
            return .bye(sourceCount: count, firstSSRC: first)
        default:
            return .other(packetType: type, bytes: start..<offset)
        }
    }
}

/// Builds the RTCP packets a leg sends (RFC 3550 §6.4, §6.5, §6.6) into a caller buffer.
///
/// Each function writes one packet at `offset` and returns the offset after it, so a compound
/// datagram is a chain of calls (SR or RR first, then SDES with CNAME). Real-time safe.
public enum RTCPWriter {
    /// An SR with `info` and zero or one report block. Throws `.bufferTooSmall`. Real-time safe.
    public static func writeSenderReport(
        ssrc: UInt32, info: RTCPSenderInfo, block: RTCPReportBlock?, into buffer: UnsafeMutableRawBufferPointer,
        at offset: Int = 0
    ) throws(RTPPacket.WriteError) -> Int {
        let count = block == nil ? 0 : 1
        let length = 28 + RTCPReportBlock.byteCount * count
        guard offset >= 0, buffer.count - offset >= length else { throw .bufferTooSmall }
        writeCommonHeader(count: count, type: 200, length: length, at: offset, in: buffer)
        RTPBytes.store(ssrc, at: offset + 4, in: buffer)
        RTPBytes.store(info.ntpTimestamp, at: offset + 8, in: buffer)
        RTPBytes.store(info.rtpTimestamp, at: offset + 16, in: buffer)
        RTPBytes.store(info.packetCount, at: offset + 20, in: buffer)
        RTPBytes.store(info.octetCount, at: offset + 24, in: buffer)
        block?.write(at: offset + 28, in: buffer)
        return offset + length
    }

    /// An RR with zero or one report block. Throws `.bufferTooSmall`. Real-time safe.
    public static func writeReceiverReport(
        ssrc: UInt32, block: RTCPReportBlock?, into buffer: UnsafeMutableRawBufferPointer, at offset: Int = 0
    ) throws(RTPPacket.WriteError) -> Int {
        let count = block == nil ? 0 : 1
        let length = 8 + RTCPReportBlock.byteCount * count
        guard offset >= 0, buffer.count - offset >= length else { throw .bufferTooSmall }
        writeCommonHeader(count: count, type: 201, length: length, at: offset, in: buffer)
        RTPBytes.store(ssrc, at: offset + 4, in: buffer)
        block?.write(at: offset + 8, in: buffer)
        return offset + length
    }

    /// An SDES with one chunk holding CNAME `cname` (1...255 bytes, else `.invalidField`), zero-padded
    /// to a 32-bit boundary. Real-time safe.
    public static func writeSourceDescription(
        ssrc: UInt32, cname: UnsafeRawBufferPointer, into buffer: UnsafeMutableRawBufferPointer, at offset: Int = 0
    ) throws(RTPPacket.WriteError) -> Int {
        guard (1...255).contains(cname.count) else { throw .invalidField }
        // Header 4 + SSRC 4 + type 1 + length 1 + text + at least one zero byte ending the item list.
        let length = (4 + 4 + 2 + cname.count + 1 + 3) & ~3
        guard offset >= 0, buffer.count - offset >= length else { throw .bufferTooSmall }
        writeCommonHeader(count: 1, type: 202, length: length, at: offset, in: buffer)
        RTPBytes.store(ssrc, at: offset + 4, in: buffer)
        buffer[offset + 8] = 1
        buffer[offset + 9] = UInt8(cname.count)
        RTPBytes.copy(cname, to: offset + 10, in: buffer)
        for k in (offset + 10 + cname.count)..<(offset + length) { buffer[k] = 0 }
        return offset + length
    }

    /// A BYE for one source, no reason. Real-time safe.
    public static func writeBye(ssrc: UInt32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int = 0)
        throws(RTPPacket.WriteError) -> Int
    {
        guard offset >= 0, buffer.count - offset >= 8 else { throw .bufferTooSmall }
        writeCommonHeader(count: 1, type: 203, length: 8, at: offset, in: buffer)
        RTPBytes.store(ssrc, at: offset + 4, in: buffer)
        return offset + 8
    }

    private static func writeCommonHeader(
        count: Int, type: UInt8, length: Int, at offset: Int, in buffer: UnsafeMutableRawBufferPointer
    ) {
        buffer[offset] = 0x80 | UInt8(count)
        buffer[offset + 1] = type
        RTPBytes.store(UInt16(length / 4 - 1), at: offset + 2, in: buffer)
    }
}
