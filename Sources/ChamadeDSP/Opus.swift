public import ChamadeCore
internal import COpus
internal import CChamadeShims

/// Opus for the platform legs (Opus over RTP): mono, 20 ms packets, at the rates libopus
/// supports and the platforms use (8, 12, 16, 24, 48 kHz).
public enum Opus {
    /// Why libopus refused.
    public enum Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        /// libopus works at 8, 12, 16, 24 and 48 kHz only.
        case unsupportedRate(hertz: Int)
        /// A block must be exactly 20 ms at the codec's rate.
        case wrongBlockSize(expected: Int, got: Int)
        /// libopus returned an `OPUS_*` error code (a trivial payload: throwing allocates nothing).
        case libopus(code: Int32)

        public var description: String {
            switch self {
            case .unsupportedRate(let hertz): "Opus does not support \(hertz) Hz (use 8000, 12000, 16000, 24000 or 48000)"
            case .wrongBlockSize(let expected, let got): "Opus block must be \(expected) samples, got \(got)"
            case .libopus(let code):
                "libopus error \(code): \(opus_strerror(code).map { String(cString: $0) } ?? "unknown error")"
            }
        }

        static func from(code: Int32) -> Self { .libopus(code: code) }
    }

    /// The rates libopus accepts.
    public static let supportedRates: Set<Int> = [8000, 12000, 16000, 24000, 48000]

    /// The largest packet we produce; RFC 6716 allows 1275 bytes per frame.
    public static let maxPacketByteCount = 1275

    /// The encoder's tuning.
    public enum Application: Sendable {
        /// `OPUS_APPLICATION_VOIP`: speech; the platform legs' choice.
        case voip
        /// `OPUS_APPLICATION_AUDIO`: music and mixed content.
        case audio
        /// `OPUS_APPLICATION_RESTRICTED_LOWDELAY`: CELT only, lowest delay.
        case lowDelay

        var code: Int32 {
            switch self {
            case .voip: OPUS_APPLICATION_VOIP
            case .audio: OPUS_APPLICATION_AUDIO
            case .lowDelay: OPUS_APPLICATION_RESTRICTED_LOWDELAY
            }
        }
    }

    /// Encoder settings.
    public struct Settings: Sendable, Hashable {
        /// Target bit rate in bits per second.
        public var bitRate: Int = 32_000
        /// 0 (cheapest) to 10 (best). FACTS.md: 263 µs per block at 10, 150 at 5, 71 at 0.
        public var complexity: Int = 5
        /// In-band forward error correction (carries a low-rate copy of the previous packet).
        public var inbandFEC: Bool = true
        /// Expected packet loss in percent; drives how much FEC the encoder spends.
        public var expectedPacketLossPercent: Int = 5
        /// Discontinuous transmission: tiny packets during silence.
        public var dtx: Bool = false

        public init(bitRate: Int = 32_000, complexity: Int = 5, inbandFEC: Bool = true,
                    expectedPacketLossPercent: Int = 5, dtx: Bool = false) {
            self.bitRate = bitRate
            self.complexity = complexity
            self.inbandFEC = inbandFEC
            self.expectedPacketLossPercent = expectedPacketLossPercent
            self.dtx = dtx
        }
    }

    /// The duration of `packet` in samples at `sampleRate` (from its TOC byte and frame count), or
    /// nil when the packet is malformed. Real-time safe.
    public static func sampleCount(of packet: UnsafeRawBufferPointer, sampleRate: Int) -> Int? {
        guard let base = packet.baseAddress, packet.count > 0 else { return nil }
        let n = opus_packet_get_nb_samples(base.assumingMemoryBound(to: UInt8.self), Int32(packet.count), Int32(sampleRate))
        return n > 0 ? Int(n) : nil
    }

    static func checkRate(_ rate: SampleRate) throws(Error) {
        guard supportedRates.contains(rate.hertz) else { throw .unsupportedRate(hertz: rate.hertz) }
    }

    /// A mono Opus encoder of 20 ms blocks. Owns one `OpusEncoder` (`opus_encoder_create` in `init`,
    /// `opus_encoder_destroy` in `deinit`). `encode` is real-time safe; `init` is not.
    public struct Encoder: ~Copyable {
        public let sampleRate: SampleRate
        public let settings: Settings
        private let state: OpaquePointer

        public init(sampleRate: SampleRate, application: Application = .voip, settings: Settings = Settings())
            throws(Error)
        {
            try checkRate(sampleRate)
            var code: Int32 = 0
            guard let state = opus_encoder_create(Int32(sampleRate.hertz), 1, application.code, &code), code == OPUS_OK
            else { throw .from(code: code) }
            let codes = [
                cchamade_opus_set_bitrate(state, Int32(settings.bitRate)),
                cchamade_opus_set_complexity(state, Int32(settings.complexity)),
                cchamade_opus_set_inband_fec(state, settings.inbandFEC ? 1 : 0),
                cchamade_opus_set_packet_loss_perc(state, Int32(settings.expectedPacketLossPercent)),
                cchamade_opus_set_dtx(state, settings.dtx ? 1 : 0),
            ]
            if let bad = codes.first(where: { $0 != OPUS_OK }) {
                opus_encoder_destroy(state)
                throw .from(code: bad)
            }
            self.sampleRate = sampleRate
            self.settings = settings
            self.state = state
        }

        deinit { opus_encoder_destroy(state) }

        /// The encoder's look-ahead, in samples at its rate.
        public var lookaheadSampleCount: Int {
            var value: Int32 = 0
            _ = cchamade_opus_get_lookahead(state, &value)
            return Int(value)
        }

        /// Encodes one 20 ms block into `packet` (at least `maxPacketByteCount` bytes is always
        /// enough) and returns the packet's byte count. Real-time safe.
        public mutating func encode(_ block: UnsafeBufferPointer<Int16>, into packet: UnsafeMutableRawBufferPointer)
            throws(Error) -> Int
        {
            guard block.count == sampleRate.blockSampleCount else {
                throw .wrongBlockSize(expected: sampleRate.blockSampleCount, got: block.count)
            }
            let n = opus_encode(
                state, block.baseAddress!, Int32(block.count),
                packet.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(packet.count))
            guard n >= 0 else { throw .from(code: n) }
            return Int(n)
        }

        /// Forgets all history. Real-time safe.
        public mutating func reset() { _ = cchamade_opus_encoder_reset(state) }

        /// Changes the expected packet loss (0–100 %), which sets how much in-band FEC is coded.
        /// Real-time safe.
        public mutating func setExpectedPacketLoss(percent: Int) {
            _ = cchamade_opus_set_packet_loss_perc(state, Int32(max(0, min(100, percent))))
        }
    }

    /// A mono Opus decoder of 20 ms blocks. Owns one `OpusDecoder` (`opus_decoder_create` in `init`,
    /// `opus_decoder_destroy` in `deinit`). `decode` and `conceal` are real-time safe; `init` is not.
    public struct Decoder: ~Copyable {
        public let sampleRate: SampleRate
        private let state: OpaquePointer

        public init(sampleRate: SampleRate) throws(Error) {
            try checkRate(sampleRate)
            var code: Int32 = 0
            guard let state = opus_decoder_create(Int32(sampleRate.hertz), 1, &code), code == OPUS_OK else {
                throw .from(code: code)
            }
            self.sampleRate = sampleRate
            self.state = state
        }

        deinit { opus_decoder_destroy(state) }

        /// Decodes one packet into exactly one 20 ms block. With `fec`, decodes the in-band
        /// redundancy this packet carries for the *previous* (lost) packet instead.
        public mutating func decode(
            _ packet: UnsafeRawBufferPointer, into block: UnsafeMutableBufferPointer<Int16>, fec: Bool = false
        ) throws(Error) {
            guard block.count == sampleRate.blockSampleCount else {
                throw .wrongBlockSize(expected: sampleRate.blockSampleCount, got: block.count)
            }
            let n = opus_decode(
                state, packet.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(packet.count),
                block.baseAddress!, Int32(block.count), fec ? 1 : 0)
            guard n >= 0 else { throw .from(code: n) }
            if Int(n) < block.count { (block.baseAddress! + Int(n)).update(repeating: 0, count: block.count - Int(n)) }
        }

        /// Decodes one packet of any duration the codec allows (2.5–120 ms) into the start of
        /// `output` and returns the samples written. With `fec`, decodes the in-band redundancy this
        /// packet carries for the `frameSampleCount` samples before it (the lost packet) instead;
        /// `frameSampleCount` must then be given. Real-time safe.
        public mutating func decode(
            packet: UnsafeRawBufferPointer, into output: UnsafeMutableBufferPointer<Int16>, fec: Bool = false,
            frameSampleCount: Int? = nil
        ) throws(Error) -> Int {
            let frame = min(frameSampleCount ?? output.count, output.count)
            let n = opus_decode(
                state, packet.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(packet.count),
                output.baseAddress!, Int32(frame), fec ? 1 : 0)
            guard n >= 0 else { throw .from(code: n) }
            return Int(n)
        }

        /// Packet-loss concealment of `sampleCount` samples (a multiple of 2.5 ms) into the start of
        /// `output`; returns the samples written. Real-time safe.
        public mutating func conceal(sampleCount: Int, into output: UnsafeMutableBufferPointer<Int16>) throws(Error) -> Int {
            let n = opus_decode(state, nil, 0, output.baseAddress!, Int32(min(sampleCount, output.count)), 0)
            guard n >= 0 else { throw .from(code: n) }
            return Int(n)
        }

        /// Packet-loss concealment: one 20 ms block extrapolated from history (decoding with no packet).
        public mutating func conceal(into block: UnsafeMutableBufferPointer<Int16>) throws(Error) {
            guard block.count == sampleRate.blockSampleCount else {
                throw .wrongBlockSize(expected: sampleRate.blockSampleCount, got: block.count)
            }
            let n = opus_decode(state, nil, 0, block.baseAddress!, Int32(block.count), 0)
            guard n >= 0 else { throw .from(code: n) }
            if Int(n) < block.count { (block.baseAddress! + Int(n)).update(repeating: 0, count: block.count - Int(n)) }
        }

        /// Forgets all history. Real-time safe.
        public mutating func reset() { _ = cchamade_opus_decoder_reset(state) }
    }
}
