import ChamadeCore
import FuzzSupport

// RFC 4733 events: packets (timestamp, payload) in any order, duplicated or lost. Only DTMF digits
// are reported, with a duration a packet carried, and never more reports than events started
// (an event is identified by its timestamp; copies of an older one are ignored).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    var input = FuzzInput(data, count)
    var receiver = TelephoneEventReceiver()
    var current: UInt32?
    var started = 0
    var reports = 0
    var durations: Set<Int> = []
    while !input.isAtEnd {
        let timestamp = input.integer(UInt32.self)
        let payload = input.take(4 + Int(input.integer(UInt8.self) % 3) - 2)
        guard let event = try? TelephoneEvent.parse(payload) else {
            fuzzCheck(payload.count < TelephoneEvent.byteCount, "a payload of 4 bytes or more refused")
            continue
        }
        durations.insert(Int(event.duration))
        if current.map({ timestamp != $0 && Int32(bitPattern: timestamp &- $0) > 0 }) ?? true {
            current = timestamp
            started += 1
        }
        if let report = receiver.receive(event, timestamp: timestamp) {
            reports += 1
            fuzzCheck(TelephoneEvent.event(ofDigit: report.digit) != nil, "reported a non-digit")
            fuzzCheck(durations.contains(report.duration), "a duration no packet carried")
            fuzzCheck(reports <= started, "\(reports) reports for \(started) events")
        }
    }
    return 0
}
