import Foundation

/// Signal analysis for audio assertions: fitted-sine SNR, band energy, level, delay.
public enum Analysis {
    /// The result of fitting `a·sin + b·cos + c` at a known frequency by least squares.
    public struct SineFit: Sendable {
        /// Peak amplitude of the fitted sine, in the samples' units.
        public var amplitude: Double
        /// Fitted sine power over residual power, in dB.
        public var snrDB: Double
        /// Phase of the fitted sine, radians.
        public var phase: Double
    }

    /// Fits a sine at `frequency` to `samples` and reports the SNR of the fit against the residual.
    public static func fitSine(_ samples: [Double], frequency: Double, sampleRate: Int) -> SineFit {
        let n = samples.count
        precondition(n > 2)
        let w = 2 * Double.pi * frequency / Double(sampleRate)
        // Normal equations for [sin, cos, 1].
        var m = [[Double]](repeating: [0, 0, 0], count: 3)
        var v = [0.0, 0.0, 0.0]
        for i in 0..<n {
            let basis = [sin(w * Double(i)), cos(w * Double(i)), 1.0]
            for r in 0..<3 {
                v[r] += basis[r] * samples[i]
                for c in 0..<3 { m[r][c] += basis[r] * basis[c] }
            }
        }
        let x = solve3(m, v)
        var signal = 0.0
        var residual = 0.0
        for i in 0..<n {
            let fit = x[0] * sin(w * Double(i)) + x[1] * cos(w * Double(i))
            signal += fit * fit
            let e = samples[i] - fit - x[2]
            residual += e * e
        }
        let snr = residual == 0 ? Double.infinity : 10 * log10(signal / residual)
        return SineFit(amplitude: (x[0] * x[0] + x[1] * x[1]).squareRoot(), snrDB: snr, phase: atan2(x[1], x[0]))
    }

    public static func fitSine(_ samples: [Int16], frequency: Double, sampleRate: Int) -> SineFit {
        fitSine(samples.map(Double.init), frequency: frequency, sampleRate: sampleRate)
    }

    public static func fitSine(_ samples: [Float], frequency: Double, sampleRate: Int) -> SineFit {
        fitSine(samples.map { Double($0) }, frequency: frequency, sampleRate: sampleRate)
    }

    private static func solve3(_ a: [[Double]], _ b: [Double]) -> [Double] {
        var m = a
        var y = b
        for col in 0..<3 {
            let pivot = (col..<3).max { abs(m[$0][col]) < abs(m[$1][col]) }!
            m.swapAt(col, pivot)
            y.swapAt(col, pivot)
            for row in (col + 1)..<3 {
                let f = m[row][col] / m[col][col]
                for k in col..<3 { m[row][k] -= f * m[col][k] }
                y[row] -= f * y[col]
            }
        }
        var x = [0.0, 0.0, 0.0]
        for row in stride(from: 2, through: 0, by: -1) {
            var s = y[row]
            for k in (row + 1)..<3 { s -= m[row][k] * x[k] }
            x[row] = s / m[row][row]
        }
        return x
    }

    /// Mean power of a single frequency (Goertzel over a Hann window), as the amplitude of the sine
    /// at that frequency: a full sine of peak A reads ≈ A. Frequencies within a few bins blur together.
    public static func toneAmplitude(_ samples: [Int16], frequency: Double, sampleRate: Int) -> Double {
        let n = samples.count
        guard n > 1 else { return 0 }
        let w = 2 * Double.pi * frequency / Double(sampleRate)
        var re = 0.0
        var im = 0.0
        var windowSum = 0.0
        for i in 0..<n {
            let h = 0.5 - 0.5 * cos(2 * Double.pi * Double(i) / Double(n - 1))
            let x = Double(samples[i]) * h
            re += x * cos(w * Double(i))
            im -= x * sin(w * Double(i))
            windowSum += h
        }
        return 2 * (re * re + im * im).squareRoot() / windowSum
    }

    /// Root mean square.
    public static func rms(_ samples: [Int16]) -> Double {
        guard !samples.isEmpty else { return 0 }
        let s = samples.reduce(0.0) { $0 + Double($1) * Double($1) }
        return (s / Double(samples.count)).squareRoot()
    }

    /// 20·log10(a / b), with a floor so silence compares as very quiet rather than -∞.
    public static func dB(_ a: Double, relativeTo b: Double) -> Double {
        20 * log10(max(a, 1e-9) / max(b, 1e-9))
    }

    /// The lag (in samples, `b` later than `a` is positive) within `maxLag` that maximises the
    /// cross-correlation of `a` and `b`.
    public static func delay(of b: [Int16], relativeTo a: [Int16], maxLag: Int) -> Int {
        var best = 0
        var bestValue = -Double.infinity
        for lag in -maxLag...maxLag {
            var s = 0.0
            for i in 0..<a.count {
                let j = i + lag
                if j >= 0 && j < b.count { s += Double(a[i]) * Double(b[j]) }
            }
            if s > bestValue {
                bestValue = s
                best = lag
            }
        }
        return best
    }
}
