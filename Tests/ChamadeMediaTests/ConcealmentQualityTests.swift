import ChamadeCore
import ChamadeDSP
@testable import ChamadeMedia
import ChamadeTesting
import Foundation
import Testing

/// What Opus in-band FEC buys over PLC, through the leg's own receive path (jitter buffer → decoder
/// → 20 ms blocks) in virtual time: packets arrive every 20 ms, some never do, and the output is
/// compared sample by sample with the lossless decode of the same packets.
@Suite("Concealment quality")
struct ConcealmentQualityTests {
    /// A tone shaped like speech: a 220 Hz fundamental with vibrato and five harmonics, in 3 Hz
    /// syllables, over a little noise. Opus codes in-band FEC only in its SILK layer and only for
    /// frames SILK's voice activity detector calls speech (activity ≥ 0.3): a bare steady sine is
    /// not, and gets no FEC at all (its FEC decode is bit-identical to PLC, measured here).
    static func signal(count: Int) -> [Int16] {
        var phase = 0.0
        var rng = SeededRandom(seed: 11)
        return (0..<count).map { i in
            let t = Double(i) / 48000
            phase += 2 * .pi * (220 + 8 * sin(2 * .pi * 5 * t)) / 48000
            var v = 0.0
            for h in 1...5 { v += sin(Double(h) * phase) / Double(h) }
            let syllable = max(0, sin(2 * .pi * 3 * t))
            let noise = Double(Int64(rng.next() % 801) - 400)
            return Int16(clamping: Int(6000 * v * syllable + noise))
        }
    }

    /// Encoded as a leg encodes (32 kb/s, FEC on), expecting the loss it will meet (10 % at least:
    /// below that libopus 1.3 codes no FEC at this rate, see `RTPLegConfiguration`).
    static func packets(_ pcm: [Int16], lossPercent: Int) throws -> [[UInt8]] {
        var settings = Opus.Settings(bitRate: 32_000, complexity: 5, inbandFEC: true)
        settings.expectedPacketLossPercent = max(lossPercent, 10)
        var encoder = try Opus.Encoder(sampleRate: .hz48000, settings: settings)
        var out: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 1500)
        for k in 0..<(pcm.count / 960) {
            let n = try pcm[(960 * k)..<(960 * k + 960)].withUnsafeBufferPointer { b in
                try buffer.withUnsafeMutableBytes { try encoder.encode(b, into: $0) }
            }
            out.append(Array(buffer[0..<n]))
        }
        return out
    }

    /// Plays the packets through a fresh `InboundPlayout`, `lost` ones never arriving; returns the
    /// blocks played (silence while filling). Each packet arrives `ahead` blocks before it plays (a
    /// steady network delay, 160 ms); the buffer's minimum delay (60 ms) stays below that and it
    /// never shrinks, so a loss never makes it wait (that would need the six newest packets lost
    /// at once): every output block sits at the same place of the timeline as in the lossless run,
    /// and the comparison is sample by sample.
    static func play(_ packets: [[UInt8]], lost: Set<Int>, fec: Bool, ahead: Int = 8) throws -> [Int16] {
        var config = JitterBuffer.Configuration(clockRate: 48000)
        config.minimumDelayMilliseconds = 60
        config.shrinkAfterBlocks = 1_000_000
        let playout = try InboundPlayout(codec: .opus, rate: .hz48000, configuration: config)
        playout.forwardErrorCorrection = fec
        var out: [Int16] = []
        var sent = 0
        for k in 0..<(packets.count + 10) {
            while sent < packets.count, sent <= k + ahead {
                // Every packet `ahead` blocks before its time: a constant transit delay.
                let arrival = Int64(sent - ahead) * 20_000_000
                if !lost.contains(sent) {
                    packets[sent].withUnsafeBytes {
                        _ = playout.jitter.insert(
                            sequence: UInt16(sent), timestamp: UInt32(960 * sent), ssrc: 7, marker: sent == 0, payload: $0,
                            sampleCount: 960, arrival: arrival)
                    }
                }
                sent += 1
            }
            if let block = playout.nextBlock() { out += block } else { out += [Int16](repeating: 0, count: 960) }
        }
        return out
    }

    static func snr(_ x: [Int16], reference r: [Int16]) -> Double {
        var signal = 0.0
        var noise = 0.0
        for (a, b) in zip(x, r) {
            signal += Double(b) * Double(b)
            noise += (Double(a) - Double(b)) * (Double(a) - Double(b))
        }
        return 10 * log10(signal / max(noise, 1e-9))
    }

    static func lossPattern(count: Int, percent: Int, seed: UInt64) -> Set<Int> {
        var rng = SeededRandom(seed: seed)
        // Never the first packets: the stream must start.
        return Set((5..<count).filter { _ in Int(rng.next() % 100) < percent })
    }

    @Test func fecRecoversADroppedPacketBetterThanPLC() throws {
        let pcm = Self.signal(count: 48000 * 2)
        let packets = try Self.packets(pcm, lossPercent: 10)
        let reference = try Self.play(packets, lost: [], fec: true)
        let fec = try Self.play(packets, lost: [54], fec: true)
        let plc = try Self.play(packets, lost: [54], fec: false)
        // The 20 ms that packet 54 carried (the middle of a syllable), where the buffer plays it,
        // and the 20 ms after it, where the decoder recovers.
        let window = (54 * 960)..<(56 * 960)
        let fecSNR = Self.snr(Array(fec[window]), reference: Array(reference[window]))
        let plcSNR = Self.snr(Array(plc[window]), reference: Array(reference[window]))
        print("one lost packet: FEC \(fecSNR) dB, PLC \(plcSNR) dB")
        #expect(fecSNR > plcSNR + 3, "FEC \(fecSNR) dB, PLC \(plcSNR) dB")
        // Before the loss the three are the same audio.
        #expect(fec[..<window.lowerBound].elementsEqual(reference[..<window.lowerBound]))
        #expect(plc[..<window.lowerBound].elementsEqual(reference[..<window.lowerBound]))
    }

    /// SNR against the lossless decode over the 20 ms blocks whose packets were lost: the audio
    /// concealment made. (Over the whole stream both methods are dominated by the blocks after a
    /// loss, where the decoder's state re-converges with a phase shift that a sample-by-sample
    /// comparison counts as noise but the ear does not.)
    static func concealedSNR(_ x: [Int16], reference: [Int16], lost: Set<Int>) -> Double {
        var signal = 0.0
        var noise = 0.0
        for b in lost {
            for i in (b * 960)..<(b * 960 + 960) {
                signal += Double(reference[i]) * Double(reference[i])
                noise += (Double(x[i]) - Double(reference[i])) * (Double(x[i]) - Double(reference[i]))
            }
        }
        return 10 * log10(signal / max(noise, 1e-9))
    }

    @Test(arguments: [5, 20])
    func fecBeatsPLCUnderRandomLoss(percent: Int) throws {
        let pcm = Self.signal(count: 48000 * 20)
        let packets = try Self.packets(pcm, lossPercent: percent)
        let lost = Self.lossPattern(count: packets.count, percent: percent, seed: UInt64(percent))
        let reference = try Self.play(packets, lost: [], fec: true)
        let fec = try Self.play(packets, lost: lost, fec: true)
        let plc = try Self.play(packets, lost: lost, fec: false)
        let fecSNR = Self.concealedSNR(fec, reference: reference, lost: lost)
        let plcSNR = Self.concealedSNR(plc, reference: reference, lost: lost)
        let fecAll = Self.snr(fec, reference: reference)
        let plcAll = Self.snr(plc, reference: reference)
        print("concealment at \(percent) % loss (\(lost.count) of \(packets.count) packets): concealed blocks FEC \(String(format: "%.1f", fecSNR)) dB, PLC \(String(format: "%.1f", plcSNR)) dB; whole stream FEC \(String(format: "%.1f", fecAll)) dB, PLC \(String(format: "%.1f", plcAll)) dB")
        #expect(fecSNR > plcSNR + 3, "FEC \(fecSNR) dB, PLC \(plcSNR) dB")
    }
}
