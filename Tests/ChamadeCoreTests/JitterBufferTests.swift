import ChamadeCore
import Testing

/// One packet of a schedule: what the sender put in it and when it reached the socket.
struct Sent {
    var sequence: UInt16
    var timestamp: UInt32
    var arrivalMs: Int64
    var sampleCount: Int
    var marker = false
    var ssrc: UInt32 = 0x1234
}

/// The result of playing a schedule through a buffer: one token per 20 ms pull.
///
/// Tokens: `.` idle, `f` filling; when playing, the items separated by spaces: a packet as its
/// sequence number, a concealment as `c<ms>` (`c<ms>+<seq>` when the following packet is offered
/// for FEC); `=` for a block covered by the residue of a longer packet.
struct Trace {
    var tokens: [String] = []
    var statistics = JitterBuffer.Statistics()
    var results: [JitterBuffer.InsertResult] = []
    /// Per pull: the RTP timestamp of each sample of the 20 ms block played (-1 for concealment,
    /// nil for a block not playing), from a fake decoder that outputs each sample's timestamp.
    var blocks: [[Int64]?] = []
    /// Per pull: the level and the target after it, in ms.
    var levels: [Int] = []
    var targets: [Int] = []
}

/// The trivial codec: the payload is the sequence number (2 bytes) and timestamp (4 bytes), little
/// endian, so every packet handed out can be checked against its header.
func payload(_ sequence: UInt16, _ timestamp: UInt32) -> [UInt8] {
    [
        UInt8(sequence & 0xFF), UInt8(sequence >> 8), UInt8(timestamp & 0xFF), UInt8((timestamp >> 8) & 0xFF),
        UInt8((timestamp >> 16) & 0xFF), UInt8(timestamp >> 24),
    ]
}

func decodePayload(_ p: UnsafeRawBufferPointer) -> (UInt16, UInt32) {
    let b = Array(p)
    return (
        UInt16(b[0]) | UInt16(b[1]) << 8,
        UInt32(b[2]) | UInt32(b[3]) << 8 | UInt32(b[4]) << 16 | UInt32(b[5]) << 24
    )
}

/// Inserts the packets at their arrival times and pulls at `firstPullMs + 20 ms × j` (packets arriving
/// at the same instant as a pull go first), `pulls` times. Checks every packet's payload and the
/// continuity of the block stream (the residue never runs dry, never exceeds a packet plus a block).
func play(
    _ sent: [Sent], pulls: Int, firstPullMs: Int64 = 10, configuration: JitterBuffer.Configuration
) throws -> Trace {
    var jb = try JitterBuffer(configuration: configuration)
    var trace = Trace()
    let b = jb.blockSampleCount
    let order = sent.indices.sorted { (sent[$0].arrivalMs, $0) < (sent[$1].arrivalMs, $1) }
    var next = 0
    var residue: [Int64] = []
    for j in 0..<pulls {
        let now = firstPullMs + 20 * Int64(j)
        while next < order.count, sent[order[next]].arrivalMs <= now {
            let p = sent[order[next]]
            let bytes = payload(p.sequence, p.timestamp)
            let r = bytes.withUnsafeBytes {
                jb.insert(
                    sequence: p.sequence, timestamp: p.timestamp, ssrc: p.ssrc, marker: p.marker, payload: $0,
                    sampleCount: p.sampleCount, arrival: p.arrivalMs * 1_000_000)
            }
            trace.results.append(r)
            next += 1
        }
        let block = jb.pull()
        switch block.kind {
        case .idle:
            trace.tokens.append(".")
            trace.blocks.append(nil)
            residue = []
        case .filling:
            trace.tokens.append("f")
            trace.blocks.append(nil)
            residue = []
        case .playing:
            var parts: [String] = []
            for i in 0..<block.itemCount {
                switch jb.item(i) {
                case .packet(let p):
                    let (s, t) = decodePayload(p.payload)
                    #expect(s == p.sequence && t == p.timestamp, "payload of \(p.sequence)")
                    parts.append("\(p.sequence)")
                    residue += (0..<p.sampleCount).map { Int64(p.timestamp) + Int64($0) }
                case .conceal(let n, let following):
                    parts.append("c\(n * 1000 / configuration.clockRate)" + (following.map { "+\($0.sequence)" } ?? ""))
                    residue += [Int64](repeating: -1, count: n)
                }
            }
            trace.tokens.append(parts.isEmpty ? "=" : parts.joined(separator: " "))
            #expect(residue.count >= b, "pull \(j): the block is not covered")
            #expect(residue.count < b + 120 * configuration.clockRate / 1000, "pull \(j): residue too long")
            trace.blocks.append(Array(residue.prefix(b)))
            residue.removeFirst(min(b, residue.count))
        }
        trace.levels.append(jb.statistics.bufferMilliseconds)
        trace.targets.append(jb.statistics.targetMilliseconds)
    }
    trace.statistics = jb.statistics
    return trace
}

/// `count` packets of `ms` ms from `sequence`/`timestamp`, each arriving `ms` ms after the previous.
func stream(
    count: Int, ms: Int = 20, rate: Int = 8000, sequence: UInt16 = 100, timestamp: UInt32 = 5000,
    startMs: Int64 = 0, ssrc: UInt32 = 0x1234
) -> [Sent] {
    let units = ms * rate / 1000
    return (0..<count).map { k in
        Sent(
            sequence: sequence &+ UInt16(truncatingIfNeeded: k), timestamp: timestamp &+ UInt32(units * k),
            arrivalMs: startMs + Int64(ms * k), sampleCount: units, ssrc: ssrc)
    }
}

let g711 = JitterBuffer.Configuration(clockRate: 8000)

/// Tokens of packets `range` played one per pull.
func seqs(_ range: ClosedRange<Int>) -> [String] { range.map { "\($0)" } }

/// `n` tokens `token`.
func times(_ n: Int, _ token: String) -> [String] { [String](repeating: token, count: n) }

/// The counters a table states; the rest (jitter, level, target) is checked where it matters.
struct Counts: Equatable, CustomStringConvertible {
    var received = 0, lost = 0, late = 0, duplicate = 0, refused = 0, dropped = 0, restarts = 0
    var concealedMs = 0, skippedMs = 0
    init(
        received: Int, lost: Int = 0, late: Int = 0, duplicate: Int = 0, refused: Int = 0, dropped: Int = 0,
        restarts: Int = 0, concealedMs: Int, skippedMs: Int = 0
    ) {
        (self.received, self.lost, self.late, self.duplicate, self.refused, self.dropped, self.restarts) =
            (received, lost, late, duplicate, refused, dropped, restarts)
        (self.concealedMs, self.skippedMs) = (concealedMs, skippedMs)
    }
    init(_ s: JitterBuffer.Statistics) {
        self.init(
            received: s.packetsReceived, lost: s.packetsLost, late: s.packetsLate, duplicate: s.packetsDuplicate,
            refused: s.packetsRefused, dropped: s.packetsDropped, restarts: s.restarts,
            concealedMs: s.concealedMilliseconds, skippedMs: s.skippedMilliseconds)
    }
    var description: String {
        "rcv \(received) lost \(lost) late \(late) dup \(duplicate) refused \(refused) dropped \(dropped) "
            + "restarts \(restarts) concealed \(concealedMs) skipped \(skippedMs)"
    }
}

/// The playing blocks of `pulls` carry consecutive RTP timestamps (mod 2^32) from `first`, each
/// block continuing the previous one; the timeline moves on past a missing packet only across at
/// least as many concealed samples: the 20 ms block stream is gap-free.
func expectContinuous(_ trace: Trace, from first: Int64, pulls: Range<Int>? = nil) {
    var next = first
    var concealed: Int64 = 0
    for case let block? in trace.blocks[pulls ?? trace.blocks.indices] {
        for t in block {
            if t < 0 {
                concealed += 1
                continue
            }
            let skipped = (t - next) & 0xFFFF_FFFF
            #expect(skipped <= concealed, "sample timestamp \(t), expected \(next) after \(concealed) concealed")
            next = t + 1
            concealed = 0
        }
    }
}

/// Tables of packet schedules (8 kHz, 20 ms packets from sequence 100, timestamp 5000, one every
/// 20 ms from t = 0; pulls at 10, 30, 50… ms), each with the exact answer to every pull and the
/// exact counters. Tokens: see `Trace`.
@Suite("Jitter buffer")
struct JitterBufferTests {
    /// In order: playout starts at the first pull (target 20 ms), every packet plays once, and the
    /// end of the stream is three blocks of waiting, then a pause.
    @Test func inOrder() throws {
        let t = try play(stream(count: 10), pulls: 14, configuration: g711)
        #expect(t.tokens == seqs(100...109) + times(3, "c20") + ["f"])
        #expect(Counts(t.statistics) == Counts(received: 10, concealedMs: 60))
        #expect(t.levels.prefix(10) == ArraySlice(times(10, "").map { _ in 20 }))
        #expect(t.statistics.targetMilliseconds == 20 && t.statistics.jitter == 0)
        #expect(t.results == times(10, "").map { _ in JitterBuffer.InsertResult.accepted })
        expectContinuous(t, from: 5000)
    }

    /// The sender's second packet starts inside its first (its timestamp steps by 108 of 160:
    /// GStreamer's first Opus packet does this, by its encoder's pre-skip). Sequence numbers show
    /// nothing missing: every packet plays, in order, none is late, lost or concealed.
    @Test func shortFirstTimestampStep() throws {
        var s = stream(count: 10)
        for k in 1..<10 { s[k].timestamp -= 52 }
        let t = try play(s, pulls: 14, configuration: g711)
        #expect(t.tokens == seqs(100...109) + times(3, "c20") + ["f"])
        #expect(Counts(t.statistics) == Counts(received: 10, concealedMs: 60))
    }

    /// Packets 10 and 30 each arrive after the `n` packets that follow them (5 ms after the last).
    /// n = 1: the wait for packet 110 (the buffer was empty) is enough and it plays. n ≥ 2: 110 is
    /// declared lost (FEC offered from 111) and arrives late, which raises the target to
    /// 20 + 20·n + 5 ms; packet 130 is then waited for (n − 1 blocks) and plays.
    @Test(arguments: 1...5)
    func reordered(by n: Int) throws {
        var s = stream(count: 40)
        s[10].arrivalMs = Int64(10 + n) * 20 + 5
        s[30].arrivalMs = Int64(30 + n) * 20 + 5
        let t = try play(s, pulls: 45, configuration: g711)
        let expected: [String]
        let concealed: Int
        if n == 1 {
            expected = seqs(100...109) + ["c20"] + seqs(110...139) + times(3, "c20") + ["f"]
            concealed = 20 + 60
        } else {
            let trailing = 5 - n  // pulls left after 139
            expected =
                seqs(100...109) + ["c20", "c20+111"] + seqs(111...129) + times(n - 1, "c20") + seqs(130...139)
                + times(trailing, "c20")
            concealed = 40 + 20 * (n - 1) + 20 * trailing
        }
        #expect(t.tokens == expected)
        #expect(
            Counts(t.statistics)
                == Counts(received: 40, lost: n == 1 ? 0 : 1, late: n == 1 ? 0 : 1, concealedMs: concealed))
        #expect(t.statistics.targetMilliseconds == 20 + 20 * n + 5)
        #expect(t.results.filter { $0 == .late }.count == (n == 1 ? 0 : 1))
        expectContinuous(t, from: 5000 + 30 * 160, pulls: (n == 1 ? 31 : 31 + n - 1)..<(41 + n - 1))
    }

    /// Every packet twice (3 ms apart) and packet 105 once more long after it played: each copy is
    /// counted and ignored.
    @Test func duplicated() throws {
        var d: [Sent] = []
        for p in stream(count: 12) {
            d.append(p)
            var q = p
            q.arrivalMs += 3
            d.append(q)
        }
        var again = d[10]
        again.arrivalMs = 200
        d.append(again)
        let t = try play(d, pulls: 14, configuration: g711)
        #expect(t.tokens == seqs(100...111) + times(2, "c20"))
        #expect(Counts(t.statistics) == Counts(received: 25, duplicate: 13, concealedMs: 40))
        #expect(t.results.filter { $0 == .duplicate }.count == 13)
    }

    /// 5 % and 20 % random loss (fixed seed; the first 3 and last 4 packets kept) with a 60 ms
    /// minimum delay. The expected tokens are derived from the loss pattern by the rule alone: a
    /// lost packet is concealed in its own block (FEC from the next one when that one is there) if
    /// the newest packet arrived is at least 60 ms ahead of it; otherwise the buffer waits a block
    /// (one more packet arrives before each later pull). Nothing is late.
    @Test(arguments: [(5, 5), (20, 20)])
    func randomLoss(percent: Int, expectedLost: Int) throws {
        var rng = SeededRandom(seed: 42)
        var c = g711
        c.minimumDelayMilliseconds = 60
        let all = stream(count: 100)
        let present = (0..<100).map { $0 < 3 || $0 > 95 || Int.random(in: 0..<100, using: &rng) >= percent }
        let t = try play(all.indices.filter { present[$0] }.map { all[$0] }, pulls: 106, configuration: c)
        var expected = ["f", "f"]
        var ahead = 2  // packets up to k + ahead have arrived at the pull for packet k
        var waits = 0
        for k in 0..<100 {
            if present[k] {
                expected.append("\(100 + k)")
                continue
            }
            while !(1...ahead).contains(where: { k + $0 < 100 && present[k + $0] && $0 + 1 >= 3 }) {
                expected.append("c20")
                ahead += 1
                waits += 1
            }
            expected.append("c20" + (present[k + 1] ? "+\(101 + k)" : ""))
        }
        expected = Array((expected + times(3, "c20") + times(10, "f")).prefix(106))
        #expect(t.tokens == expected)
        #expect(present.filter { !$0 }.count == expectedLost)
        let trailing = min(3, 106 - 102 - waits)
        #expect(
            Counts(t.statistics)
                == Counts(
                    received: 100 - expectedLost, lost: expectedLost,
                    concealedMs: 20 * (expectedLost + waits + trailing)))
        expectContinuous(t, from: 5000)
    }

    /// Packets 108–110 lost. At the 20 ms minimum the buffer is empty at 108's turn: it waits
    /// three blocks, pauses, and resumes at 111 (the waits stood for the lost audio, so no delay is
    /// added). At 80 ms the later packet is there: three blocks of concealment, FEC for the last.
    @Test func burstOfThreeLost() throws {
        var burst = stream(count: 20)
        burst.removeSubrange(8...10)
        let low = try play(burst, pulls: 22, configuration: g711)
        #expect(low.tokens == seqs(100...107) + times(3, "c20") + seqs(111...119) + times(2, "c20"))
        #expect(Counts(low.statistics) == Counts(received: 17, lost: 3, concealedMs: 100))
        expectContinuous(low, from: 5000, pulls: 0..<8)
        expectContinuous(low, from: 5000 + 11 * 160, pulls: 11..<20)  // resumed at 111
        var c = g711
        c.minimumDelayMilliseconds = 80
        let high = try play(burst, pulls: 26, configuration: c)
        #expect(
            high.tokens
                == times(3, "f") + seqs(100...107) + ["c20", "c20", "c20+111"] + seqs(111...119) + times(3, "c20"))
        #expect(Counts(high.statistics) == Counts(received: 17, lost: 3, concealedMs: 120))
        expectContinuous(high, from: 5000)
    }

    /// Packet 108 arrives 150 ms late: one wait (empty buffer), then it is concealed with FEC from
    /// 109, and when it comes it is dropped and counted, and raises the target to 20 + 150 ms.
    @Test func lateBeyondTheTarget() throws {
        var late = stream(count: 20)
        late[8].arrivalMs += 150
        let t = try play(late, pulls: 22, configuration: g711)
        #expect(t.tokens == seqs(100...107) + ["c20", "c20+109"] + seqs(109...119) + ["c20"])
        #expect(Counts(t.statistics) == Counts(received: 20, lost: 1, late: 1, concealedMs: 60))
        #expect(t.statistics.targetMilliseconds == 170)
        #expect(t.results.filter { $0 == .late }.count == 1)
    }

    /// Sequence numbers wrap 65535 → 0 and timestamps 2^32 − 1 → 0 in the same stream.
    @Test func sequenceAndTimestampWrap() throws {
        let t = try play(
            stream(count: 10, sequence: 65532, timestamp: UInt32.max - 479), pulls: 12, configuration: g711)
        #expect(t.tokens == ["65532", "65533", "65534", "65535"] + seqs(0...5) + times(2, "c20"))
        #expect(Counts(t.statistics) == Counts(received: 10, concealedMs: 40))
        #expect(t.statistics.extendedHighestSequence == 65536 + 5)
        expectContinuous(t, from: Int64(UInt32.max - 479))  // unwrapped by the fake decoder's Int64
    }

    /// A timestamp jump of ±10 s at packet 110 (arrivals regular): the stream restarts there and
    /// plays on without a gap or a loss.
    @Test(arguments: [true, false])
    func timestampJump(forward: Bool) throws {
        var jump = stream(count: 20)
        for k in 10..<20 { jump[k].timestamp = forward ? jump[k].timestamp &+ 80000 : jump[k].timestamp &- 80000 }
        let t = try play(jump, pulls: 22, configuration: g711)
        #expect(t.tokens == seqs(100...119) + times(2, "c20"))
        #expect(Counts(t.statistics) == Counts(received: 20, restarts: 1, concealedMs: 40))
        #expect(t.results[10] == .restarted(.timestampJump))
    }

    /// A sequence number 4000 ahead restarts the stream; 2000 ahead (a loss of 1999) does not.
    @Test func sequenceJump() throws {
        var s = stream(count: 20)
        for k in 10..<20 { s[k].sequence &+= 4000 }
        let t = try play(s, pulls: 20, configuration: g711)
        #expect(t.tokens == seqs(100...109) + seqs(4110...4119))
        #expect(t.results[10] == .restarted(.sequenceJump))
        #expect(Counts(t.statistics) == Counts(received: 20, restarts: 1, concealedMs: 0))
        var small = stream(count: 20)
        for k in 10..<20 { small[k].sequence &+= 2000 }
        let u = try play(small, pulls: 20, configuration: g711)
        #expect(u.tokens == seqs(100...109) + seqs(2110...2119))
        #expect(Counts(u.statistics) == Counts(received: 20, lost: 2000, concealedMs: 0))
    }

    /// A new SSRC at 200 ms restarts the stream (new sequence and timestamp bases); a straggler of
    /// the old SSRC afterwards is late, not another restart.
    @Test func ssrcChange() throws {
        var s = stream(count: 10) + stream(count: 10, sequence: 7, timestamp: 999, startMs: 200, ssrc: 0x9999)
        var straggler = s[9]
        straggler.arrivalMs = 250
        s.append(straggler)
        let t = try play(s, pulls: 22, configuration: g711)
        #expect(t.tokens == seqs(100...109) + seqs(7...16) + times(2, "c20"))
        #expect(Counts(t.statistics) == Counts(received: 21, late: 1, restarts: 1, concealedMs: 40))
        #expect(t.results[10] == .restarted(.newSource))
        #expect(t.results[13] == .late)
    }

    /// 10, 30 and 60 ms Opus-clock packets become a gap-free stream of 20 ms blocks: two packets per
    /// block, one then one then none, one then none then none.
    @Test(arguments: [
        (10, ["100 101", "102 103", "104 105", "106 107", "108 109", "110 111"]),
        (30, ["100", "101", "=", "102", "103", "="]),
        (60, ["100", "=", "=", "101", "=", "="]),
    ])
    func packetDurations(ms: Int, firstSix: [String]) throws {
        let t = try play(
            stream(count: 240 / ms, ms: ms, rate: 48000), pulls: 14,
            configuration: JitterBuffer.Configuration(clockRate: 48000))
        #expect(Array(t.tokens.prefix(6)) == firstSix)
        #expect(Array(t.tokens.prefix(12).suffix(6)).allSatisfy { $0 != "f" && !$0.hasPrefix("c") })
        #expect(Array(t.tokens.suffix(2)) == ["c20", "c20"])
        #expect(Counts(t.statistics) == Counts(received: 240 / ms, concealedMs: 40))
        expectContinuous(t, from: 5000)
        #expect(t.blocks.prefix(12).allSatisfy { $0?.count == 960 && $0!.allSatisfy { $0 >= 0 } })
    }

    /// Packets 50–149 arrive up to 60 ms late ((37·k) mod 61 ms); then calm. The target rises to
    /// 20 + 60 ms at once and the level follows as packets go missing (one given up as lost, then
    /// late); after the window (250 packets) forgets, the target drops to 20 ms and the level
    /// shrinks by one packet per 25 blocks (500 ms) to it.
    @Test func jitterRaisesTheTargetAndCalmLowersIt() throws {
        var jit = stream(count: 300)
        for k in 50..<150 { jit[k].arrivalMs += Int64((k * 37) % 61) }
        jit += stream(count: 500, sequence: 400, timestamp: 5000 + 160 * 300, startMs: 6000)
        let t = try play(jit, pulls: 800, configuration: g711)
        #expect(
            Array(t.tokens.prefix(62))
                == seqs(100...149) + ["c20", "150", "c20", "c20"] + seqs(152...155) + ["c20"] + seqs(156...158))
        #expect(!t.tokens[62..<800].contains { $0.hasPrefix("c") || $0 == "f" })
        #expect(
            Counts(t.statistics)
                == Counts(received: 800, lost: 1, late: 1, dropped: 3, concealedMs: 80, skippedMs: 60))
        #expect(t.targets[49] == 20 && t.targets[60] == 79 && t.targets[150] == 80 && t.targets[380] == 78)
        #expect(t.targets[400] == 20 && t.targets[799] == 20)
        #expect(t.levels[49] == 20 && t.levels[60] == 40 && t.levels[100] == 60 && t.levels[150] == 80)
        #expect(t.levels[399] == 80 && t.levels[430] == 60 && t.levels[450] == 40 && t.levels[480] == 20)
        #expect(t.levels[799] == 20)
        // Growth is fast (80 ms within 100 blocks of the first late packet), shrinking slow: no
        // two steps down closer than 25 blocks.
        let downs = (1..<800).filter { t.levels[$0] < t.levels[$0 - 1] && $0 > 300 }
        #expect(downs.count == 3 && zip(downs, downs.dropFirst()).allSatisfy { $1 - $0 >= 25 })
    }

    /// A sender's silence: 2 blocks (sequence numbers continue) are cut at the talk spurt so the
    /// delay stays at target; 1 s (with the marker bit) pauses the stream, which refills and resumes.
    @Test func talkSpurts() throws {
        var short = stream(count: 10)
        short += stream(count: 10, sequence: 110, timestamp: 5000 + 160 * 12, startMs: 240)
        let t = try play(short, pulls: 24, configuration: g711)
        #expect(t.tokens == seqs(100...109) + times(2, "c20") + seqs(110...119) + times(2, "c20"))
        #expect(Counts(t.statistics) == Counts(received: 20, concealedMs: 80, skippedMs: 40))
        var long = stream(count: 10)
        long += stream(count: 10, sequence: 110, timestamp: 5000 + 160 * 60, startMs: 1200).enumerated().map {
            var p = $1
            p.marker = $0 == 0
            return p
        }
        let u = try play(long, pulls: 75, configuration: g711)
        #expect(
            u.tokens
                == seqs(100...109) + times(3, "c20") + times(47, "f") + seqs(110...119) + times(3, "c20") + ["f", "f"])
        #expect(Counts(u.statistics) == Counts(received: 20, concealedMs: 120))
    }
}

@Suite("Jitter buffer misuse")
struct JitterBufferMisuseTests {
    static func changed(_ change: (inout JitterBuffer.Configuration) -> Void) -> JitterBuffer.Configuration {
        var c = g711
        change(&c)
        return c
    }

    @Test(arguments: [
        (changed { $0.clockRate = 8050 }, JitterBuffer.ConfigurationError.clockRate(8050)),
        (changed { $0.clockRate = 0 }, .clockRate(0)),
        (changed { $0.maximumPayloadByteCount = 0 }, .maximumPayloadByteCount(0)),
        (changed { $0.packetCapacity = 2 }, .packetCapacity(2)),
        (changed { $0.minimumDelayMilliseconds = 10 }, .delayRange(minimumMilliseconds: 10, maximumMilliseconds: 200)),
        (changed { $0.maximumDelayMilliseconds = 19 }, .delayRange(minimumMilliseconds: 20, maximumMilliseconds: 19)),
        (changed { $0.delayWindowPacketCount = 0 }, .delayWindowPacketCount(0)),
        (changed { $0.shrinkAfterBlocks = 0 }, .shrinkAfterBlocks(0)),
        (changed { $0.pauseAfterBlocks = 0 }, .pauseAfterBlocks(0)),
        (changed { $0.jumpThresholdMilliseconds = 200 }, .jumpThresholdMilliseconds(200)),
    ])
    func badConfigurationsAreRefused(
        configuration: JitterBuffer.Configuration, error: JitterBuffer.ConfigurationError
    ) {
        #expect(throws: error) { _ = try JitterBuffer(configuration: configuration) }
    }

    /// Too large, too short or too long, and no free slot: refused, counted, nothing else changes.
    /// RFC 4733 events interleave with the audio and take sequence numbers: noted as another
    /// payload's, they are not losses, whether noted before playout passes them or after (a late
    /// event packet takes back the loss); a duplicate note changes nothing; a true gap still counts.
    @Test func otherPayloadsAreNotLosses() throws {
        var jb = try JitterBuffer(configuration: g711)
        // Audio on sequence numbers 100 101 104 105 107 108 110; events on 102 103 (noted at once),
        // 106 (noted after playout passed it, twice); 109 is lost.
        let audio: [UInt16] = [100, 101, 104, 105, 107, 108, 110]
        for (k, seq) in audio.enumerated() {
            let bytes = [UInt8](repeating: 0xFF, count: 160)
            _ = bytes.withUnsafeBytes {
                jb.insert(
                    sequence: seq, timestamp: UInt32(k) * 160, ssrc: 7, marker: k == 0, payload: $0, sampleCount: 160,
                    arrival: Int64(k) * 20_000_000)
            }
            if seq == 101 {
                jb.noteOtherPayload(sequence: 102, ssrc: 7)
                jb.noteOtherPayload(sequence: 103, ssrc: 7)
                jb.noteOtherPayload(sequence: 103, ssrc: 9)  // another stream's: nothing
            }
            _ = jb.pull()
        }
        #expect(jb.statistics.packetsLost == 2)  // 106 (not noted yet) and 109
        jb.noteOtherPayload(sequence: 106, ssrc: 7)
        jb.noteOtherPayload(sequence: 106, ssrc: 7)
        #expect(jb.statistics.packetsLost == 1)  // 109 only
        #expect(jb.statistics.packetsReceived == audio.count)
    }

    @Test func refusals() throws {
        var c = g711
        c.packetCapacity = 4
        c.maximumPayloadByteCount = 6
        var jb = try JitterBuffer(configuration: c)
        func insert(_ seq: UInt16, bytes: Int = 6, samples: Int = 160) -> JitterBuffer.InsertResult {
            [UInt8](repeating: 0, count: bytes).withUnsafeBytes {
                jb.insert(
                    sequence: seq, timestamp: UInt32(seq) * 160, ssrc: 1, marker: false, payload: $0,
                    sampleCount: samples, arrival: 0)
            }
        }
        #expect(insert(1, bytes: 7) == .refused(.tooLarge))
        #expect(insert(1, samples: 79) == .refused(.invalidDuration))
        #expect(insert(1, samples: 961) == .refused(.invalidDuration))
        #expect((1...4).map { insert(UInt16($0)) } == times(4, "").map { _ in .accepted })
        #expect(insert(5) == .refused(.full))
        #expect(insert(0, bytes: 0) == .refused(.full))
        let s = jb.statistics
        #expect(s.packetsReceived == 9 && s.packetsRefused == 5 && s.packetsLost == 0)
    }

    /// The payload is copied at insert: changing the caller's buffer afterwards changes nothing.
    @Test func payloadIsCopied() throws {
        var jb = try JitterBuffer(configuration: g711)
        var bytes = payload(7, 700)
        _ = bytes.withUnsafeBytes {
            jb.insert(sequence: 7, timestamp: 700, ssrc: 1, marker: true, payload: $0, sampleCount: 160, arrival: 0)
        }
        bytes = [UInt8](repeating: 0xEE, count: 6)
        #expect(jb.pull() == JitterBuffer.Block(kind: .playing, timestamp: 700, itemCount: 1))
        guard case .packet(let p) = jb.item(0) else {
            Issue.record("expected a packet")
            return
        }
        #expect(decodePayload(p.payload) == (7, 700) && p.marker && p.sampleCount == 160)
        #expect(bytes[0] == 0xEE)
    }

    /// Before any packet, and after `reset`, pulls answer idle; a reset is not a restart.
    @Test func idleAndReset() throws {
        var jb = try JitterBuffer(configuration: g711)
        #expect(jb.pull().kind == .idle)
        _ = payload(1, 1).withUnsafeBytes {
            jb.insert(sequence: 1, timestamp: 1, ssrc: 1, marker: false, payload: $0, sampleCount: 160, arrival: 0)
        }
        jb.reset()
        #expect(jb.pull().kind == .idle)
        #expect(jb.statistics.restarts == 0 && jb.statistics.packetsReceived == 1)
    }
}
