import ChamadeCore
import FuzzSupport

// The PCM byte-stream decoder and the aligner, chunked any way the input says: the blocks that
// come out are exactly the little-endian samples of the bytes concatenated, whatever the chunking,
// and what does not fit is counted, never written over what is queued.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    var input = FuzzInput(data, count)
    let hz = 8000 + 50 * (Int(input.integer(UInt16.self)) % 801)
    let rate = try! SampleRate(hertz: hz)
    let capacity = rate.blockSampleCount * (1 + Int(input.integer(UInt8.self) % 8))
    var aligner = FrameAligner(sampleRate: rate, capacitySampleCount: capacity)
    var stream: [UInt8] = []
    var out: [Int16] = []
    var dropped = 0
    var block = [Int16](repeating: 0, count: rate.blockSampleCount)
    while !input.isAtEnd {
        let size = Int(input.integer(UInt16.self)) % 4096
        let pull = input.integer(UInt8.self)
        let chunk = input.take(size)
        // What fits is what the stream would hold: samples beyond the queue's room are dropped.
        let room = capacity - aligner.queuedSampleCount()
        let wholeBefore = stream.count / 2
        stream.append(contentsOf: chunk)
        let fresh = stream.count / 2 - wholeBefore
        let lost = aligner.append(chunk)
        fuzzCheck(lost == max(0, fresh - room), "dropped \(lost) of \(fresh) with room for \(room)")
        if lost > 0 {
            // The lost samples leave the stream; the odd byte stays in phase.
            let keep = stream.count % 2
            let tail = Array(stream.suffix(keep))
            stream.removeLast(keep + 2 * lost)
            stream.append(contentsOf: tail)
            dropped += lost
        }
        for _ in 0..<Int(pull % 4) {
            let got = block.withUnsafeMutableBufferPointer { aligner.nextBlock(into: $0) }
            if got { out.append(contentsOf: block) }
        }
    }
    while block.withUnsafeMutableBufferPointer({ aligner.nextBlock(into: $0) }) { out.append(contentsOf: block) }
    fuzzCheck(aligner.queuedSampleCount() < rate.blockSampleCount, "a whole block left queued")
    for (i, s) in out.enumerated() {
        let expected = Int16(bitPattern: UInt16(stream[2 * i]) | UInt16(stream[2 * i + 1]) << 8)
        fuzzCheck(s == expected, "sample \(i) is \(s), the stream says \(expected)")
    }
    return 0
}
