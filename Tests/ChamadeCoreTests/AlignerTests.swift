import ChamadeCore
import ChamadeTesting
import Testing

@Suite("Sample rates and re-alignment")
struct AlignerTests {
    @Test(arguments: [7999, 8025, 48050, 0, -8000, 44101, 96000, 11025, 8001])
    func unsupportedRatesAreRefused(hertz: Int) {
        #expect(throws: SampleRate.Error.unsupported(hertz: hertz)) { try SampleRate(hertz: hertz) }
    }

    @Test(arguments: [8000, 8050, 11050, 16000, 22050, 24000, 32000, 44100, 47950, 48000])
    func supportedRatesHaveWholeBlocks(hertz: Int) throws {
        let rate = try SampleRate(hertz: hertz)
        #expect(rate.blockSampleCount * 50 == hertz)
        #expect(rate.blockByteCount == hertz / 25)
    }

    /// Decoding one byte at a time gives exactly the samples of decoding the stream at once.
    @Test func byteAtATimeEqualsWhole() {
        var rng = SeededRandom(seed: 7)
        let samples = (0..<1001).map { _ in Int16.random(in: .min ... .max, using: &rng) }
        let bytes = Signal.bytes(of: samples)
        var decoder = PCMStreamDecoder()
        var out: [Int16] = []
        var one = [Int16](repeating: 0, count: 1)
        for b in bytes {
            let n = [b].withUnsafeBytes { raw in one.withUnsafeMutableBufferPointer { decoder.decode(raw, into: $0) } }
            out.append(contentsOf: one[0..<n])
        }
        #expect(out == samples)
        #expect(!decoder.hasPendingByte)
    }

    /// Random chunk sizes, including 1 byte and odd sizes, reproduce the stream exactly as blocks.
    @Test(arguments: [8000, 11050, 16000, 22050, 24000, 44100, 48000])
    func randomChunksGiveExactBlocks(hertz: Int) throws {
        let rate = try SampleRate(hertz: hertz)
        var rng = SeededRandom(seed: UInt64(hertz))
        let blocks = 37
        let samples = (0..<(blocks * rate.blockSampleCount)).map { _ in Int16.random(in: .min ... .max, using: &rng) }
        let bytes = Signal.bytes(of: samples)
        var aligner = FrameAligner(sampleRate: rate)
        var out: [Int16] = []
        var block = [Int16](repeating: 0, count: rate.blockSampleCount)
        var offset = 0
        var chunkSizes: [Int] = [1, 1, 3, 2, 1]
        while offset < bytes.count {
            let size = chunkSizes.isEmpty ? Int.random(in: 1...5000, using: &rng) : chunkSizes.removeFirst()
            let end = min(bytes.count, offset + size)
            let dropped = bytes[offset..<end].withUnsafeBytes { aligner.append($0) }
            #expect(dropped == 0)
            offset = end
            while block.withUnsafeMutableBufferPointer({ aligner.nextBlock(into: $0) }) { out.append(contentsOf: block) }
        }
        #expect(out == samples)
        #expect(aligner.queuedSampleCount() == 0)
    }

    /// A whole 1 MiB chunk at once (the contract's largest frame) comes out as the same blocks.
    @Test func oneMebibyteChunk() throws {
        let rate = SampleRate.hz48000
        var rng = SeededRandom(seed: 3)
        let bytes = (0..<1_048_576).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var aligner = FrameAligner(sampleRate: rate)
        #expect(bytes.withUnsafeBytes { aligner.append($0) } == 0)
        #expect(aligner.queuedSampleCount() == 524_288)
        var block = [Int16](repeating: 0, count: rate.blockSampleCount)
        var first = true
        var blocks = 0
        while block.withUnsafeMutableBufferPointer({ aligner.nextBlock(into: $0) }) {
            if first {
                #expect(block[0] == Int16(bitPattern: UInt16(bytes[0]) | UInt16(bytes[1]) << 8))
                first = false
            }
            blocks += 1
        }
        #expect(blocks == 524_288 / 960)
        #expect(aligner.queuedSampleCount() == 524_288 % 960)
    }

    /// Beyond capacity the excess is refused and counted; what was queued is kept intact, and the
    /// stream stays in phase (an odd chunk that overflows still carries its odd byte).
    @Test func overflowKeepsWhatFits() {
        let rate = SampleRate.hz8000
        var aligner = FrameAligner(sampleRate: rate, capacitySampleCount: 400)
        let samples = (0..<500).map { Int16($0) }
        let bytes = Signal.bytes(of: samples) + [0x34]
        let dropped = bytes.withUnsafeBytes { aligner.append($0) }
        #expect(dropped == 100)
        #expect(aligner.queuedSampleCount() == 400)
        var block = [Int16](repeating: 0, count: 160)
        #expect(block.withUnsafeMutableBufferPointer { aligner.nextBlock(into: $0) })
        #expect(block == Array(samples[0..<160]))
        // The carried byte completes with the next chunk's first byte.
        _ = [UInt8(0x12)].withUnsafeBytes { aligner.append($0) }
        #expect(aligner.queuedSampleCount() == 241)
        _ = block.withUnsafeMutableBufferPointer { aligner.nextBlock(into: $0) }
        var last = [Int16](repeating: 0, count: 160)
        let taken = last.withUnsafeMutableBufferPointer { aligner.nextBlockPaddingWithSilence(into: $0) }
        #expect(taken == 81)
        #expect(last[80] == 0x1234)
        #expect(last[81...].allSatisfy { $0 == 0 })
    }

    @Test func clearDropsQueueAndPendingByte() {
        var aligner = FrameAligner(sampleRate: .hz16000)
        _ = [UInt8](repeating: 1, count: 1001).withUnsafeBytes { aligner.append($0) }
        #expect(aligner.clear() == 500)
        #expect(aligner.queuedSampleCount() == 0)
        // After a clear the stream restarts on a sample boundary.
        _ = [UInt8(0x01), 0x02].withUnsafeBytes { aligner.append($0) }
        var one = [Int16](repeating: 0, count: 320)
        _ = one.withUnsafeMutableBufferPointer { aligner.nextBlockPaddingWithSilence(into: $0) }
        #expect(one[0] == 0x0201)
    }
}
