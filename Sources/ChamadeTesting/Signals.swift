import Foundation
@_exported public import ChamadeCore

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
