/// Packet-loss concealment for G.711 at 8 kHz (SPEC §6: "G.711 by a PLC that fades to silence").
///
/// Every block of the stream goes through it, received or lost, in order:
/// - ``received(_:into:)`` passes the decoded block through unchanged and records it in a history
///   of the last 48 ms (``historyLength`` samples). On the first good block after a loss it
///   overlap-adds the continued concealment into the real audio over the first 4 ms
///   (``crossfadeLength`` samples, linear weights), so there is no step where the real audio resumes.
/// - ``lost(into:)`` writes a block of concealment. At the first lost sample it estimates the pitch
///   period: the lag in 20...120 samples (2.5–15 ms) with the highest normalised autocorrelation of
///   the last 20 ms of history against the history `lag` samples before; ties go to the shorter
///   lag, and for a tone whose period is not a whole number of samples the best lag is the multiple
///   of the period closest to a whole number (a 440 Hz tone, period 18.18 samples, gets 91 or 109),
///   so repetition drifts by less than 0.1 sample per period. It then plays the last `lag` samples of
///   history repeated; sample `k` of that continuation is history[end − lag + k mod lag], the
///   natural continuation of a periodic signal, so there is no step at the loss. A linear gain
///   `(480 − 1 − n) / 480` (n samples since the loss began) takes it from 1 to exactly 0 at the
///   last sample of 60 ms: the first lost 20 ms block fades 1 → 0.67, the second 0.67 → 0.33, the
///   third 0.33 → 0, and later blocks are digital silence. Consecutive lost blocks continue the
///   same period and phase.
///
/// What is played (concealment included) goes into the history, so a loss soon after another
/// sees a continuous signal. Silence in gives silence out (an all-zero history conceals to zeros).
/// Blocks may have any length; both arguments of `received` must have the same length.
///
/// Simpler than ITU-T G.711 Appendix I: no 3.75 ms output delay (so no overlap-add at the start of
/// the loss, where a non-periodic signal may step), no growing of the repeated segment to 1.5 and
/// 2 periods (the fade to silence within 60 ms makes buzz short).
///
/// Storage is allocated in `init`; `received` and `lost` allocate nothing, lock nothing and are
/// bounded (the pitch search is 101 lags × 160 samples, only on a loss's first block). Real-time
/// safe after `init`. Not thread-safe: one owner (the leg's decoding side).
public struct G711Concealment: ~Copyable {
    /// Sample rate of G.711.
    public static let sampleRate = 8000
    /// Samples of history kept: 48 ms.
    public static let historyLength = 384
    /// Shortest and longest pitch period searched: 2.5 ms and 15 ms.
    public static let lagRange = 20...120
    /// Samples of history matched against their lagged copy: 20 ms.
    public static let matchLength = 160
    /// Samples from the start of a loss to silence: 60 ms.
    public static let fadeLength = 480
    /// Samples of overlap-add on the first good block after a loss: 4 ms.
    public static let crossfadeLength = 32

    // History: the last `historyLength` samples played, oldest first (a linear buffer shifted per block).
    let history: UnsafeMutablePointer<Float>
    // The repeated period, captured at the start of a loss.
    let period: UnsafeMutablePointer<Float>
    var periodLength = 0
    // Index in `period` of the next concealment sample.
    var phase = 0
    // Samples concealed since the loss began; nil when not in a loss.
    var concealedInLoss: Int?

    /// Allocates the history and period buffers. Not real-time safe (allocates).
    public init() {
        history = .allocate(capacity: Self.historyLength)
        history.initialize(repeating: 0, count: Self.historyLength)
        period = .allocate(capacity: Self.lagRange.upperBound)
        period.initialize(repeating: 0, count: Self.lagRange.upperBound)
    }

    deinit {
        // Float is trivial: deallocating without deinitializing is sound.
        history.deallocate()
        period.deallocate()
    }

    /// True between a lost block and the next received one.
    public var isConcealing: Bool { concealedInLoss != nil }

    /// Writes `block` to `out` (same length): unchanged, except the first ``crossfadeLength``
    /// samples after a loss, which are overlap-added with the continued concealment. Real-time safe.
    public mutating func received(_ block: UnsafeBufferPointer<Int16>, into out: UnsafeMutableBufferPointer<Int16>) {
        precondition(block.count == out.count, "G711Concealment.received: block and out differ in length")
        let n = block.count
        if let done = concealedInLoss {
            let k = min(Self.crossfadeLength, n)
            for i in 0..<n {
                guard i < k else {
                    out[i] = block[i]
                    continue
                }
                let weight = Float(i + 1) / Float(k + 1)
                let concealment = nextConcealmentSample(samplesSinceLoss: done + i)
                out[i] = Self.clamp(weight * Float(block[i]) + (1 - weight) * concealment)
            }
            concealedInLoss = nil
        } else {
            for i in 0..<n { out[i] = block[i] }
        }
        record(UnsafeBufferPointer(out))
    }

    /// Writes a block of concealment to `out` (its length is the block's). Real-time safe.
    public mutating func lost(into out: UnsafeMutableBufferPointer<Int16>) {
        let done: Int
        if let d = concealedInLoss {
            done = d
        } else {
            startLoss()
            done = 0
        }
        for i in 0..<out.count {
            out[i] = Self.clamp(nextConcealmentSample(samplesSinceLoss: done + i))
        }
        concealedInLoss = done + out.count
        record(UnsafeBufferPointer(out))
    }

    // MARK: Internals

    /// Estimates the pitch period on the history and captures the last period.
    mutating func startLoss() {
        let end = Self.historyLength
        let start = end - Self.matchLength
        var energy: Float = 0
        for i in start..<end { energy += history[i] * history[i] }
        var bestLag = Self.lagRange.lowerBound
        var bestScore: Float = -2
        if energy > 0 {
            for lag in Self.lagRange {
                var cross: Float = 0
                var lagged: Float = 0
                for i in start..<end {
                    let x = history[i - lag]
                    cross += history[i] * x
                    lagged += x * x
                }
                let score = lagged > 0 ? cross / (energy * lagged).squareRoot() : 0
                if score > bestScore {
                    bestScore = score
                    bestLag = lag
                }
            }
        }
        periodLength = bestLag
        for k in 0..<bestLag { period[k] = history[end - bestLag + k] }
        phase = 0
    }

    /// The next sample of the repeated period, faded for its distance from the loss's start.
    mutating func nextConcealmentSample(samplesSinceLoss n: Int) -> Float {
        guard n < Self.fadeLength - 1 else { return 0 }
        let gain = Float(Self.fadeLength - 1 - n) / Float(Self.fadeLength)
        let sample = period[phase]
        phase += 1
        if phase == periodLength { phase = 0 }
        return gain * sample
    }

    /// Appends what was played to the history.
    mutating func record(_ played: UnsafeBufferPointer<Int16>) {
        let n = played.count
        let length = Self.historyLength
        if n >= length {
            for i in 0..<length { history[i] = Float(played[n - length + i]) }
            return
        }
        // Forward copy: the source is ahead of the destination, so overlap is harmless.
        for i in 0..<(length - n) { history[i] = history[i + n] }
        for i in 0..<n { history[length - n + i] = Float(played[i]) }
    }

    static func clamp(_ value: Float) -> Int16 {
        let rounded = value.rounded()
        if rounded >= 32767 { return 32767 }
        if rounded <= -32768 { return -32768 }
        return Int16(rounded)
    }
}
