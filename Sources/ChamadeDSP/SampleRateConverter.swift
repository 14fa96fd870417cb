public import ChamadeCore
internal import CSampleRate

/// libsamplerate's converter types, best to fastest.
public enum ConverterQuality: Int32, CaseIterable, Sendable, CustomStringConvertible {
    /// `SRC_SINC_BEST_QUALITY`: 96 % bandwidth, about 9 ms delay; far too slow for real time.
    case best = 0
    /// `SRC_SINC_MEDIUM_QUALITY`: 91 % bandwidth, about 3 ms delay, twice FASTEST's cost.
    case medium = 1
    /// `SRC_SINC_FASTEST`: 80 % bandwidth, about 1 ms delay, ≥ 100 dB alias rejection. The default.
    case fastest = 2
    /// `SRC_ZERO_ORDER_HOLD`: no filter. For tests and comparison only.
    case zeroOrderHold = 3
    /// `SRC_LINEAR`: no anti-alias filter. Never for downsampling.
    case linear = 4

    /// The engine's default. Chosen by measurement (see ARCHITECTURE.md, "Resampling"): the lowest
    /// delay and cost of the band-limited types, with SNR well above 80 dB on a 1 kHz tone for every
    /// supported pair and alias rejection beyond what 16-bit output can show.
    public static let `default`: ConverterQuality = .fastest

    public var description: String {
        switch self {
        case .best: "sinc-best"
        case .medium: "sinc-medium"
        case .fastest: "sinc-fastest"
        case .zeroOrderHold: "zero-order-hold"
        case .linear: "linear"
        }
    }
}

/// A streaming, block-exact mono sample-rate converter: one 20 ms block at `inputRate` in, exactly
/// one 20 ms block at `outputRate` out, every time.
///
/// Owns one libsamplerate state (`src_new` in `init`, `src_delete` in `deinit`; `src_process` per
/// block, `src_reset` in `reset()`). The state carries across blocks, so there are no clicks at block
/// boundaries. libsamplerate holds back its filter's look-ahead on the first call (e.g. 40 of 960
/// samples at 24 → 48 kHz with SINC_FASTEST) and then returns exact counts; `init` measures that
/// hold-back once with a dry run and pre-fills an output FIFO with as many zeros (plus a two-sample
/// margin against any ±1 rounding jitter of libsamplerate's double-precision position), so every
/// block yields exactly `outputRate / 50` samples and the fractional position is never lost.
/// The fixed extra delay is `delaySampleCount` output samples.
///
/// Equal rates create no libsamplerate state and copy bit for bit.
///
/// `process` is real-time safe (only `src_process` and memory moves); `init` and `deinit` are not.
public struct SampleRateConverter: ~Copyable {
    /// Why a converter could not be made or run.
    public enum Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        /// A rate outside the supported set (8000–48000 Hz, multiple of 50).
        case unsupportedRate(hertz: Int)
        /// libsamplerate returned an error code (a trivial payload: throwing allocates nothing).
        case libsamplerate(code: Int32)

        public var description: String {
            switch self {
            case .unsupportedRate(let hertz): SampleRate.Error.unsupported(hertz: hertz).description
            case .libsamplerate(let code):
                "libsamplerate error \(code): \(src_strerror(code).map { String(cString: $0) } ?? "unknown error")"
            }
        }

        static func from(code: Int32) -> Self { .libsamplerate(code: code) }
    }

    public let inputRate: SampleRate
    public let outputRate: SampleRate
    public let quality: ConverterQuality
    /// Output samples of delay added by the converter (0 for equal rates).
    public let delaySampleCount: Int
    /// Blocks for which libsamplerate produced fewer samples than due (never expected; the margin
    /// absorbs jitter). Kept for tests and telemetry.
    public private(set) var underrunCount = 0
    /// Blocks on which `src_process` returned an error. After a successful `init` it can only fail
    /// on a programming error, so the tick counts failures (output: silence) instead of throwing.
    public private(set) var failureCount = 0
    /// The most recent failure, if any.
    public private(set) var lastFailure: Error?

    // nil for equal rates.
    private let state: OpaquePointer?
    private let ratio: Double
    private let fifo: UnsafeMutablePointer<Float>
    private let fifoCapacity: Int
    private var fifoCount: Int
    private let margin = 2

    /// Creates a converter from `inputRate` to `outputRate`. Not real-time safe.
    public init(from inputRate: SampleRate, to outputRate: SampleRate, quality: ConverterQuality = .default)
        throws(Error)
    {
        self.inputRate = inputRate
        self.outputRate = outputRate
        self.quality = quality
        self.ratio = Double(outputRate.hertz) / Double(inputRate.hertz)
        let inCount = inputRate.blockSampleCount
        let outCount = outputRate.blockSampleCount
        guard inputRate != outputRate else {
            state = nil
            delaySampleCount = 0
            fifoCapacity = 0
            fifoCount = 0
            fifo = .allocate(capacity: 1)
            return
        }
        var code: Int32 = 0
        guard let state = src_new(quality.rawValue, 1, &code) else { throw .from(code: code) }
        // Room for the pre-fill, one block, and slack for libsamplerate returning more than due.
        let capacity = 2 * outCount + 2 * 2 + 64
        let fifo = UnsafeMutablePointer<Float>.allocate(capacity: capacity)
        // Dry run on one block of silence to learn the hold-back, then start again from clean state.
        let zeros = UnsafeMutablePointer<Float>.allocate(capacity: inCount)
        zeros.initialize(repeating: 0, count: inCount)
        defer { zeros.deallocate() }
        let probe = Self.run(state, ratio: ratio, input: zeros, count: inCount, output: fifo, capacity: capacity)
        let resetCode = src_reset(state)
        guard case .success(let generated) = probe, resetCode == 0 else {
            src_delete(state)
            fifo.deallocate()
            if case .failure(let e) = probe { throw e }
            throw .from(code: resetCode)
        }
        let holdBack = max(0, outCount - generated)
        self.state = state
        self.fifo = fifo
        self.fifoCapacity = capacity
        self.delaySampleCount = holdBack + margin
        self.fifoCount = holdBack + margin
        fifo.initialize(repeating: 0, count: capacity)
    }

    /// Convenience for plain Hz values; throws `.unsupportedRate` for a rate the engine refuses.
    public init(fromHertz inputHertz: Int, toHertz outputHertz: Int, quality: ConverterQuality = .default)
        throws(Error)
    {
        guard let a = try? SampleRate(hertz: inputHertz) else { throw .unsupportedRate(hertz: inputHertz) }
        guard let b = try? SampleRate(hertz: outputHertz) else { throw .unsupportedRate(hertz: outputHertz) }
        try self.init(from: a, to: b, quality: quality)
    }

    deinit {
        if let state { src_delete(state) }
        fifo.deallocate()
    }

    /// Whether this converter is a plain copy (equal rates).
    public var isPassthrough: Bool { state == nil }

    /// Converts one block: `input.count == inputRate.blockSampleCount`,
    /// `output.count == outputRate.blockSampleCount`. Real-time safe.
    public mutating func process(_ input: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Float>) {
        let outCount = outputRate.blockSampleCount
        precondition(input.count == inputRate.blockSampleCount, "input must be exactly one block")
        precondition(output.count == outCount, "output must be exactly one block")
        guard let state else {
            output.baseAddress!.update(from: input.baseAddress!, count: outCount)
            return
        }
        let result = Self.run(
            state, ratio: ratio, input: input.baseAddress!, count: input.count,
            output: fifo + fifoCount, capacity: fifoCapacity - fifoCount)
        switch result {
        case .success(let generated): fifoCount += generated
        case .failure(let error):
            failureCount += 1
            lastFailure = error
            output.baseAddress!.update(repeating: 0, count: outCount)
            return
        }
        let available = min(fifoCount, outCount)
        let missing = outCount - available
        if missing > 0 {
            // Never seen (the pre-fill covers the hold-back); pad in front so what follows stays in time.
            underrunCount += 1
            output.baseAddress!.update(repeating: 0, count: missing)
        }
        (output.baseAddress! + missing).update(from: fifo, count: available)
        fifoCount -= available
        if fifoCount > 0 { fifo.update(from: fifo + available, count: fifoCount) }
    }

    /// Converts one block of Int16 samples through the caller's Float scratch buffers
    /// (`inputScratch.count == input.count`, `outputScratch.count == output.count`). Real-time safe.
    public mutating func process(
        _ input: UnsafeBufferPointer<Int16>, into output: UnsafeMutableBufferPointer<Int16>,
        inputScratch: UnsafeMutableBufferPointer<Float>, outputScratch: UnsafeMutableBufferPointer<Float>
    ) {
        if state == nil {
            output.baseAddress!.update(from: input.baseAddress!, count: output.count)
            return
        }
        SampleConversion.toFloat(input, into: inputScratch)
        process(UnsafeBufferPointer(inputScratch), into: outputScratch)
        SampleConversion.toInt16(UnsafeBufferPointer(outputScratch), into: output)
    }

    /// Forgets all history, as if just created (same delay). Real-time safe.
    public mutating func reset() {
        guard let state else { return }
        _ = src_reset(state)
        fifoCount = delaySampleCount
        fifo.update(repeating: 0, count: fifoCapacity)
    }

    /// Converts a whole signal in one stream (no 20 ms framing), flushing the filter at the end:
    /// sample t of the result is the block converter's output sample t + `delaySampleCount`.
    /// Not real-time safe; the reference for tests and offline tools.
    public static func convertWhole(
        _ input: [Float], from inputRate: SampleRate, to outputRate: SampleRate, quality: ConverterQuality = .default
    ) throws(Error) -> [Float] {
        guard inputRate != outputRate else { return input }
        var code: Int32 = 0
        guard let state = src_new(quality.rawValue, 1, &code) else { throw .from(code: code) }
        defer { src_delete(state) }
        let ratio = Double(outputRate.hertz) / Double(inputRate.hertz)
        let expected = Int((Double(input.count) * ratio).rounded())
        var output = [Float](repeating: 0, count: expected + 4096)
        let generated = try input.withUnsafeBufferPointer { (inp) throws(Error) -> Int in
            try output.withUnsafeMutableBufferPointer { (out) throws(Error) -> Int in
                var used = 0
                var produced = 0
                while produced < out.count {
                    var data = SRC_DATA(
                        data_in: inp.baseAddress! + used, data_out: out.baseAddress! + produced,
                        input_frames: inp.count - used, output_frames: out.count - produced,
                        input_frames_used: 0, output_frames_gen: 0, end_of_input: 1, src_ratio: ratio)
                    let c = src_process(state, &data)
                    if c != 0 { throw .from(code: c) }
                    used += data.input_frames_used
                    produced += data.output_frames_gen
                    if data.output_frames_gen == 0 { break }
                }
                return produced
            }
        }
        return Array(output[0..<min(generated, expected)])
    }

    /// Runs `src_process` until the whole input is consumed; returns the samples generated.
    private static func run(
        _ state: OpaquePointer, ratio: Double, input: UnsafePointer<Float>, count: Int,
        output: UnsafeMutablePointer<Float>, capacity: Int
    ) -> Result<Int, Error> {
        var used = 0
        var generated = 0
        while used < count {
            var data = SRC_DATA(
                data_in: input + used, data_out: output + generated, input_frames: count - used,
                output_frames: capacity - generated, input_frames_used: 0, output_frames_gen: 0,
                end_of_input: 0, src_ratio: ratio)
            let code = src_process(state, &data)
            if code != 0 { return .failure(.from(code: code)) }
            used += data.input_frames_used
            generated += data.output_frames_gen
            if data.input_frames_used == 0 && data.output_frames_gen == 0 { break }
        }
        return .success(generated)
    }
}
