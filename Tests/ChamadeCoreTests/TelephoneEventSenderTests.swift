import ChamadeCore
import Testing

/// One tick's outcome, as a token: what went on the wire.
private struct SentEvent: Equatable, CustomStringConvertible {
    var marker: Bool
    var timestamp: UInt32
    var event: UInt8
    var end: Bool
    var duration: UInt16
    var retransmission: Bool

    var description: String {
        let flags = (marker ? "M " : "", end ? " E" : "", retransmission ? " R" : "")
        return "\(flags.0)ts=\(timestamp) ev=\(event)\(flags.1) dur=\(duration)\(flags.2)"
    }
}

/// Runs `ticks` ticks from `start`, one `next(at:)` each; nil where audio goes.
private func runTicks(_ sender: inout TelephoneEventSender, ticks: Int, start: UInt32) -> [SentEvent?] {
    let step = UInt32(sender.clockRate / 50)
    return (0..<ticks).map { i in
        let timestamp = start &+ UInt32(i) &* step
        return sender.next(at: timestamp).map {
            SentEvent(
                marker: $0.marker, timestamp: $0.timestamp, event: $0.event.event, end: $0.event.end,
                duration: $0.event.duration, retransmission: $0.isRetransmission)
        }
    }
}

/// The 8 ticks of one digit per the sender's table, starting at `start`.
private func expectedDigit(_ event: UInt8, start: UInt32, rate: Int) -> [SentEvent?] {
    let b = UInt16(rate / 50)
    return [
        SentEvent(marker: true, timestamp: start, event: event, end: false, duration: b, retransmission: false),
        SentEvent(marker: false, timestamp: start, event: event, end: false, duration: 2 * b, retransmission: false),
        SentEvent(marker: false, timestamp: start, event: event, end: false, duration: 3 * b, retransmission: false),
        SentEvent(marker: false, timestamp: start, event: event, end: false, duration: 4 * b, retransmission: false),
        SentEvent(marker: false, timestamp: start, event: event, end: true, duration: 5 * b, retransmission: false),
        SentEvent(marker: false, timestamp: start, event: event, end: true, duration: 5 * b, retransmission: true),
        SentEvent(marker: false, timestamp: start, event: event, end: true, duration: 5 * b, retransmission: true),
        nil,
    ]
}

@Suite("RFC 4733 sender")
struct TelephoneEventSenderTests {
    @Test("one digit: 5 packets over 100 ms, end packet three times, then nothing", arguments: [8000, 48000])
    func oneDigit(rate: Int) throws {
        var sender = try TelephoneEventSender(clockRate: rate, payloadType: 101)
        try sender.enqueue("5")
        // Near the 32-bit wrap: the event's timestamp is its first tick's, even after the wrap.
        let start: UInt32 = 0xFFFF_FE00
        let sent = runTicks(&sender, ticks: 12, start: start)
        #expect(sent == expectedDigit(5, start: start, rate: rate) + [nil, nil, nil, nil])
        #expect(sent.compactMap { $0 }.count == 7)
        #expect(sent.compactMap { $0 }.filter(\.end).count == 3)
        #expect(sent.compactMap { $0 }.filter(\.marker).count == 1)
        #expect(!sender.isBusy)
    }

    @Test(
        "\"12#\": three events, each 8 ticks (100 ms + 60 ms gap), own timestamp and marker",
        arguments: [8000, 48000])
    func threeDigits(rate: Int) throws {
        var sender = try TelephoneEventSender(clockRate: rate)
        try sender.enqueue("12#")
        #expect(sender.queuedDigitCount == 3)
        let start: UInt32 = 1000
        let step = UInt32(rate / 50)
        let sent = runTicks(&sender, ticks: 26, start: start)
        let expected =
            expectedDigit(1, start: start, rate: rate)
            + expectedDigit(2, start: start + 8 * step, rate: rate)
            + expectedDigit(11, start: start + 16 * step, rate: rate) + [nil, nil]
        #expect(sent == expected)
        let packets = sent.compactMap { $0 }
        #expect(packets.count == 21)
        #expect(packets.filter(\.marker).count == 3)
        #expect(packets.filter(\.end).count == 9)
        // Media gap between one event's end and the next event's start: 60 ms ≥ 50 ms.
        let gap = Int(8 * step) - Int(packets[4].duration)
        #expect(gap * 1000 / rate == 60)
    }

    @Test("a request queues behind the digit in progress, which is not interrupted")
    func queuesBehindDigitInProgress() throws {
        var sender = try TelephoneEventSender(clockRate: 8000)
        try sender.enqueue("1")
        var sent = runTicks(&sender, ticks: 3, start: 0)
        try sender.enqueue("2")
        sent += runTicks(&sender, ticks: 13, start: 3 * 160)
        #expect(sent == expectedDigit(1, start: 0, rate: 8000) + expectedDigit(2, start: 8 * 160, rate: 8000))
    }

    @Test("a request in the gap after a digit waits for the gap; on an idle sender it starts at once")
    func gapAndIdle() throws {
        var sender = try TelephoneEventSender(clockRate: 8000)
        try sender.enqueue("3")
        var sent = runTicks(&sender, ticks: 6, start: 0)
        try sender.enqueue("4")
        sent += runTicks(&sender, ticks: 10, start: 6 * 160)
        #expect(sent == expectedDigit(3, start: 0, rate: 8000) + expectedDigit(4, start: 8 * 160, rate: 8000))
        #expect(runTicks(&sender, ticks: 5, start: 16 * 160) == [nil, nil, nil, nil, nil])
        try sender.enqueue("*")
        #expect(runTicks(&sender, ticks: 8, start: 21 * 160) == expectedDigit(10, start: 21 * 160, rate: 8000))
    }

    @Test("digit codes: 0-9 * # A-D, lower case accepted")
    func digitCodes() throws {
        var sender = try TelephoneEventSender(clockRate: 8000)
        try sender.enqueue("0123456789*#ABCDabcd")
        let sent = runTicks(&sender, ticks: 20 * 8, start: 0).compactMap { $0 }.filter(\.marker).map(\.event)
        #expect(sent == Array(0...15) + [12, 13, 14, 15])
    }

    @Test(
        "bad requests are refused whole with a typed error",
        arguments: [
            ("", TelephoneEventSender.EnqueueError.empty),
            ("12x", .invalidDigit(offset: 2)),
            ("E", .invalidDigit(offset: 0)),
            (" 1", .invalidDigit(offset: 0)),
            ("1,2", .invalidDigit(offset: 1)),
            ("5é", .invalidDigit(offset: 1)),
            (String(repeating: "1", count: 65), .tooManyDigits(65)),
        ])
    func invalidRequests(digits: String, error: TelephoneEventSender.EnqueueError) throws {
        var sender = try TelephoneEventSender(clockRate: 8000)
        #expect(throws: error) { try sender.enqueue(digits) }
        #expect(sender.queuedDigitCount == 0)
        #expect(sender.next(at: 0) == nil)
    }

    @Test("capacity: two full requests fit, a third is refused whole until digits are sent")
    func capacity() throws {
        var sender = try TelephoneEventSender(clockRate: 8000)
        let full = String(repeating: "9", count: 64)
        try sender.enqueue(full)
        try sender.enqueue(Substring(full))
        #expect(sender.queuedDigitCount == TelephoneEventSender.capacity)
        #expect(throws: TelephoneEventSender.EnqueueError.queueFull(queued: 128)) { try sender.enqueue("1") }
        // One tick starts a digit: one slot frees.
        _ = sender.next(at: 0)
        #expect(sender.queuedDigitCount == 127)
        #expect(throws: TelephoneEventSender.EnqueueError.queueFull(queued: 127)) { try sender.enqueue("12") }
        try sender.enqueue("#")
        // All 129 digits come out in order, the last one `#`, after 129 × 8 ticks; the ring wraps.
        let markers = runTicks(&sender, ticks: 129 * 8 + 4, start: 160).compactMap { $0 }.filter(\.marker)
        #expect(markers.count == 128)
        #expect(markers.last?.event == 11)
        #expect(markers.dropLast().allSatisfy { $0.event == 9 })
        #expect(!sender.isBusy)
    }

    @Test("removeQueued drops what is queued; the digit in progress still ends with its three end packets")
    func removeQueued() throws {
        var sender = try TelephoneEventSender(clockRate: 8000)
        try sender.enqueue("78")
        var sent = runTicks(&sender, ticks: 2, start: 0)
        sender.removeQueued()
        sent += runTicks(&sender, ticks: 14, start: 2 * 160)
        #expect(sent == expectedDigit(7, start: 0, rate: 8000) + Array(repeating: nil, count: 8))
    }

    @Test("the payload on the wire, payload type and volume")
    func wireBytes() throws {
        var sender = try TelephoneEventSender(clockRate: 8000, payloadType: 96, volume: 7)
        try sender.enqueue("#")
        let packets = (0..<5).compactMap { sender.next(at: 4242 + UInt32($0) * 160) }
        let last = try #require(packets.last)
        #expect(last.payloadType == 96)
        #expect(last.timestamp == 4242)
        var bytes: [UInt8] = [0, 0, 0, 0]
        let written = try bytes.withUnsafeMutableBytes { try last.event.write(into: $0) }
        #expect(written == 4)
        // Event 11, E bit + volume 7, duration 800 = 0x0320.
        #expect(bytes == [11, 0x87, 0x03, 0x20])
    }

    @Test(
        "bad configurations are refused",
        arguments: [
            (0, 101, 10, TelephoneEventSender.ConfigurationError.clockRate(0)),
            (8001, 101, 10, .clockRate(8001)),
            (700_000, 101, 10, .clockRate(700_000)),
            (8000, 128, 10, .payloadType(128)),
            (8000, -1, 10, .payloadType(-1)),
            (8000, 101, 64, .volume(64)),
        ])
    func badConfiguration(rate: Int, payloadType: Int, volume: Int, error: TelephoneEventSender.ConfigurationError) {
        #expect(throws: error) { try TelephoneEventSender(clockRate: rate, payloadType: payloadType, volume: volume) }
    }

    @Test("allocation-free by construction: a plain value with no references (inline queue, no arrays)")
    func plainValue() {
        #expect(_isPOD(TelephoneEventSender.self))
        #expect(MemoryLayout<TelephoneEventSender>.size < 256)
    }
}
