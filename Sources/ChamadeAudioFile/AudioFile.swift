internal import CSndFile

/// WAV (and anything else libsndfile reads) in and out, as 16-bit mono. Never on the tick.
public enum AudioFile {
    /// Why a file could not be read or written.
    public enum Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        case cannotOpen(path: String, reason: String)
        case cannotWrite(path: String, reason: String)
        case cannotRead(path: String, reason: String)

        public var description: String {
            switch self {
            case .cannotOpen(let path, let reason): "cannot open \(path): \(reason)"
            case .cannotWrite(let path, let reason): "cannot write \(path): \(reason)"
            case .cannotRead(let path, let reason): "cannot read \(path): \(reason)"
            }
        }
    }

    /// A whole file read into memory.
    public struct Contents: Sendable, Equatable {
        /// Mono samples (down-mixed by averaging when the file has several channels).
        public var samples: [Int16]
        /// The file's sample rate, in Hz (not validated against the engine's rates).
        public var sampleRate: Int
        /// Channels in the file before down-mixing.
        public var channelCount: Int
    }

    /// Reads a whole file. See `Reader`.
    public static func read(_ path: String) throws(Error) -> Contents {
        var reader = try Reader(path: path)
        var samples = [Int16](repeating: 0, count: reader.frameCount)
        let n = try samples.withUnsafeMutableBufferPointer { buffer throws(Error) in try reader.read(into: buffer) }
        samples.removeSubrange(n...)
        return Contents(samples: samples, sampleRate: reader.sampleRate, channelCount: reader.channelCount)
    }

    /// Writes `samples` as a 16-bit mono WAV file, replacing any file at `path`.
    public static func writeWAV(_ path: String, samples: [Int16], sampleRate: Int) throws(Error) {
        var writer = try WAVWriter(path: path, sampleRate: sampleRate)
        try samples.withUnsafeBufferPointer { buffer throws(Error) in try writer.write(buffer) }
        try writer.close()
    }

    /// Streams any format libsndfile reads as Int16 mono. Owns one `SNDFILE` (`sf_open` in `init`,
    /// `sf_close` in `deinit`).
    ///
    /// Samples are read as 32-bit integers (libsndfile scales every format to full 32-bit scale), the
    /// channels averaged, and rounded to 16 bits: a 16-bit mono file comes back bit for bit.
    public struct Reader: ~Copyable {
        public let path: String
        public let sampleRate: Int
        public let channelCount: Int
        /// Frames (instants) in the file, as libsndfile reports it.
        public let frameCount: Int
        private let file: OpaquePointer
        private var scratch: [Int32]

        public init(path: String) throws(Error) {
            var info = SF_INFO()
            guard let file = sf_open(path, Int32(SFM_READ), &info) else {
                throw .cannotOpen(path: path, reason: String(cString: sf_strerror(nil)))
            }
            guard info.channels > 0, info.samplerate > 0 else {
                sf_close(file)
                throw .cannotRead(path: path, reason: "no audio channels")
            }
            self.path = path
            self.file = file
            self.sampleRate = Int(info.samplerate)
            self.channelCount = Int(info.channels)
            self.frameCount = Int(info.frames)
            self.scratch = [Int32](repeating: 0, count: 4096 * Int(info.channels))
        }

        deinit { sf_close(file) }

        /// Reads up to `buffer.count` mono samples; returns how many (0 at the end).
        public mutating func read(into buffer: UnsafeMutableBufferPointer<Int16>) throws(Error) -> Int {
            let channels = channelCount
            let chunkFrames = scratch.count / channels
            var done = 0
            while done < buffer.count {
                let want = min(chunkFrames, buffer.count - done)
                let got = scratch.withUnsafeMutableBufferPointer { sf_readf_int(file, $0.baseAddress, sf_count_t(want)) }
                if got < 0 { throw .cannotRead(path: path, reason: String(cString: sf_strerror(file))) }
                if got == 0 { break }
                for frame in 0..<Int(got) {
                    var sum: Int64 = 0
                    for c in 0..<channels { sum += Int64(scratch[frame * channels + c]) }
                    buffer[done + frame] = Self.round32To16(sum, channels: channels)
                }
                done += Int(got)
                if Int(got) < want { break }
            }
            return done
        }

        /// The average of `channels` 32-bit samples, rounded (half away from zero) to 16 bits.
        static func round32To16(_ sum: Int64, channels: Int) -> Int16 {
            let divisor = Int64(channels) << 16
            let rounded = sum >= 0 ? (sum + divisor / 2) / divisor : -((-sum + divisor / 2) / divisor)
            return Int16(clamping: rounded)
        }
    }

    /// Writes a 16-bit PCM mono WAV file incrementally. Owns one `SNDFILE` (`sf_open` in `init`,
    /// `sf_close` in `close()` or `deinit`). The output depends only on the samples written: the
    /// same samples give the same bytes.
    public struct WAVWriter: ~Copyable {
        public let path: String
        public let sampleRate: Int
        private var file: OpaquePointer?

        public init(path: String, sampleRate: Int) throws(Error) {
            var info = SF_INFO()
            info.samplerate = Int32(sampleRate)
            info.channels = 1
            info.format = Int32(SF_FORMAT_WAV | SF_FORMAT_PCM_16)
            guard let file = sf_open(path, Int32(SFM_WRITE), &info) else {
                throw .cannotOpen(path: path, reason: String(cString: sf_strerror(nil)))
            }
            self.path = path
            self.sampleRate = sampleRate
            self.file = file
        }

        deinit { if let file { sf_close(file) } }

        public mutating func write(_ samples: UnsafeBufferPointer<Int16>) throws(Error) {
            guard let file else { throw .cannotWrite(path: path, reason: "already closed") }
            guard !samples.isEmpty else { return }
            let n = sf_writef_short(file, samples.baseAddress, sf_count_t(samples.count))
            if n != samples.count { throw .cannotWrite(path: path, reason: String(cString: sf_strerror(file))) }
        }

        /// Finishes the header and closes the file.
        public mutating func close() throws(Error) {
            guard let file else { return }
            self.file = nil
            let code = sf_close(file)
            if code != 0 { throw .cannotWrite(path: path, reason: String(cString: sf_error_number(code))) }
        }
    }
}
