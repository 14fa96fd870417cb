import ChamadeCore
import ChamadeDSP
import ChamadeTesting
import Testing

@Suite("Opus")
struct OpusTests {
    /// Encode → decode of a 1 kHz tone keeps its frequency (the fitted sine dominates the residual)
    /// and its level within 1 dB, at each platform rate.
    @Test(arguments: [SampleRate.hz48000, .hz16000, .hz8000])
    func toneRoundTrip(rate: SampleRate) throws {
        var encoder = try Opus.Encoder(sampleRate: rate, settings: .init(bitRate: 32_000, complexity: 5))
        var decoder = try Opus.Decoder(sampleRate: rate)
        let blocks = 50
        let n = rate.blockSampleCount
        let input = Signal.sine(frequency: 1000, dBFS: -12, sampleRate: rate.hertz, count: blocks * n)
        var packet = [UInt8](repeating: 0, count: Opus.maxPacketByteCount)
        var block = [Int16](repeating: 0, count: n)
        var output: [Int16] = []
        for k in 0..<blocks {
            let size = try input.withUnsafeBufferPointer { i in
                try packet.withUnsafeMutableBytes { p in
                    try encoder.encode(UnsafeBufferPointer(rebasing: i[(k * n)..<((k + 1) * n)]), into: p)
                }
            }
            #expect(size > 0 && size <= Opus.maxPacketByteCount)
            try packet.withUnsafeBytes { p in
                try block.withUnsafeMutableBufferPointer { b in
                    try decoder.decode(UnsafeRawBufferPointer(rebasing: p[0..<size]), into: b)
                }
            }
            output += block
        }
        let settled = Array(output[(10 * n)...])
        let fit = Analysis.fitSine(settled, frequency: 1000, sampleRate: rate.hertz)
        let expected = Signal.amplitude(dBFS: -12)
        #expect(abs(Analysis.dB(fit.amplitude, relativeTo: expected)) <= 1, "level \(fit.amplitude) vs \(expected)")
        #expect(fit.snrDB >= 15, "the tone should dominate: SNR \(fit.snrDB) dB")
        // Frequency: energy at 1 kHz dwarfs energy an octave either side.
        let at = Analysis.toneAmplitude(settled, frequency: 1000, sampleRate: rate.hertz)
        let off = max(
            Analysis.toneAmplitude(settled, frequency: 500, sampleRate: rate.hertz),
            Analysis.toneAmplitude(settled, frequency: 2000, sampleRate: rate.hertz))
        #expect(Analysis.dB(at, relativeTo: off) > 30)
    }

    /// Packet-loss concealment gives a whole block, continuing the tone rather than going silent.
    @Test func concealmentGivesABlock() throws {
        let rate = SampleRate.hz48000
        var encoder = try Opus.Encoder(sampleRate: rate)
        var decoder = try Opus.Decoder(sampleRate: rate)
        let n = rate.blockSampleCount
        let input = Signal.sine(frequency: 440, dBFS: -12, sampleRate: rate.hertz, count: 10 * n)
        var packet = [UInt8](repeating: 0, count: Opus.maxPacketByteCount)
        var block = [Int16](repeating: 0, count: n)
        for k in 0..<10 {
            let size = try input.withUnsafeBufferPointer { i in
                try packet.withUnsafeMutableBytes { try encoder.encode(UnsafeBufferPointer(rebasing: i[(k * n)..<((k + 1) * n)]), into: $0) }
            }
            try packet.withUnsafeBytes { p in
                try block.withUnsafeMutableBufferPointer { try decoder.decode(UnsafeRawBufferPointer(rebasing: p[0..<size]), into: $0) }
            }
        }
        var concealed = [Int16](repeating: 12345, count: n)
        try concealed.withUnsafeMutableBufferPointer { try decoder.conceal(into: $0) }
        #expect(concealed.count == n)
        #expect(!concealed.allSatisfy { $0 == 12345 })
        #expect(Analysis.rms(concealed) > 100, "PLC should extrapolate the tone, not go silent")
    }

    @Test func misuseIsTyped() throws {
        #expect(throws: Opus.Error.unsupportedRate(hertz: 22050)) {
            _ = try Opus.Encoder(sampleRate: try SampleRate(hertz: 22050))
        }
        #expect(throws: Opus.Error.unsupportedRate(hertz: 44100)) {
            _ = try Opus.Decoder(sampleRate: try SampleRate(hertz: 44100))
        }
        var encoder = try Opus.Encoder(sampleRate: .hz16000)
        var packet = [UInt8](repeating: 0, count: Opus.maxPacketByteCount)
        let short = [Int16](repeating: 0, count: 100)
        #expect(throws: Opus.Error.wrongBlockSize(expected: 320, got: 100)) {
            _ = try short.withUnsafeBufferPointer { s in try packet.withUnsafeMutableBytes { try encoder.encode(s, into: $0) } }
        }
        var decoder = try Opus.Decoder(sampleRate: .hz16000)
        var block = [Int16](repeating: 0, count: 320)
        let garbage: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff]
        #expect(throws: Opus.Error.self) {
            try garbage.withUnsafeBytes { g in try block.withUnsafeMutableBufferPointer { try decoder.decode(g, into: $0) } }
        }
    }
}
