/// Turns a byte stream of PCM s16le into samples, whatever the chunking.
///
/// Audio arrives as a byte stream, so a chunk may end in the middle of a sample: the odd byte is
/// carried and completed by the first byte of the next chunk. Decoding 1 byte at a time gives
/// exactly the samples that decoding the whole stream at once gives.
///
/// Real-time safe; meant for the I/O side of a participant's inbound ring.
public struct PCMStreamDecoder: Sendable {
    /// The low byte of a sample whose high byte has not arrived yet.
    @usableFromInline var pendingLowByte: UInt8?

    public init() {}

    /// Whether half a sample is waiting for its second byte.
    @inlinable public var hasPendingByte: Bool { pendingLowByte != nil }

    /// Forgets a pending odd byte (barge-in: the stream restarts on a sample boundary).
    @inlinable public mutating func reset() { pendingLowByte = nil }

    /// How many whole samples `byteCount` more bytes complete.
    @inlinable
    public func sampleCount(forAppending byteCount: Int) -> Int {
        (byteCount + (pendingLowByte == nil ? 0 : 1)) / 2
    }

    /// Decodes `bytes` into `producer`'s ring. Samples that do not fit are dropped and counted in
    /// the result; the stream stays in phase either way, since the odd byte is carried regardless.
    @inlinable
    public mutating func decode(
        _ bytes: UnsafeRawBufferPointer,
        into producer: inout SPSCRing<Int16>.Producer
    ) -> (written: Int, dropped: Int) {
        let total = sampleCount(forAppending: bytes.count)
        let pending = pendingLowByte
        let written = producer.withWritableSegments { first, second in
            let a = min(first.count, total)
            let b = min(second.count, total - a)
            if a > 0 { Self.decode(bytes, pending: pending, samples: 0..<a, into: first.baseAddress!) }
            if b > 0 { Self.decode(bytes, pending: pending, samples: a..<(a + b), into: second.baseAddress!) }
            return a + b
        }
        advance(over: bytes, decodedSampleCount: total)
        return (written, total - written)
    }

    /// Decodes `bytes` into `destination`, which must hold `sampleCount(forAppending:)` samples.
    /// Returns the number of samples written.
    @inlinable
    public mutating func decode(_ bytes: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Int16>)
        -> Int
    {
        let total = sampleCount(forAppending: bytes.count)
        precondition(destination.count >= total, "destination too small")
        if total > 0 { Self.decode(bytes, pending: pendingLowByte, samples: 0..<total, into: destination.baseAddress!) }
        advance(over: bytes, decodedSampleCount: total)
        return total
    }

    /// After `total` samples were taken from pending + `bytes`, zero or one byte is left over.
    @inlinable
    mutating func advance(over bytes: UnsafeRawBufferPointer, decodedSampleCount total: Int) {
        guard !bytes.isEmpty else { return }
        let consumed = 2 * total - (pendingLowByte == nil ? 0 : 1)
        pendingLowByte = consumed < bytes.count ? bytes[bytes.count - 1] : nil
    }

    /// Writes samples `samples` of the stream `pending + bytes` to `out[0...]`. With a pending
    /// byte, sample 0 is `pending | bytes[0] << 8` and sample k > 0 starts at byte 2k - 1;
    /// without one, sample k starts at byte 2k.
    @inlinable
    static func decode(
        _ bytes: UnsafeRawBufferPointer, pending: UInt8?, samples: Range<Int>, into out: UnsafeMutablePointer<Int16>
    ) {
        var k = samples.lowerBound
        var o = 0
        let shift = pending == nil ? 0 : 1
        if k == 0, let low = pending {
            out[0] = Int16(bitPattern: UInt16(low) | UInt16(bytes[0]) &<< 8)
            k = 1
            o = 1
        }
        // SAFETY: samples.upperBound <= sampleCount(forAppending: bytes.count), so every byte read
        // (up to 2 * upperBound - shift) lies inside `bytes`.
        let base = bytes.baseAddress! + (2 * k - shift)
        let n = samples.upperBound - k
        for i in 0..<n {
            out[o + i] = Int16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))
        }
    }
}
