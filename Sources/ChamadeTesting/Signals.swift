import Foundation

/// Deterministic test signals.
public enum Signal {
    /// Linear amplitude of a level in dBFS (0 dBFS = full scale 32768).
    public static func amplitude(dBFS: Double) -> Double { 32768 * pow(10, dBFS / 20) }

    /// A sine as Int16 samples (rounded to nearest).
    public static func sine(
        frequency: Double, dBFS: Double = -6, sampleRate: Int, count: Int, phase: Double = 0, startIndex: Int = 0
    ) -> [Int16] {
        let a = amplitude(dBFS: dBFS)
        return (0..<count).map { i in
            let v = a * sin(2 * .pi * frequency * Double(startIndex + i) / Double(sampleRate) + phase)
            return Int16(clamping: Int(v.rounded()))
        }
    }

    /// A sine as Float samples in libsamplerate's scale (1.0 = full scale).
    public static func sineFloat(frequency: Double, dBFS: Double = -6, sampleRate: Int, count: Int, startIndex: Int = 0)
        -> [Float]
    {
        let a = pow(10, dBFS / 20)
        return (0..<count).map { i in
            Float(a * sin(2 * .pi * frequency * Double(startIndex + i) / Double(sampleRate)))
        }
    }

    /// The bytes of `samples` as PCM s16le.
    public static func bytes(of samples: [Int16]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(samples.count * 2)
        for s in samples {
            let u = UInt16(bitPattern: s)
            out.append(UInt8(u & 0xff))
            out.append(UInt8(u >> 8))
        }
        return out
    }
}

/// A small deterministic generator (SplitMix64), so randomised tests repeat exactly.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
