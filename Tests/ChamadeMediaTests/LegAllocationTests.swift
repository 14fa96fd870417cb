import CChamadeShims
import ChamadeCore
import ChamadeDSP
import ChamadeEngine
@testable import ChamadeMedia
import Foundation
import Testing

/// A media worker's steps allocate nothing in steady state: packets in (jitter buffer, decode,
/// concealment of a loss, into the room), mix-minus out (encode, RTP), DTMF out, RTCP reports.
/// Counted by the malloc counter linked into this test binary, on the worker's thread.
@Suite("Leg allocations", .serialized)
struct LegAllocationTests {
    @Test(arguments: [MediaCodec.opus, .pcma])
    func steadyStateAllocatesNothing(codec: MediaCodec) throws {
        #expect(cchamade_allocation_counting_available() != 0)
        let s = try RTPLegTests.Setup(codec: codec, ports: 46500...46599)
        defer { s.close() }
        let rate = codec.nativeRate
        let n = rate.blockSampleCount
        var encoder = codec == .opus ? try Opus.Encoder(sampleRate: rate) : nil
        let tone = LegTestSupport.tone(300, rate: rate.hertz, count: n * 50)
        var payloads: [[UInt8]] = []
        var scratch = [UInt8](repeating: 0, count: 1500)
        for k in 0..<50 {
            let block = Array(tone[(n * k)..<(n * k + n)])
            if encoder != nil {
                let c = try block.withUnsafeBufferPointer { b in try scratch.withUnsafeMutableBytes { try encoder!.encode(b, into: $0) } }
                payloads.append(Array(scratch[0..<c]))
            } else {
                payloads.append(block.map(G711.Law.a.encode))
            }
        }
        let pcm = LegTestSupport.tone(700, rate: rate.hertz, count: rate.hertz * 8)
        _ = pcm.withUnsafeBytes { s.agent.push($0) }
        let listener = LegTestSupport.Listener(s.agent)
        defer { listener.stop() }
        var next = MonotonicClock.now()
        var before = 0
        for k in 0..<250 {
            if k == 100 {
                // Warm: every path has run (a loss at k = 60 below, RTCP at 2.5 s, DTMF now).
                before = s.media.stepAllocationCount
                _ = try s.leg.sendDigits("1#")
            }
            if k % 60 != 0 {
                s.peer.send(payloadType: codec.defaultPayloadType, payload: payloads[k % 50], to: s.leg.local)
            } else {
                s.peer.sequence &+= 1
            }
            s.peer.timestamp &+= UInt32(codec.clockRate / 50)
            _ = s.peer.drain()
            next += 20_000_000
            MonotonicClock.sleep(until: next)
        }
        let allocations = s.media.stepAllocationCount - before
        #expect(allocations == 0, "\(allocations) allocations in 3 s of media steps")
        #expect(s.leg.statistics.packetsLost >= 3)
        #expect(s.leg.statistics.packetsSent > 100)
        #expect(s.leg.statistics.rtcpSent >= 1)
    }
}
