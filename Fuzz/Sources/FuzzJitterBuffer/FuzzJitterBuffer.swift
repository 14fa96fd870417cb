import ChamadeCore
import FuzzSupport

// The jitter buffer fed any sequence of packets and pulls: sequence numbers, timestamps, SSRCs,
// durations, sizes and arrival steps all come from the input, so libFuzzer explores reordering,
// loss, duplicates, wrap-around, jumps and restarts. Whatever comes in, every block is well formed:
// items only while playing, packets handed out whole from the buffer's storage (ASan checks every
// byte is readable), concealment of a positive length, counters that add up.

private let configuration: JitterBuffer.Configuration = {
    var c = JitterBuffer.Configuration(clockRate: 8000)
    c.maximumPayloadByteCount = 256
    c.packetCapacity = 16
    return c
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    var input = FuzzInput(data, count)
    let rate = input.bool() ? 48000 : 8000
    var c = configuration
    c.clockRate = rate
    guard var buffer = try? JitterBuffer(configuration: c) else { fatalError("a valid configuration refused") }
    let block = rate / 50
    var arrival: Int64 = 0
    var sequence = input.integer(UInt16.self)
    var timestamp = input.integer(UInt32.self)
    var inserts = 0
    var payload = [UInt8](repeating: 0, count: 512)
    while !input.isAtEnd {
        let op = input.integer(UInt8.self)
        switch op % 4 {
        case 0, 1:
            // A packet near the last one (most of the time) or anywhere.
            let far = op & 0x80 != 0
            let dSeq = input.integer(UInt8.self)
            let dTs = input.integer(UInt16.self)
            sequence = far ? input.integer(UInt16.self) : sequence &+ UInt16(dSeq % 8) &- 3
            timestamp = far ? input.integer(UInt32.self) : timestamp &+ UInt32(dTs % 4096) &- UInt32(block * 2)
            let ssrc = UInt32(input.integer(UInt8.self) % 3)
            let samples = Int(input.integer(UInt16.self)) % (rate / 5)
            let size = Int(input.integer(UInt16.self)) % 300
            for i in 0..<min(size, payload.count) { payload[i] = UInt8(truncatingIfNeeded: i &* 31 &+ Int(sequence)) }
            let result = payload.withUnsafeBytes {
                buffer.insert(
                    sequence: sequence, timestamp: timestamp, ssrc: ssrc, marker: op & 0x40 != 0,
                    payload: UnsafeRawBufferPointer(rebasing: $0[0..<size]), sampleCount: samples, arrival: arrival)
            }
            inserts += 1
            if size > 256 { fuzzCheck(result == .refused(.tooLarge), "an oversized payload was not refused") }
        case 2:
            arrival += Int64(input.integer(UInt8.self)) * 1_000_000
            let answer = buffer.pull()
            if answer.kind != .playing { fuzzCheck(answer.itemCount == 0, "items outside playing") }
            var concealed = 0
            for i in 0..<answer.itemCount {
                switch buffer.item(i) {
                case .packet(let p):
                    fuzzCheck(p.payload.count <= 256, "a packet larger than any accepted")
                    fuzzCheck(p.sampleCount >= rate / 100 && p.sampleCount <= rate * 120 / 1000, "a duration never accepted")
                    var sum = 0
                    for b in p.payload { sum &+= Int(b) }
                    _ = sum
                case .conceal(let n, let following):
                    fuzzCheck(n > 0, "empty concealment")
                    concealed += n
                    if let f = following { fuzzCheck(f.payload.count <= 256, "FEC packet larger than any accepted") }
                }
            }
            fuzzCheck(concealed <= 10 * rate, "more than 10 s concealed in one block")
        default:
            if op & 0x10 != 0 { buffer.reset() } else { buffer.noteOtherPayload(sequence: sequence &+ 1, ssrc: 0) }
        }
    }
    let s = buffer.statistics
    fuzzCheck(s.packetsReceived == inserts, "received \(s.packetsReceived) of \(inserts) inserts")
    fuzzCheck(
        s.packetsRefused + s.packetsDuplicate + s.packetsLate <= s.packetsReceived,
        "more packets set aside than received")
    fuzzCheck(s.packetsLost >= 0 && s.packetsDropped >= 0 && s.restarts >= 0, "a negative counter")
    return 0
}
