import ChamadeCore
import ChamadeDSP
import ChamadeEngine
@testable import ChamadeMedia
import ChamadeTesting
import Foundation
import Testing

/// RTP legs end to end over real UDP sockets on 127.0.0.1, with the real clock and media workers:
/// a test peer plays the far end, a participant of the room plays the agent.
@Suite("RTP legs", .serialized)
struct RTPLegTests {
    typealias S = LegTestSupport

    struct Setup {
        let engine: Engine
        let media: MediaRuntime
        let room: Room
        let agent: Participant
        let peer: Peer
        let leg: RTPLeg
        let events: S.Events

        init(codec: MediaCodec, ports: ClosedRange<Int>, timeout: Double = 30) throws {
            engine = Engine(configuration: .init(clock: .realTime))
            media = try MediaRuntime(configuration: .init(bindAddress: "127.0.0.1", ports: ports, workerCount: 1))
            room = try engine.createRoom(nativeRate: codec.nativeRate)
            agent = try room.join(rate: codec.nativeRate, receiving: true)
            peer = try Peer()
            let events = S.Events()
            self.events = events
            leg = try media.openLeg(room: room, configuration: RTPLegConfiguration(codec: codec, remote: peer.endpoint, timeoutSeconds: timeout)) {
                events.add($0)
            }
            engine.start()
        }

        func close() {
            leg.close()
            media.shutdown()
            engine.shutdown()
        }
    }

    static func sleep(_ seconds: Double) { Foundation.Thread.sleep(forTimeInterval: seconds) }

    /// Fits of the tone over consecutive 100 ms windows of what the agent heard, from the first
    /// loud sample on (skipping `skip` samples): the median SNR and level judge the leg, so one
    /// window disturbed by the test machine's scheduling (the peer sends from a test thread) does
    /// not decide alone; every window must still hold the tone (the callers ask the worst window
    /// for more than 3 dB: a packet of the peer's sent late enough on a loaded machine is
    /// concealed, and a window of it measured 5.5 dB once in CI).
    static func windows(_ heard: [Int16], frequency: Double, rate: Int, skip: Int, count: Int) throws -> (snr: Double, amplitude: Double, worst: Double) {
        let start = try #require(heard.firstIndex { abs($0) > 1000 }) + skip
        let n = rate / 10
        try #require(heard.count >= start + n * count, "heard \(heard.count) samples")
        let fits = (0..<count).map { w in
            Analysis.fitSine(heard[(start + w * n)..<(start + (w + 1) * n)].map(Double.init), frequency: frequency, sampleRate: rate)
        }
        let snrs = fits.map(\.snrDB).sorted()
        let amplitudes = fits.map(\.amplitude).sorted()
        return (snrs[count / 2], amplitudes[count / 2], snrs[0])
    }

    /// Paces `count` packets 20 ms apart, `make(k)` giving each payload.
    static func stream(_ setup: Setup, count: Int, payloadType: UInt8, _ make: (Int) -> [UInt8]) {
        var next = MonotonicClock.now()
        for k in 0..<count {
            setup.peer.send(payloadType: payloadType, payload: make(k), marker: k == 0, to: setup.leg.local)
            setup.peer.timestamp &+= UInt32(setup.leg.configuration.codec.clockRate / 50)
            next += 20_000_000
            MonotonicClock.sleep(until: next)
        }
    }

    @Test(arguments: [MediaCodec.pcmu, .pcma])
    func g711BothWays(codec: MediaCodec) throws {
        let s = try Setup(codec: codec, ports: 46000...46099)
        defer { s.close() }
        let law: G711.Law = codec == .pcmu ? .mu : .a
        let listener = S.Listener(s.agent)
        // In: 1.5 s of a 440 Hz tone at −12 dBFS.
        let tone = S.tone(440, rate: 8000, count: 160 * 75)
        Self.stream(s, count: 75, payloadType: codec.defaultPayloadType) { k in tone[(160 * k)..<(160 * k + 160)].map(law.encode) }
        Self.sleep(0.2)
        listener.stop()
        let fit = try Self.windows(listener.heard, frequency: 440, rate: 8000, skip: 800, count: 10)
        // G.711 itself keeps about 38 dB SNR at this level; nothing in the leg may cost more than 3 dB of that.
        #expect(fit.snr > 35)
        #expect(fit.worst > 3)
        #expect(abs(20 * log10(fit.amplitude / 8000)) < 0.2)
        #expect(s.leg.statistics.packetsReceived == 75)
        #expect(s.leg.statistics.packetsLost == 0)

        // Out: the agent talks 1 s, is silent 0.5 s, talks 0.5 s; the leg sends 20 ms packets of it,
        // nothing in the silence, the marker on each talk spurt's first packet only.
        _ = s.peer.drain()
        let out = S.tone(1000, rate: 8000, count: 8000)
        _ = out.withUnsafeBytes { s.agent.push($0) }
        Self.sleep(1.5)
        _ = Array(out[0..<4000]).withUnsafeBytes { s.agent.push($0) }
        Self.sleep(0.8)
        let packets = s.peer.drain().filter { $0.header.payloadType == codec.defaultPayloadType }
        #expect((73...77).contains(packets.count), "\(packets.count) packets for 1.5 s of audio")
        for (a, b) in zip(packets, packets.dropFirst()) {
            #expect(b.header.sequenceNumber == a.header.sequenceNumber &+ 1)
            let step = b.header.timestamp &- a.header.timestamp
            #expect(step == 160 || (b.header.marker && step > 160), "timestamp step \(step)")
            #expect(b.header.marker == (step > 160))
        }
        #expect(packets.first?.header.marker == true)
        #expect(packets.filter(\.header.marker).count == 2)
        let decoded = packets.prefix(50).flatMap { $0.payload.map(law.decode) }.map(Double.init)
        let fitOut = Analysis.fitSine(Array(decoded.dropFirst(400)), frequency: 1000, sampleRate: 8000)
        #expect(fitOut.snrDB > 35)
    }

    @Test func opusBothWays() throws {
        let s = try Setup(codec: .opus, ports: 46100...46199)
        defer { s.close() }
        var encoder = try Opus.Encoder(sampleRate: .hz48000)
        let tone = S.tone(440, rate: 48000, count: 960 * 100)
        var packets: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 1500)
        for k in 0..<100 {
            let n = try tone[(960 * k)..<(960 * k + 960)].withUnsafeBufferPointer { b in
                try buffer.withUnsafeMutableBytes { try encoder.encode(b, into: $0) }
            }
            packets.append(Array(buffer[0..<n]))
        }
        let listener = S.Listener(s.agent)
        Self.stream(s, count: 100, payloadType: 111) { packets[$0] }
        Self.sleep(0.2)
        listener.stop()
        let fit = try Self.windows(listener.heard, frequency: 440, rate: 48000, skip: 9600, count: 10)
        #expect(fit.snr > 25)
        #expect(fit.worst > 3)
        #expect(abs(20 * log10(fit.amplitude / 8000)) < 1)

        _ = s.peer.drain()
        let out = S.tone(1000, rate: 48000, count: 48000)
        _ = out.withUnsafeBytes { s.agent.push($0) }
        Self.sleep(1.3)
        let sent = s.peer.drain().filter { $0.header.payloadType == 111 }
        #expect((48...52).contains(sent.count))
        var decoder = try Opus.Decoder(sampleRate: .hz48000)
        var pcm: [Int16] = []
        var block = [Int16](repeating: 0, count: 960)
        for p in sent {
            try p.payload.withUnsafeBytes { bytes in try block.withUnsafeMutableBufferPointer { try decoder.decode(bytes, into: $0) } }
            pcm += block
            #expect(p.header.timestamp &- sent[0].header.timestamp == UInt32(960 * (pcm.count / 960 - 1)))
        }
        let fitOut = Analysis.fitSine(Array(pcm[4800..<(pcm.count - 4800)]).map(Double.init), frequency: 1000, sampleRate: 48000)
        #expect(fitOut.snrDB > 25)
    }

    @Test func telephoneEventsBothWays() throws {
        let s = try Setup(codec: .pcmu, ports: 46200...46299)
        defer { s.close() }
        // In: "5" then "#", each with four updates and its end packet three times; one report each.
        for (code, digitStart) in [(UInt8(5), UInt32(10_000)), (11, 12_000)] {
            for k in 1...5 {
                let end = k == 5
                let event = TelephoneEvent(event: code, end: end, duration: UInt16(160 * k))
                var payload = [UInt8](repeating: 0, count: 4)
                _ = payload.withUnsafeMutableBytes { try? event.write(into: $0) }
                for _ in 0..<(end ? 3 : 1) {
                    s.peer.send(payloadType: 101, payload: payload, marker: k == 1, timestamp: digitStart, to: s.leg.local)
                }
                Self.sleep(0.02)
            }
        }
        Self.sleep(0.5)
        #expect(s.events.all == [.digit("5", durationMilliseconds: 100), .digit("#", durationMilliseconds: 100)])

        // Out: "12" as RFC 4733 events.
        _ = s.peer.drain()
        let queued = try s.leg.sendDigits("12")
        #expect(queued == 2 * 160)
        Self.sleep(0.6)
        let events = s.peer.drain().filter { $0.header.payloadType == 101 }
        #expect(events.count == 14)
        let parsed = events.map { p in (p, p.payload.withUnsafeBytes { try! TelephoneEvent.parse($0) }) }
        for (digit, group) in [(UInt8(1), parsed.prefix(7)), (2, parsed.dropFirst(7).prefix(7))] {
            #expect(group.allSatisfy { $0.1.event == digit })
            #expect(Set(group.map(\.0.header.timestamp)).count == 1)
            #expect(group.map(\.1.duration) == [160, 320, 480, 640, 800, 800, 800])
            #expect(group.map(\.1.end) == [false, false, false, false, true, true, true])
            #expect(group.map(\.0.header.marker) == [true, false, false, false, false, false, false])
        }
        #expect(throws: RTPLegError.self) { try s.leg.sendDigits("12x") }
        #expect(throws: RTPLegError.self) { try s.leg.sendDigits("") }
    }

    @Test func timeoutEndsTheLeg() throws {
        let s = try Setup(codec: .pcmu, ports: 46300...46399, timeout: 0.6)
        defer { s.close() }
        Self.stream(s, count: 20, payloadType: 0) { _ in [UInt8](repeating: 0xFF, count: 160) }
        // Alive while packets flow (0.4 s), lost 0.6 s after the last one.
        #expect(s.events.all.isEmpty)
        Self.sleep(0.4)
        #expect(s.events.all.isEmpty)
        Self.sleep(0.5)
        #expect(s.events.all == [.timedOut])
        #expect(s.leg.isFinished)
    }

    @Test func malformedPacketsAreCountedAndChangeNothing() throws {
        let s = try Setup(codec: .pcmu, ports: 46400...46499)
        defer { s.close() }
        let listener = S.Listener(s.agent)
        let tone = S.tone(440, rate: 8000, count: 160 * 75)
        let junk: [[UInt8]] = [
            [],  // empty
            [0x80, 0x00, 0x00],  // truncated header
            [0x40] + [UInt8](repeating: 0, count: 20),  // version 1
            [0xC0] + [UInt8](repeating: 0, count: 20),  // version 3
            [0x8F, 0x00] + [UInt8](repeating: 0, count: 14),  // 15 CSRCs past the end
            [0xA0, 0x00] + [UInt8](repeating: 0, count: 18) + [200],  // padding longer than the packet
            [0x90, 0x00] + [UInt8](repeating: 0, count: 10) + [0xBE, 0xDE, 0x00, 0x40],  // extension past the end
            [0x80, 0x60] + [UInt8](repeating: 0, count: 30),  // unknown payload type 96
            [UInt8](repeating: 0x80, count: 1600),  // oversized junk
        ]
        var next = MonotonicClock.now()
        for k in 0..<75 {
            s.peer.send(payloadType: 0, payload: tone[(160 * k)..<(160 * k + 160)].map(G711.Law.mu.encode), to: s.leg.local)
            s.peer.timestamp &+= 160
            if k % 8 == 3 { s.peer.sendRaw(junk[(k / 8) % junk.count], to: s.leg.local) }
            next += 20_000_000
            MonotonicClock.sleep(until: next)
        }
        Self.sleep(0.2)
        listener.stop()
        let stats = s.leg.statistics
        #expect(stats.packetsInvalid == (0..<75).filter { $0 % 8 == 3 }.count)
        #expect(stats.packetsReceived == 75)
        #expect(stats.packetsLost == 0)
        let fit = try Self.windows(listener.heard, frequency: 440, rate: 8000, skip: 800, count: 10)
        #expect(fit.snr > 35)
        #expect(fit.worst > 3)
    }

    @Test func urlParsing() throws {
        let u = try RTPURL(parsing: "rtp://127.0.0.1:4000?codec=opus&pt=96&dtmf_pt=100&name=Board%20room")
        #expect(u.host == "127.0.0.1" && u.port == 4000 && u.codec == .opus && u.payloadType == 96)
        #expect(u.telephoneEventPayloadType == 100 && u.name == "Board room")
        let d = try RTPURL(parsing: "rtp://10.0.0.1:5004?codec=pcma")
        #expect(d.payloadType == 8 && d.telephoneEventPayloadType == 101 && d.name == "Meeting")
        for bad in [
            "http://1.2.3.4:5?codec=opus", "rtp://1.2.3.4?codec=opus", "rtp://1.2.3.4:0?codec=opus", "rtp://1.2.3.4:70000?codec=opus",
            "rtp://1.2.3.4:5", "rtp://1.2.3.4:5?codec=g729", "rtp://1.2.3.4:5?codec=opus&pt=200", "rtp://:5?codec=opus",
            "rtp://[::1]:5?codec=opus", "rtp://1.2.3.4:5?codec=pcmu&pt=101",
        ] {
            #expect(throws: RTPURL.Invalid.self, "\(bad)") { try RTPURL(parsing: bad) }
        }
    }
}
