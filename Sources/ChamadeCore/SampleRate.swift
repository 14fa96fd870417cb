/// A sample rate the engine supports: every rate from 8000 to 48000 Hz that is a multiple of 50,
/// so that a 20 ms block is a whole number of samples.
///
/// The multiple-of-50 rule is what makes block boundaries common sample instants at every rate,
/// which the exact block-by-block resampling and the shared output converters rely on.
public struct SampleRate: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Samples per second.
    public let hertz: Int

    /// Why a rate was refused.
    public enum Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        case unsupported(hertz: Int)

        public var description: String {
            switch self {
            case .unsupported(let hertz):
                "unsupported sample rate \(hertz) Hz: use a multiple of 50 from 8000 to 48000"
            }
        }
    }

    /// The range of supported rates, in Hz.
    public static let supportedRange: ClosedRange<Int> = 8000...48000

    /// Blocks per second: the clock ticks every 20 ms.
    public static let blocksPerSecond = 50

    /// Whether `hertz` is a supported rate.
    @inlinable
    public static func isSupported(_ hertz: Int) -> Bool {
        supportedRange.contains(hertz) && hertz % blocksPerSecond == 0
    }

    /// Validates `hertz`. Throws `.unsupported` outside 8000...48000 or off the multiple-of-50 grid.
    @inlinable
    public init(hertz: Int) throws(Error) {
        guard Self.isSupported(hertz) else { throw .unsupported(hertz: hertz) }
        self.hertz = hertz
    }

    @usableFromInline
    init(unchecked hertz: Int) { self.hertz = hertz }

    public static let hz8000 = SampleRate(unchecked: 8000)
    public static let hz16000 = SampleRate(unchecked: 16000)
    public static let hz24000 = SampleRate(unchecked: 24000)
    public static let hz48000 = SampleRate(unchecked: 48000)

    /// Samples in one 20 ms block at this rate.
    @inlinable public var blockSampleCount: Int { hertz / Self.blocksPerSecond }

    /// Bytes in one 20 ms block of s16le mono at this rate.
    @inlinable public var blockByteCount: Int { blockSampleCount * 2 }

    /// Milliseconds of audio in `sampleCount` samples, rounded down.
    @inlinable public func milliseconds(ofSampleCount sampleCount: Int) -> Int { sampleCount * 1000 / hertz }

    @inlinable public static func < (a: SampleRate, b: SampleRate) -> Bool { a.hertz < b.hertz }

    public var description: String { "\(hertz) Hz" }
}
