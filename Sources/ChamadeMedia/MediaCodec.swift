public import ChamadeCore
public import ChamadeDSP

/// The audio codecs of a platform leg (SPEC §6).
public enum MediaCodec: String, Sendable, CaseIterable, CustomStringConvertible {
    case opus, pcmu, pcma

    /// The static payload type (RFC 3551) or the usual dynamic one for Opus.
    public var defaultPayloadType: UInt8 {
        switch self {
        case .opus: 111
        case .pcmu: 0
        case .pcma: 8
        }
    }

    /// The RTP clock: 48 kHz for Opus whatever its audio rate (RFC 7587), 8 kHz for G.711.
    public var clockRate: Int { self == .opus ? 48000 : 8000 }

    /// The rate a room built around this codec runs at (SPEC §6: 48000 for Opus, 8000 for G.711).
    public var nativeRate: SampleRate { self == .opus ? .hz48000 : .hz8000 }

    /// The audio rate a leg of this codec uses in a room of `roomRate`: the room's own rate when the
    /// codec can work at it (no conversion for the leg), else the codec's native rate.
    public func mediaRate(inRoomOf roomRate: SampleRate) -> SampleRate {
        switch self {
        case .opus: Opus.supportedRates.contains(roomRate.hertz) ? roomRate : .hz48000
        case .pcmu, .pcma: .hz8000
        }
    }

    public var description: String { rawValue }
}

/// The decoding and concealment of one incoming stream, with the codec chosen at the leg's start.
///
/// A class holding the codec states (the ~Copyable Opus decoder or G.711 concealment): one owner,
/// the leg's media worker. Nothing here allocates after `init`.
final class StreamDecoder {
    private var opus: Opus.Decoder?
    private let law: G711.Law?
    private var concealment: G711Concealment?
    /// G.711 codes of one packet, before expansion (60 ms at most).
    private let codes: UnsafeMutableBufferPointer<Int16>

    init(codec: MediaCodec, rate: SampleRate) throws(Opus.Error) {
        switch codec {
        case .opus:
            opus = try Opus.Decoder(sampleRate: rate)
            law = nil
            concealment = nil
        case .pcmu, .pcma:
            opus = nil
            law = codec == .pcmu ? .mu : .a
            concealment = G711Concealment()
        }
        codes = .allocate(capacity: 8000 * 120 / 1000)
    }

    deinit { codes.deallocate() }

    /// Decodes one packet into the start of `output`; returns the samples written (0 when the packet
    /// cannot be decoded: the caller conceals instead).
    func decode(_ payload: UnsafeRawBufferPointer, into output: UnsafeMutableBufferPointer<Int16>) -> Int {
        if opus != nil {
            return (try? opus!.decode(packet: payload, into: output)) ?? 0
        }
        guard let law else { return 0 }
        let n = min(payload.count, output.count, codes.count)
        let input = UnsafeBufferPointer(rebasing: payload.bindMemory(to: UInt8.self)[0..<n])
        let pcm = UnsafeMutableBufferPointer(rebasing: codes[0..<n])
        law.decode(input, into: pcm)
        concealment!.received(UnsafeBufferPointer(pcm), into: UnsafeMutableBufferPointer(rebasing: output[0..<n]))
        return n
    }

    /// Writes `count` samples of concealment: Opus in-band FEC from `following` when given (the
    /// packet after the gap), else Opus PLC; G.711's pitch-repeating fade.
    func conceal(_ count: Int, following: UnsafeRawBufferPointer?, into output: UnsafeMutableBufferPointer<Int16>) -> Int {
        let n = min(count, output.count)
        guard n > 0 else { return 0 }
        let target = UnsafeMutableBufferPointer(rebasing: output[0..<n])
        if opus != nil {
            if let following, let written = try? opus!.decode(packet: following, into: target, fec: true, frameSampleCount: n),
                written == n
            {
                return n
            }
            if let written = try? opus!.conceal(sampleCount: n, into: target), written == n { return n }
            target.update(repeating: 0)
            return n
        }
        concealment!.lost(into: target)
        return n
    }
}

/// The encoding of one outgoing stream.
final class StreamEncoder {
    private var opus: Opus.Encoder?
    private let law: G711.Law?

    init(codec: MediaCodec, rate: SampleRate, opusSettings: Opus.Settings) throws(Opus.Error) {
        switch codec {
        case .opus:
            opus = try Opus.Encoder(sampleRate: rate, application: .voip, settings: opusSettings)
            law = nil
        case .pcmu, .pcma:
            opus = nil
            law = codec == .pcmu ? .mu : .a
        }
    }

    /// Follows the loss the far end reports (RTCP), so Opus codes as much FEC as the path needs;
    /// never below the configured floor.
    func expectLoss(percent: Int, floor: Int) {
        guard opus != nil else { return }
        opus!.setExpectedPacketLoss(percent: max(floor, min(percent, 50)))
    }

    /// Encodes one 20 ms block into `payload`; returns the byte count (0 on a codec error).
    func encode(_ block: UnsafeBufferPointer<Int16>, into payload: UnsafeMutableRawBufferPointer) -> Int {
        if opus != nil { return (try? opus!.encode(block, into: payload)) ?? 0 }
        guard let law, payload.count >= block.count else { return 0 }
        law.encode(block, into: payload.bindMemory(to: UInt8.self))
        return block.count
    }
}
