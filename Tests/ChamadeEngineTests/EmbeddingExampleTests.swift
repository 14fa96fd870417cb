import ChamadeCore
import ChamadeEngine
import Testing

/// The README's embedding example, compiled and run (virtual clock, so it is deterministic).
@Suite("README embedding example")
struct EmbeddingExampleTests {
    @Test func readmeExample() throws {
        // --- README example begins ---
        let engine = Engine(configuration: .init(clock: .virtual)) { event in
            if case .markPlayed(let who, let mark) = event { print("\(who) reached mark \(mark)") }
        }
        let room = try engine.createRoom(nativeRate: .hz48000, capacity: 64)
        let agent = try room.join(rate: try SampleRate(hertz: 24000))   // receives its mix-minus
        let caller = try room.join(rate: .hz16000)

        let pcm = [UInt8](repeating: 0, count: 4801)        // any chunking: s16le bytes
        let result = agent.push(pcm)                         // from the agent's I/O thread
        let mark = agent.mark()                              // reported once that audio has played

        engine.tick()                                        // .realTime: engine.start() instead
        engine.drainEvents()                                 // .realTime: a housekeeping thread does this

        var block = [Int16](repeating: 0, count: caller.sampleRate.blockSampleCount)
        let got = block.withUnsafeMutableBufferPointer { caller.pullBlock(into: $0) }

        agent.requestClear()                                 // barge-in: EngineEvent.cleared follows
        try agent.setSampleRate(.hz16000)                    // both directions, from the next tick
        agent.leave()
        engine.removeRoom(room)
        engine.shutdown()
        // --- README example ends ---
        #expect(result.acceptedSampleCount == 2400)
        #expect(!mark.isReached)
        #expect(got)
    }
}
