/// The fixed fields of an RTP header (RFC 3550 §5.1) that a sender chooses per packet.
///
/// Value type, no storage behind it. Real-time safe.
public struct RTPHeader: Sendable, Hashable {
    /// M bit: for audio, the first packet of a talk spurt (RFC 3551 §4.1).
    public var marker: Bool
    /// PT, 0...127 (7 bits; higher bits are dropped on write).
    public var payloadType: UInt8
    /// Sequence number; wraps at 65535.
    public var sequenceNumber: UInt16
    /// Media timestamp in RTP clock units (8000 Hz for G.711, 48000 Hz for Opus); wraps.
    public var timestamp: UInt32
    /// Synchronisation source.
    public var ssrc: UInt32

    /// A header from its fields. Real-time safe.
    public init(marker: Bool = false, payloadType: UInt8, sequenceNumber: UInt16, timestamp: UInt32, ssrc: UInt32) {
        self.marker = marker
        self.payloadType = payloadType
        self.sequenceNumber = sequenceNumber
        self.timestamp = timestamp
        self.ssrc = ssrc
    }

    /// The size of a header without CSRCs or extension, in bytes.
    public static let fixedByteCount = 12

    /// Writes the 12-byte fixed header (V=2, P=0, X=0, CC=0) at the start of `buffer`; returns 12, or
    /// throws `.bufferTooSmall`. The payload goes at offset 12. Real-time safe.
    @inlinable
    public func write(into buffer: UnsafeMutableRawBufferPointer) throws(RTPPacket.WriteError) -> Int {
        guard buffer.count >= Self.fixedByteCount else { throw .bufferTooSmall }
        buffer[0] = 0x80
        buffer[1] = (marker ? 0x80 : 0) | (payloadType & 0x7F)
        RTPBytes.store(sequenceNumber, at: 2, in: buffer)
        RTPBytes.store(timestamp, at: 4, in: buffer)
        RTPBytes.store(ssrc, at: 8, in: buffer)
        return Self.fixedByteCount
    }
}

/// One parsed RTP packet (RFC 3550 §5.1): its header and where its parts lie in the input bytes.
///
/// Parsing reads the caller's bytes in place and allocates nothing; the ranges index those bytes, so
/// they mean something only together with the buffer that was parsed. Real-time safe.
public struct RTPPacket: Sendable, Hashable {
    /// Why bytes are not an RTP packet. Each check follows RFC 3550 §5.1 and A.1.
    public enum ParseError: Error, Sendable, Hashable {
        /// Fewer than the 12 bytes of the fixed header.
        case tooShort
        /// The version field is not 2 (carries the version found).
        case wrongVersion(UInt8)
        /// The CSRC count names more identifiers than there are bytes.
        case csrcPastEnd
        /// The X bit is set but the extension header or its declared length runs past the end.
        case extensionPastEnd
        /// The P bit is set but the padding count is larger than what follows the header.
        case paddingTooLarge
        /// The P bit is set with a padding count of 0 (the count includes its own byte).
        case paddingZero
    }

    /// Why a packet could not be written.
    public enum WriteError: Error, Sendable, Hashable {
        /// The caller's buffer cannot hold the packet.
        case bufferTooSmall
        /// More than 15 CSRCs, an extension not a whole number of 32-bit words or longer than
        /// 65535 words, or padding outside 0...255.
        case invalidField
    }

    /// The header fields.
    public var header: RTPHeader
    /// CC: number of contributing sources, 0...15; they lie at `csrcByteRange`.
    public var csrcCount: Int
    /// Bytes of the CSRC list (4 × `csrcCount`).
    public var csrcByteRange: Range<Int>
    /// The extension's "defined by profile" field when the X bit is set, else nil.
    public var extensionProfile: UInt16?
    /// Bytes of the extension data (after its 4-byte header); empty without an extension.
    public var extensionByteRange: Range<Int>
    /// Bytes of the payload (padding excluded).
    public var payloadByteRange: Range<Int>
    /// Padding bytes at the end, the count byte included (0 without the P bit).
    public var paddingByteCount: Int

    /// Parses `bytes` as one RTP packet. Real-time safe: no allocation, reads in place.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(ParseError) -> RTPPacket {
        let n = bytes.count
        guard n >= RTPHeader.fixedByteCount else { throw .tooShort }
        let b0 = bytes[0]
        let version = b0 >> 6
        guard version == 2 else { throw .wrongVersion(version) }
        let hasPadding = b0 & 0x20 != 0
        let hasExtension = b0 & 0x10 != 0
        let cc = Int(b0 & 0x0F)
        let b1 = bytes[1]
        let header = RTPHeader(
            marker: b1 & 0x80 != 0, payloadType: b1 & 0x7F,
            sequenceNumber: RTPBytes.load(UInt16.self, at: 2, in: bytes),
            timestamp: RTPBytes.load(UInt32.self, at: 4, in: bytes),
            ssrc: RTPBytes.load(UInt32.self, at: 8, in: bytes))
        var offset = RTPHeader.fixedByteCount + 4 * cc
        guard offset <= n else { throw .csrcPastEnd }
        let csrcRange = RTPHeader.fixedByteCount..<offset
        var profile: UInt16? = nil
        var extensionRange = offset..<offset
        if hasExtension {
            guard offset + 4 <= n else { throw .extensionPastEnd }
            profile = RTPBytes.load(UInt16.self, at: offset, in: bytes)
            let words = Int(RTPBytes.load(UInt16.self, at: offset + 2, in: bytes))
            let start = offset + 4
            guard start + 4 * words <= n else { throw .extensionPastEnd }
            extensionRange = start..<(start + 4 * words)
            offset = extensionRange.upperBound
        }
        var padding = 0
        if hasPadding {
            // The padding count is the last byte; it counts itself, so it can be the packet's last
            // byte after the header at most, and never 0 (RFC 3550 §5.1, A.1 "padding octet count").
            guard offset < n else { throw .paddingTooLarge }
            padding = Int(bytes[n - 1])
            guard padding != 0 else { throw .paddingZero }
            guard padding <= n - offset else { throw .paddingTooLarge }
        }
        return RTPPacket(
            header: header, csrcCount: cc, csrcByteRange: csrcRange, extensionProfile: profile,
            extensionByteRange: extensionRange, payloadByteRange: offset..<(n - padding), paddingByteCount: padding)
    }

    /// The `index`th CSRC (0 ..< `csrcCount`), read from the parsed `bytes`. Real-time safe.
    @inlinable
    public func csrc(_ index: Int, in bytes: UnsafeRawBufferPointer) -> UInt32 {
        precondition(index >= 0 && index < csrcCount, "CSRC index out of range")
        return RTPBytes.load(UInt32.self, at: csrcByteRange.lowerBound + 4 * index, in: bytes)
    }

    /// Writes a whole packet into `buffer` and returns its length in bytes: the header, `csrcs` (at
    /// most 15), an extension when `extensionData` is given (a multiple of 4 bytes), the payload, and
    /// `paddingByteCount` (0...255) padding bytes, zeros then the count. Real-time safe.
    public static func write(
        _ header: RTPHeader, payload: UnsafeRawBufferPointer, into buffer: UnsafeMutableRawBufferPointer,
        csrcs: UnsafeBufferPointer<UInt32> = UnsafeBufferPointer(start: nil, count: 0),
        extensionProfile: UInt16 = 0, extensionData: UnsafeRawBufferPointer? = nil, paddingByteCount: Int = 0
    ) throws(WriteError) -> Int {
        guard csrcs.count <= 15, (0...255).contains(paddingByteCount) else { throw .invalidField }
        var total = RTPHeader.fixedByteCount + 4 * csrcs.count + payload.count + paddingByteCount
        if let e = extensionData {
            guard e.count % 4 == 0, e.count / 4 <= 0xFFFF else { throw .invalidField }
            total += 4 + e.count
        }
        guard buffer.count >= total else { throw .bufferTooSmall }
        _ = try header.write(into: buffer)
        buffer[0] = 0x80 | (paddingByteCount > 0 ? 0x20 : 0) | (extensionData != nil ? 0x10 : 0) | UInt8(csrcs.count)
        var offset = RTPHeader.fixedByteCount
        for k in 0..<csrcs.count {
            RTPBytes.store(csrcs[k], at: offset, in: buffer)
            offset += 4
        }
        if let e = extensionData {
            RTPBytes.store(extensionProfile, at: offset, in: buffer)
            RTPBytes.store(UInt16(e.count / 4), at: offset + 2, in: buffer)
            offset += 4
            RTPBytes.copy(e, to: offset, in: buffer)
            offset += e.count
        }
        RTPBytes.copy(payload, to: offset, in: buffer)
        offset += payload.count
        if paddingByteCount > 0 {
            for k in 0..<(paddingByteCount - 1) { buffer[offset + k] = 0 }
            buffer[offset + paddingByteCount - 1] = UInt8(paddingByteCount)
            offset += paddingByteCount
        }
        return offset
    }
}

/// Network-order loads and stores shared by the RTP, RTCP and telephone-event codecs.
///
/// Unaligned, bounds-checked by the callers. Real-time safe.
public enum RTPBytes {
    /// The big-endian integer at `offset` of `bytes`. Real-time safe.
    @inlinable @inline(__always)
    public static func load<T: FixedWidthInteger>(_: T.Type, at offset: Int, in bytes: UnsafeRawBufferPointer) -> T {
        T(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    /// Stores `value` big-endian at `offset` of `buffer`. Real-time safe.
    @inlinable @inline(__always)
    public static func store<T: FixedWidthInteger>(_ value: T, at offset: Int, in buffer: UnsafeMutableRawBufferPointer) {
        buffer.storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
    }

    /// Copies `source` into `buffer` at `offset` (the caller checked the room). Real-time safe.
    @inlinable @inline(__always)
    public static func copy(_ source: UnsafeRawBufferPointer, to offset: Int, in buffer: UnsafeMutableRawBufferPointer) {
        guard source.count > 0 else { return }
        UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<(offset + source.count)]).copyMemory(from: source)
    }
}

/// Receiver-side statistics for one source, per RFC 3550 A.1 (sequence validation and extended
/// sequence numbers), A.3 (expected and lost) and A.8 (interarrival jitter).
///
/// A value type owned by the thread that receives the source's packets. No allocation. Real-time safe.
public struct RTPReceiveStatistics: Sendable, Hashable {
    /// What `record` made of a packet.
    public enum Outcome: Sendable, Hashable {
        /// In sequence or within the tolerated reordering: counted.
        case accepted
        /// Still in probation (a new source must show 2 sequential packets): not counted yet.
        case probation
        /// A jump beyond `maxDropout` or back beyond `maxMisorder`: not counted; a second packet that
        /// continues from it restarts the statistics (the sender restarted).
        case badSequence
    }

    /// Sequential packets a new source needs before it counts (A.1 MIN_SEQUENTIAL).
    public static let minSequential = 2
    /// Largest forward jump still taken as loss (A.1 MAX_DROPOUT).
    public static let maxDropout: UInt16 = 3000
    /// Largest backward step still taken as reordering (A.1 MAX_MISORDER).
    public static let maxMisorder: UInt16 = 100

    /// Highest sequence number seen.
    public private(set) var maxSequence: UInt16 = 0
    /// Sequence wraps, shifted left by 16 (A.1 `cycles`).
    public private(set) var cycles: UInt32 = 0
    /// The first sequence number counted.
    public private(set) var baseSequence: UInt32 = 0
    /// Packets counted (duplicates included, as in A.1).
    public private(set) var received: UInt64 = 0
    private var badSequence: UInt32 = 0x1_0000 + 1
    private var probation = minSequential
    private var expectedPrior: Int64 = 0
    private var receivedPrior: UInt64 = 0
    private var transit: Int64 = 0
    private var hasTransit = false
    /// Interarrival jitter estimate J in RTP timestamp units (A.8, J += (|D| − J)/16), unrounded.
    public private(set) var jitter: Double = 0
    private var started = false

    /// Empty statistics; the first packet starts probation. Real-time safe.
    public init() {}

    /// Extended highest sequence number: `cycles + maxSequence`.
    public var extendedHighestSequence: UInt32 { cycles &+ UInt32(maxSequence) }

    /// Packets expected so far (A.3): extended highest − base + 1; 0 before any packet counted.
    public var expected: Int64 { received == 0 ? 0 : Int64(extendedHighestSequence) - Int64(baseSequence) + 1 }

    /// Packets lost so far (A.3): expected − received; negative with duplicates.
    public var lost: Int64 { expected - Int64(received) }

    /// Records one packet: its `sequence`, RTP `timestamp`, and `arrival` time expressed in the same
    /// RTP clock units (the caller converts its monotonic clock). Real-time safe.
    @discardableResult
    public mutating func record(sequence: UInt16, timestamp: UInt32, arrival: UInt32) -> Outcome {
        let outcome = updateSequence(sequence)
        guard outcome == .accepted else { return outcome }
        // A.8: D = (Rj − Ri) − (Sj − Si) = transit_j − transit_i, in wrapping 32-bit arithmetic.
        let t = Int64(Int32(bitPattern: arrival &- timestamp))
        if hasTransit {
            let d = Double(abs(Int64(Int32(truncatingIfNeeded: t - transit))))
            jitter += (d - jitter) / 16
        }
        transit = t
        hasTransit = true
        return .accepted
    }

    /// Records a packet of the source that takes no part in the jitter (an RFC 4733 event between
    /// the audio packets, its timestamp the event's start): counted received, so its sequence
    /// number is no loss. Real-time safe.
    @discardableResult
    public mutating func recordSequence(_ sequence: UInt16) -> Outcome { updateSequence(sequence) }

    /// A report block for this source (A.3): fraction lost since the previous call, cumulative loss
    /// clamped to 24 bits, jitter truncated to whole units; `lsr`/`dlsr` from the caller's SR
    /// bookkeeping. Moves the "prior" counters. Real-time safe.
    public mutating func makeReportBlock(ssrc: UInt32, lastSenderReport: UInt32 = 0, delaySinceLastSenderReport: UInt32 = 0)
        -> RTCPReportBlock
    {
        let expectedNow = expected
        let expectedInterval = expectedNow - expectedPrior
        let receivedInterval = Int64(received) - Int64(receivedPrior)
        expectedPrior = expectedNow
        receivedPrior = received
        let lostInterval = expectedInterval - receivedInterval
        let fraction: UInt8 =
            expectedInterval == 0 || lostInterval <= 0 ? 0 : UInt8(min(255, (lostInterval << 8) / expectedInterval))
        return RTCPReportBlock(
            ssrc: ssrc, fractionLost: fraction, cumulativeLost: Int32(min(max(lost, -0x80_0000), 0x7F_FFFF)),
            extendedHighestSequence: extendedHighestSequence, jitter: UInt32(min(jitter, Double(UInt32.max))),
            lastSenderReport: lastSenderReport, delaySinceLastSenderReport: delaySinceLastSenderReport)
    }

    private mutating func initSequence(_ seq: UInt16) {
        baseSequence = UInt32(seq)
        maxSequence = seq
        badSequence = 0x1_0000 + 1
        cycles = 0
        received = 0
        receivedPrior = 0
        expectedPrior = 0
        hasTransit = false
        jitter = 0
    }

    // RFC 3550 A.1 update_seq, with the same constants and the same order of cases.
    private mutating func updateSequence(_ seq: UInt16) -> Outcome {
        if !started {
            started = true
            initSequence(seq)
            maxSequence = seq &- 1
            probation = Self.minSequential
        }
        let delta = seq &- maxSequence
        if probation > 0 {
            if seq == maxSequence &+ 1 {
                probation -= 1
                maxSequence = seq
                if probation == 0 {
                    initSequence(seq)
                    received += 1
                    return .accepted
                }
            } else {
                probation = Self.minSequential - 1
                maxSequence = seq
            }
            return .probation
        } else if delta < Self.maxDropout {
            if seq < maxSequence { cycles &+= 0x1_0000 }
            maxSequence = seq
        } else if UInt32(delta) <= 0x1_0000 - UInt32(Self.maxMisorder) {
            if UInt32(seq) == badSequence {
                initSequence(seq)
            } else {
                badSequence = (UInt32(seq) + 1) & 0xFFFF
                return .badSequence
            }
        }
        received += 1
        return .accepted
    }
}
