import ChamadeCore
import ChamadeDSP
import ChamadeEngine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One leg's media, owned by one media worker thread: both sockets, the jitter buffer, the codec
/// states, the RTP sender's sequence and timeline, RTCP, DTMF both ways, the timeout.
///
/// Each worker step (every 20 ms, half a tick after the engine's) it drains the sockets (arrival
/// times from the kernel), pulls one 20 ms block from the jitter buffer into the room, and turns the
/// room's blocks of mix-minus for the leg into RTP. Nothing in a step allocates.
final class LegPipeline {
    let shared: LegShared
    let events: LegEventSink
    let configuration: RTPLegConfiguration
    let participant: Participant
    let rtp: UDPSocket
    let rtcp: UDPSocket
    private let playout: InboundPlayout
    private let encoder: StreamEncoder
    private var sender: TelephoneEventSender
    private var digitsIn = TelephoneEventReceiver()
    private var receiveStatistics = RTPReceiveStatistics()
    private var digitConsumer: SPSCRing<UInt8>.Consumer

    /// The leg's audio rate (the participant's) and RTP clock.
    let rate: SampleRate
    let clockRate: Int
    /// RTP units per 20 ms block.
    let unitsPerBlock: Int

    // Scratch, allocated once.
    private let datagram: UnsafeMutableRawBufferPointer
    private let outgoing: UnsafeMutableRawBufferPointer
    private let payload: UnsafeMutableRawBufferPointer
    private let mixBlock: UnsafeMutableBufferPointer<Int16>
    private let cname: UnsafeMutableRawBufferPointer

    // Sending.
    private let ssrc: UInt32
    private var sequence: UInt16
    private var timestamp: UInt32
    private var talking = false
    /// Blocks per packet sent (`packetMilliseconds` / 20), and the packet being gathered.
    private let packetBlocks: Int
    private var gatheredBlocks = 0
    private var gatheredBytes = 0
    private var gatheredTimestamp: UInt32 = 0
    private var gatheredMarker = false
    private var sentPackets: UInt32 = 0
    private var sentOctets: UInt32 = 0
    private var nextReport: Int64
    private var rtcpRemote: Endpoint?

    // Receiving.
    private var remoteSSRC: UInt32?
    private var lastActivity: Int64
    private let start: Int64
    private var lastSenderReport: UInt32 = 0
    private var lastSenderReportArrival: Int64 = 0
    private var randomState: UInt64

    static let reportInterval: Int64 = 5_000_000_000

    init(shared: LegShared, events: LegEventSink, configuration: RTPLegConfiguration, participant: Participant, rtp: consuming UDPSocket,
         rtcp: consuming UDPSocket, rate: SampleRate, now: Int64) throws(RTPLegError) {
        self.shared = shared
        self.events = events
        self.configuration = configuration
        self.participant = participant
        self.rtp = rtp
        self.rtcp = rtcp
        self.rate = rate
        clockRate = configuration.codec.clockRate
        unitsPerBlock = clockRate / SampleRate.blocksPerSecond
        packetBlocks = configuration.packetMilliseconds / 20
        playout = try InboundPlayout(codec: configuration.codec, rate: rate)
        do throws(Opus.Error) {
            encoder = try StreamEncoder(codec: configuration.codec, rate: rate, opusSettings: configuration.opus)
        } catch {
            throw .codec("\(error)")
        }
        digitConsumer = shared.digitRing.takeConsumer()
        sender = try! TelephoneEventSender(clockRate: clockRate, payloadType: Int(configuration.telephoneEventPayloadType))
        datagram = .allocate(byteCount: 2048, alignment: 8)
        outgoing = .allocate(byteCount: 1500, alignment: 8)
        payload = .allocate(byteCount: 1400, alignment: 8)
        mixBlock = .allocate(capacity: rate.blockSampleCount)
        let name = Array(configuration.canonicalName.utf8.prefix(255))
        cname = .allocate(byteCount: max(1, name.count), alignment: 1)
        if name.isEmpty { cname[0] = UInt8(ascii: "-") } else { cname.copyBytes(from: name) }
        var g = SystemRandomNumberGenerator()
        ssrc = g.next()
        sequence = g.next()
        timestamp = g.next()
        randomState = g.next() | 1
        start = now
        lastActivity = now
        nextReport = now + Self.reportInterval / 2
    }

    deinit {
        datagram.deallocate()
        outgoing.deallocate()
        payload.deallocate()
        mixBlock.deallocate()
        cname.deallocate()
    }

    /// One 20 ms step. `realtimeOffset` converts the kernel's CLOCK_REALTIME arrival stamps to the
    /// monotonic clock.
    func step(now: Int64, realtimeOffset: Int64) {
        guard !shared.finished.load(ordering: .relaxed) else { return }
        receive(now: now, realtimeOffset: realtimeOffset)
        playInbound()
        sendOutbound()
        if now >= nextReport { sendReport(now: now, realtimeOffset: realtimeOffset) }
        publish()
        // On hold the far end sends nothing: the timeout waits, and counts from the resume.
        if !shared.receiving.load(ordering: .relaxed) { lastActivity = now }
        if now - lastActivity > configuration.timeoutNanoseconds {
            shared.finished.store(true, ordering: .relaxed)
            events.post(shared, .timedOut)
        }
    }

    // MARK: receiving

    /// Datagrams read per socket per step at most: 1.3 s of 20 ms packets; a flood waits in the
    /// kernel (and is dropped there) instead of stretching the step.
    static let receiveBudget = 64

    private func receive(now: Int64, realtimeOffset: Int64) {
        for _ in 0..<Self.receiveBudget {
            guard let d = rtp.receive(into: datagram) else { break }
            let arrival = d.arrivalRealtime != 0 ? d.arrivalRealtime - realtimeOffset : now
            takeRTP(d, arrival: arrival)
        }
        for _ in 0..<Self.receiveBudget {
            guard let d = rtcp.receive(into: datagram) else { break }
            let arrival = d.arrivalRealtime != 0 ? d.arrivalRealtime - realtimeOffset : now
            takeRTCP(d, arrival: arrival)
        }
    }

    private func invalid() { shared.counters.packetsInvalid.add(1, ordering: .relaxed) }

    private func takeRTP(_ d: UDPSocket.Datagram, arrival: Int64) {
        let bytes = UnsafeRawBufferPointer(rebasing: datagram[0..<d.byteCount])
        guard !d.truncated, let packet = try? RTPPacket.parse(bytes) else { return invalid() }
        let header = packet.header
        let body = UnsafeRawBufferPointer(rebasing: bytes[packet.payloadByteRange])
        if header.payloadType == configuration.telephoneEventPayloadType {
            guard let event = try? TelephoneEvent.parse(body) else { return invalid() }
            accept(from: d.source, arrival: arrival)
            // Its sequence number is no loss, for our counters and for our RTCP reports.
            playout.jitter.noteOtherPayload(sequence: header.sequenceNumber, ssrc: header.ssrc)
            receiveStatistics.recordSequence(header.sequenceNumber)
            if let report = digitsIn.receive(event, timestamp: header.timestamp) {
                shared.counters.eventsReceived.add(1, ordering: .relaxed)
                let digit = Character(Unicode.Scalar(report.digit))
                let ms = report.duration * 1000 / clockRate
                events.post(shared, .digit(digit, durationMilliseconds: ms))
            }
            return
        }
        guard header.payloadType == configuration.payloadType else { return invalid() }
        let units: Int
        if configuration.codec == .opus {
            guard let n = Opus.sampleCount(of: body, sampleRate: clockRate) else { return invalid() }
            units = n
        } else {
            units = body.count
        }
        // The durations the jitter buffer takes (10–120 ms); anything else is not audio we can play.
        guard units * 100 >= clockRate, units * 1000 <= 120 * clockRate else { return invalid() }
        accept(from: d.source, arrival: arrival)
        remoteSSRC = header.ssrc
        let arrivalUnits = UInt32(truncatingIfNeeded: (arrival - start) / 1000 * Int64(clockRate) / 1_000_000)
        receiveStatistics.record(sequence: header.sequenceNumber, timestamp: header.timestamp, arrival: arrivalUnits)
        playout.jitter.insert(
            sequence: header.sequenceNumber, timestamp: header.timestamp, ssrc: header.ssrc, marker: header.marker,
            payload: body, sampleCount: units, arrival: arrival)
    }

    /// A valid packet of this leg: it keeps the leg alive, and its source is where we send
    /// (symmetric RTP, which also follows a NAT rebinding).
    private func accept(from source: Endpoint, arrival: Int64) {
        lastActivity = max(lastActivity, arrival)
        if source != shared.remote { shared.setRemote(source) }
    }

    private func takeRTCP(_ d: UDPSocket.Datagram, arrival: Int64) {
        guard !d.truncated else { return invalid() }
        let bytes = UnsafeRawBufferPointer(rebasing: datagram[0..<d.byteCount])
        var parser = RTCPCompoundParser(bytes)
        var sawReport = false
        while true {
            let next: RTCPPacket?
            do throws(RTCPCompoundParser.ParseError) { next = try parser.next() } catch { break }
            guard let packet = next else { break }
            switch packet {
            case .senderReport(_, let info, let count, let blocks):
                sawReport = true
                lastSenderReport = info.compactNTP
                lastSenderReportArrival = arrival
                readBlocks(count: count, blocks: blocks, in: bytes)
            case .receiverReport(_, let count, let blocks):
                sawReport = true
                readBlocks(count: count, blocks: blocks, in: bytes)
            case .sourceDescription, .bye, .other:
                break
            }
        }
        guard sawReport else { return invalid() }
        shared.counters.rtcpReceived.add(1, ordering: .relaxed)
        lastActivity = max(lastActivity, arrival)
        rtcpRemote = d.source
    }

    private func readBlocks(count: Int, blocks: Range<Int>, in bytes: UnsafeRawBufferPointer) {
        for i in 0..<count {
            let block = RTCPPacket.reportBlock(i, of: blocks, in: bytes)
            guard block.ssrc == ssrc else { continue }
            shared.counters.remoteFraction.store(Int(block.fractionLost), ordering: .relaxed)
            encoder.expectLoss(percent: (Int(block.fractionLost) * 100 + 255) / 256, floor: configuration.opus.expectedPacketLossPercent)
            shared.counters.remoteJitterMicroseconds.store(
                Int(block.jitter) * 1_000_000 / clockRate, ordering: .relaxed)
        }
    }

    // MARK: into the room

    /// One block from the jitter buffer into the room.
    private func playInbound() {
        guard let block = playout.nextBlock() else { return }
        // The room plays one block per tick; never let more than two wait there (a worker step that
        // ran late, or a skipped tick, would otherwise add their delay for good).
        if participant.queuedSampleCount() <= block.count {
            _ = participant.push(UnsafeRawBufferPointer(block))
        }
    }

    // MARK: to the network

    /// The room's fresh blocks for the leg, one RTP slot each (or one empty slot when there is none):
    /// DTMF replaces audio, a block of digital silence sends nothing, the timeline runs on.
    private func sendOutbound() {
        moveDigits()
        let sent = participant.pullReadyBlocks(into: mixBlock) { block, blockRate in
            slot(block.count == rate.blockSampleCount && blockRate == rate ? block : nil)
        }
        if sent == 0 { slot(nil) }
    }

    /// Digits queued by the API threads, into the sender while it has room.
    private func moveDigits() {
        while sender.queuedDigitCount < TelephoneEventSender.capacity, let digit = digitConsumer.pop() {
            // A one-scalar String is stored inline: no allocation.
            try? sender.enqueue(String(Unicode.Scalar(digit)))
        }
    }

    private func slot(_ block: UnsafeBufferPointer<Int16>?) {
        let ts = timestamp
        timestamp &+= UInt32(unitsPerBlock)
        guard shared.sending.load(ordering: .relaxed) else {
            gatheredBlocks = 0
            talking = false
            return
        }
        if let event = sender.next(at: ts) {
            sendGathered()
            sendEvent(event)
            talking = false
            if !event.isRetransmission { return }
        }
        guard let block, !Self.isSilent(block) else {
            sendGathered()
            talking = false
            return
        }
        // A packet of several blocks (G.711 at the far end's ptime) gathers their codes in turn.
        if gatheredBlocks == 0 {
            gatheredBytes = 0
            gatheredTimestamp = ts
            gatheredMarker = !talking
        }
        let bytes = encoder.encode(block, into: UnsafeMutableRawBufferPointer(rebasing: payload[gatheredBytes...]))
        guard bytes > 0 else { return }
        gatheredBytes += bytes
        gatheredBlocks += 1
        talking = true
        if gatheredBlocks == packetBlocks { sendGathered() }
    }

    /// Sends the audio gathered so far as one packet (a talk spurt that ends mid-packet sends what
    /// it has).
    private func sendGathered() {
        guard gatheredBlocks > 0 else { return }
        gatheredBlocks = 0
        let header = RTPHeader(
            marker: gatheredMarker, payloadType: configuration.payloadType, sequenceNumber: sequence, timestamp: gatheredTimestamp,
            ssrc: ssrc)
        send(header, UnsafeRawBufferPointer(rebasing: payload[0..<gatheredBytes]))
    }

    private func sendEvent(_ p: TelephoneEventSender.Packet) {
        guard let n = try? p.event.write(into: payload) else { return }
        let header = RTPHeader(marker: p.marker, payloadType: p.payloadType, sequenceNumber: sequence, timestamp: p.timestamp, ssrc: ssrc)
        send(header, UnsafeRawBufferPointer(rebasing: payload[0..<n]))
    }

    private func send(_ header: RTPHeader, _ body: UnsafeRawBufferPointer) {
        guard let n = try? RTPPacket.write(header, payload: body, into: outgoing) else { return }
        sequence &+= 1
        sentPackets &+= 1
        sentOctets &+= UInt32(body.count)
        rtp.send(UnsafeRawBufferPointer(rebasing: outgoing[0..<n]), to: shared.remote)
        shared.counters.packetsSent.add(1, ordering: .relaxed)
    }

    /// Digital silence: every sample zero (what a room sends a leg when nobody else talks).
    static func isSilent(_ block: UnsafeBufferPointer<Int16>) -> Bool {
        var bits: Int16 = 0
        for s in block { bits |= s }
        return bits == 0
    }

    // MARK: RTCP

    /// An SR (when we have sent since the last report) or RR, with a report block on the far end's
    /// stream once it has sent, and an SDES CNAME. Every 5 s, randomised by ±50 % (RFC 3550 §6.2).
    private func sendReport(now: Int64, realtimeOffset: Int64) {
        var block: RTCPReportBlock?
        if let remoteSSRC {
            var dlsr: UInt32 = 0
            if lastSenderReport != 0 {
                // Delay since that SR in units of 1/65536 s.
                dlsr = UInt32(truncatingIfNeeded: (now - lastSenderReportArrival) * 65536 / 1_000_000_000)
            }
            block = receiveStatistics.makeReportBlock(ssrc: remoteSSRC, lastSenderReport: lastSenderReport, delaySinceLastSenderReport: dlsr)
        }
        var offset = 0
        do throws(RTPPacket.WriteError) {
            if sentPackets > 0 {
                let unix = now + realtimeOffset
                let seconds = UInt64(unix / 1_000_000_000) + 2_208_988_800
                let fraction = UInt64(unix % 1_000_000_000) << 32 / 1_000_000_000
                let info = RTCPSenderInfo(ntpTimestamp: seconds << 32 | fraction, rtpTimestamp: timestamp, packetCount: sentPackets, octetCount: sentOctets)
                offset = try RTCPWriter.writeSenderReport(ssrc: ssrc, info: info, block: block, into: outgoing)
            } else {
                offset = try RTCPWriter.writeReceiverReport(ssrc: ssrc, block: block, into: outgoing)
            }
            offset = try RTCPWriter.writeSourceDescription(ssrc: ssrc, cname: UnsafeRawBufferPointer(cname), into: outgoing, at: offset)
        } catch {
            return
        }
        rtcp.send(UnsafeRawBufferPointer(rebasing: outgoing[0..<offset]), to: rtcpDestination)
        shared.counters.rtcpSent.add(1, ordering: .relaxed)
        // xorshift64: ±50 % of the interval.
        randomState ^= randomState << 13
        randomState ^= randomState >> 7
        randomState ^= randomState << 17
        nextReport = now + Self.reportInterval / 2 + Int64(randomState % UInt64(Self.reportInterval))
    }

    private var rtcpDestination: Endpoint {
        rtcpRemote ?? shared.remote.with(port: shared.remote.port &+ 1)
    }

    /// A BYE (with an RR or SR first, as a compound packet must start with a report).
    func sendBye() {
        do throws(RTPPacket.WriteError) {
            var offset = try RTCPWriter.writeReceiverReport(ssrc: ssrc, block: nil, into: outgoing)
            offset = try RTCPWriter.writeBye(ssrc: ssrc, into: outgoing, at: offset)
            rtcp.send(UnsafeRawBufferPointer(rebasing: outgoing[0..<offset]), to: rtcpDestination)
        } catch {}
    }

    // MARK: statistics

    private func publish() {
        let s = playout.jitter.statistics
        let c = shared.counters
        c.packetsReceived.store(s.packetsReceived, ordering: .relaxed)
        c.packetsLost.store(s.packetsLost, ordering: .relaxed)
        c.packetsLate.store(s.packetsLate, ordering: .relaxed)
        c.jitterMicroseconds.store(Int(receiveStatistics.jitter * 1_000_000 / Double(clockRate)), ordering: .relaxed)
        c.bufferMicroseconds.store(s.bufferMilliseconds * 1000, ordering: .relaxed)
        c.concealedMicroseconds.store(s.concealedMilliseconds * 1000, ordering: .relaxed)
        c.digitsInSender.store(sender.queuedDigitCount, ordering: .relaxed)
    }
}
