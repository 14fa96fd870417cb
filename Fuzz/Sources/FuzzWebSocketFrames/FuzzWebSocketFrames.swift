import ChamadeWire
import FuzzSupport

// The server's check of a client's WebSocket frames (SPEC §9) on any byte stream, split any way:
// the verdict (the first violation, or none) does not depend on how the stream was cut into reads,
// and a violation is 1002 or 1009 with words.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    var input = FuzzInput(data, count)
    // A small message limit, so that 1009 is reachable with small inputs.
    let limit = 1 + Int(input.integer(UInt16.self))
    let cut = Int(input.integer(UInt8.self)) + 1
    let stream = input.rest()
    var whole = ClientFrameChecker(maxMessageBytes: limit)
    let once = whole.consume(stream)
    var pieces = ClientFrameChecker(maxMessageBytes: limit)
    var split: ClientFrameChecker.Violation?
    var i = 0
    while i < stream.count {
        let end = min(stream.count, i + cut)
        split = pieces.consume(UnsafeRawBufferPointer(rebasing: stream[i..<end]))
        i = end
    }
    if stream.isEmpty { split = pieces.consume(stream) }
    fuzzCheck(once == split, "verdict depends on the cuts: \(String(describing: once)) vs \(String(describing: split))")
    if let v = once {
        fuzzCheck(v.code == 1002 || v.code == 1009, "close code \(v.code)")
        fuzzCheck(!v.reason.isEmpty && v.reason.utf8.count <= 123, "reason \(v.reason)")
        fuzzCheck(whole.consume(stream) == v, "a stopped stream answered differently")
    }
    return 0
}
