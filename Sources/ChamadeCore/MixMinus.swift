/// The mix-minus kernels: every participant hears the sum of everyone else.
///
/// Inputs are a matrix of `participantCount` rows of `sampleCount` Int16 samples each (one row
/// per participant's block at the room's native rate). The total is accumulated in 32 bits, which
/// cannot overflow below 65,536 participants; each output is `saturate16(total - own)`. That is
/// O(N) per sample instead of O(N²).
///
/// Real-time safe: no allocation, no locks; the loops are written so LLVM vectorises them.
public enum MixMinus {
    /// Clamps a 32-bit sum to 16 bits (the identity inside [-32768, 32767]).
    @inlinable @inline(__always)
    public static func saturate(_ value: Int32) -> Int16 {
        Int16(truncatingIfNeeded: min(max(value, -32768), 32767))
    }

    /// total[i] = Σ rows[p][i] over every row. `rows.count == total.count * participantCount`.
    @inlinable
    public static func accumulate(
        rows: UnsafeBufferPointer<Int16>, participantCount: Int, into total: UnsafeMutableBufferPointer<Int32>
    ) {
        let n = total.count
        precondition(rows.count >= n * participantCount, "rows too short")
        guard n > 0 else { return }
        let t = total.baseAddress!
        t.update(repeating: 0, count: n)
        guard participantCount > 0 else { return }
        let r = rows.baseAddress!
        // Four rows per sweep: a quarter of the passes over `total`, the shape of C's fastest loop.
        var p = 0
        while p + 4 <= participantCount {
            let r0 = r + p * n
            let r1 = r0 + n
            let r2 = r1 + n
            let r3 = r2 + n
            for i in 0..<n {
                t[i] &+= (Int32(r0[i]) &+ Int32(r1[i])) &+ (Int32(r2[i]) &+ Int32(r3[i]))
            }
            p += 4
        }
        while p < participantCount {
            add(UnsafeBufferPointer(start: r + p * n, count: n), into: total)
            p += 1
        }
    }

    /// total[i] += row[i].
    @inlinable
    public static func add(_ row: UnsafeBufferPointer<Int16>, into total: UnsafeMutableBufferPointer<Int32>) {
        let n = min(row.count, total.count)
        guard n > 0 else { return }
        let t = total.baseAddress!
        let s = row.baseAddress!
        for i in 0..<n { t[i] &+= Int32(s[i]) }
    }

    /// total[i] += block[i], for 32-bit partial sums (a rate group's converted share).
    @inlinable
    public static func add(_ block: UnsafeBufferPointer<Int32>, into total: UnsafeMutableBufferPointer<Int32>) {
        let n = min(block.count, total.count)
        guard n > 0 else { return }
        let t = total.baseAddress!
        let s = block.baseAddress!
        for i in 0..<n { t[i] &+= s[i] }
    }

    /// out[i] = a[i] + b[i].
    @inlinable
    public static func sum(
        _ a: UnsafeBufferPointer<Int32>, _ b: UnsafeBufferPointer<Int32>, into out: UnsafeMutableBufferPointer<Int32>
    ) {
        let n = out.count
        precondition(a.count >= n && b.count >= n, "buffers too short")
        guard n > 0 else { return }
        let o = out.baseAddress!
        let x = a.baseAddress!
        let y = b.baseAddress!
        for i in 0..<n { o[i] = x[i] &+ y[i] }
    }

    /// out[i] = saturate16(total[i] - own[i]).
    @inlinable
    public static func subtract(
        own: UnsafeBufferPointer<Int16>, from total: UnsafeBufferPointer<Int32>, into out: UnsafeMutableBufferPointer<Int16>
    ) {
        let n = out.count
        precondition(own.count >= n && total.count >= n, "buffers too short")
        guard n > 0 else { return }
        let o = out.baseAddress!
        let t = total.baseAddress!
        let s = own.baseAddress!
        for i in 0..<n { o[i] = saturate(t[i] &- Int32(s[i])) }
    }

    /// out[i] = saturate16(total[i]): what a participant that contributes nothing hears.
    @inlinable
    public static func saturate(_ total: UnsafeBufferPointer<Int32>, into out: UnsafeMutableBufferPointer<Int16>) {
        let n = out.count
        precondition(total.count >= n, "buffers too short")
        guard n > 0 else { return }
        let o = out.baseAddress!
        let t = total.baseAddress!
        for i in 0..<n { o[i] = saturate(t[i]) }
    }

    /// The whole O(N) mix: `outputs` row p = saturate16(Σ rows − rows[p]). `total` is scratch of
    /// `sampleCount` samples.
    @inlinable
    public static func mix(
        rows: UnsafeBufferPointer<Int16>, participantCount: Int, sampleCount: Int,
        total: UnsafeMutableBufferPointer<Int32>, outputs: UnsafeMutableBufferPointer<Int16>
    ) {
        precondition(total.count >= sampleCount && outputs.count >= sampleCount * participantCount, "buffers too short")
        let t = UnsafeMutableBufferPointer(rebasing: total[0..<sampleCount])
        accumulate(rows: rows, participantCount: participantCount, into: t)
        for p in 0..<participantCount {
            let range = (p * sampleCount)..<((p + 1) * sampleCount)
            subtract(
                own: UnsafeBufferPointer(rebasing: rows[range]), from: UnsafeBufferPointer(t),
                into: UnsafeMutableBufferPointer(rebasing: outputs[range]))
        }
    }

    /// The O(N²) definition, for tests: each output sums every other row directly.
    public static func referenceMix(
        rows: UnsafeBufferPointer<Int16>, participantCount: Int, sampleCount: Int,
        outputs: UnsafeMutableBufferPointer<Int16>
    ) {
        for p in 0..<participantCount {
            for i in 0..<sampleCount {
                var sum: Int32 = 0
                for q in 0..<participantCount where q != p { sum += Int32(rows[q * sampleCount + i]) }
                outputs[p * sampleCount + i] = saturate(sum)
            }
        }
    }
}
