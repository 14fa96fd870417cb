import CChamadeShims
import ChamadeCore
import Testing

/// In ChamadeEngineTests because this target links the malloc counter (ChamadeCoreTests does not).
@Suite("Jitter buffer allocations")
struct JitterBufferAllocationTests {
    /// After warm-up, 5,000 insert/pull cycles with loss, duplicates, late packets, a talk-spurt gap
    /// every 500 packets and a pull clock faster than the sender (pauses, refills, skips) allocate
    /// nothing on this thread.
    @Test func steadyStateAllocatesNothing() throws {
        var c = JitterBuffer.Configuration(clockRate: 48000)
        c.minimumDelayMilliseconds = 40
        var jb = try JitterBuffer(configuration: c)
        let payload = [UInt8](repeating: 0x55, count: 160)
        var rng = SeededRandom(seed: 11)
        var sequence: UInt16 = 65000
        var timestamp: UInt32 = UInt32.max - 96_000
        var concealed = 0
        var played = 0
        func cycle(_ k: Int) {
            // Packet k of 20 ms, arriving 0-2 ms late; every 13th lost, every 17th sent twice, every
            // 41st followed by a copy of one 30 packets old, every 500th preceded by 200 ms of
            // silence (no sequence gap).
            if k % 500 == 0 { timestamp &+= 9600 }
            let arrival = Int64(k) * 20_000_000 + Int64(k % 3) * 1_000_000
            payload.withUnsafeBytes { p in
                let copies = k % 17 == 0 ? 2 : 1
                if k % 13 != 0 {
                    for _ in 0..<copies {
                        _ = jb.insert(
                            sequence: sequence, timestamp: timestamp, ssrc: 7, marker: false, payload: p,
                            sampleCount: 960, arrival: arrival)
                    }
                }
                if k % 41 == 0 {
                    _ = jb.insert(
                        sequence: sequence &- 30, timestamp: timestamp &- 28_800, ssrc: 7, marker: false,
                        payload: p, sampleCount: 960, arrival: arrival)
                }
            }
            sequence &+= 1
            timestamp &+= 960
            if Int.random(in: 0..<4, using: &rng) != 0 {
                let block = jb.pull()
                for i in 0..<block.itemCount {
                    switch jb.item(i) {
                    case .packet: played += 1
                    case .conceal: concealed += 1
                    }
                }
            } else {
                // Occasionally two pulls per packet, occasionally none: the clocks drift.
                _ = jb.pull()
                _ = jb.pull()
            }
        }
        for k in 0..<1000 { cycle(k) }
        let before = cchamade_tick_allocation_count_on_this_thread()
        cchamade_tick_enter()
        for k in 1000..<6000 { cycle(k) }
        cchamade_tick_exit()
        let allocations = cchamade_tick_allocation_count_on_this_thread() - before
        #expect(allocations == 0, "\(allocations) allocations in 5000 cycles")
        let s = jb.statistics
        #expect(
            played > 3000 && concealed > 100 && s.packetsLate > 0 && s.packetsDuplicate > 0,
            "\(played) \(concealed) \(s)")
        #expect(MallocProbe.allocationsWhileFlagged() > 0)
    }
}
