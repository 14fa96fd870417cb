import ChamadeCore
import ChamadeDSP
import ChamadeEngine
import ChamadeTesting
import Synchronization

/// Collects events delivered by `drainEvents()`.
final class EventLog: Sendable {
    let events = Mutex<[EngineEvent]>([])
    func append(_ e: EngineEvent) { events.withLock { $0.append(e) } }
    func take() -> [EngineEvent] { events.withLock { e in defer { e = [] }; return e } }
}

/// A virtual-clock engine with an event log.
func virtualEngine(shards: Int = 1) -> (Engine, EventLog) {
    let log = EventLog()
    let engine = Engine(configuration: .init(clock: .virtual, shardCount: shards)) { log.append($0) }
    return (engine, log)
}

extension Participant {
    /// Pulls every ready block, concatenated.
    func pullAll() -> [Int16] {
        var out: [Int16] = []
        var block = [Int16](repeating: 0, count: sampleRate.blockSampleCount)
        while block.withUnsafeMutableBufferPointer({ pullBlock(into: $0) }) { out += block }
        return out
    }

    @discardableResult
    func push(samples: [Int16]) -> PushResult { push(Signal.bytes(of: samples)) }
}

/// A deterministic speech-like signal: two tones under a slow envelope, plus noise.
func speechLike(rate: Int, count: Int, seed: UInt64 = 1) -> [Int16] {
    var rng = SeededRandom(seed: seed)
    let a = Signal.sine(frequency: 310, dBFS: -14, sampleRate: rate, count: count)
    let b = Signal.sine(frequency: 1270, dBFS: -20, sampleRate: rate, count: count)
    return (0..<count).map { i in
        let env = 0.6 + 0.4 * Double((i / (rate / 10)) % 3) / 2
        let v = (Double(a[i]) + Double(b[i])) * env + Double(Int.random(in: -200...200, using: &rng))
        return Int16(clamping: Int(v))
    }
}

/// Sample-exact equality without dumping both arrays into the failure message.
func same(_ a: [Int16], _ b: [Int16]) -> Bool {
    if a.count != b.count {
        print("length \(a.count) vs \(b.count)")
        return false
    }
    if let i = a.indices.first(where: { a[$0] != b[$0] }) {
        print("first difference at \(i): \(a[i]) vs \(b[i])")
        return false
    }
    return true
}

/// A private converter chain, block by block as the engine runs it: Int16 in, Int16 out (rounded
/// and saturated per block), over `blocks` blocks of `input` (zero-padded as needed).
func privateChain(_ input: [Int16], from: SampleRate, to: SampleRate, blocks: Int) throws -> [Int16] {
    var converter = try SampleRateConverter(from: from, to: to)
    let n = from.blockSampleCount
    let m = to.blockSampleCount
    let padded = input + [Int16](repeating: 0, count: max(0, blocks * n - input.count))
    var fin = [Float](repeating: 0, count: n)
    var fout = [Float](repeating: 0, count: m)
    var out = [Int16](repeating: 0, count: m)
    var result: [Int16] = []
    for k in 0..<blocks {
        padded[(k * n)..<((k + 1) * n)].withUnsafeBufferPointer { i in
            fin.withUnsafeMutableBufferPointer { fi in
                fout.withUnsafeMutableBufferPointer { fo in
                    out.withUnsafeMutableBufferPointer { o in
                        converter.process(i, into: o, inputScratch: fi, outputScratch: fo)
                    }
                }
            }
        }
        result += out
    }
    return result
}
