@testable import ChamadeEngine
import ChamadeCore
import Testing

@Suite("Lifetimes")
struct LifetimeTests {
    /// Leaving frees the participant's rings and converters (its 60 s playout queue is 5.8 MB at
    /// 48 kHz) once the tick has retired it, even while someone keeps the handle; removing the
    /// room frees the room.
    @Test func leavingFreesTheEngineStateWhileTheHandleLives() throws {
        let (engine, _) = virtualEngine()
        let room = try engine.createRoom(nativeRate: .hz48000)
        let kept = try room.join(rate: .hz24000)
        let other = try room.join(rate: .hz16000)
        engine.tick()
        weak var state = kept.inbound.withLock { $0.ends?.state }
        #expect(state != nil)
        kept.leave()
        #expect(state != nil)  // the tick still holds it until it applies the command
        engine.tick()
        engine.drainEvents()
        #expect(state == nil)
        #expect(kept.sampleRate == .hz24000)
        #expect(kept.push([1, 2, 3, 4]).acceptedSampleCount == 0)

        weak var core = room.core
        weak var otherState = other.inbound.withLock { $0.ends?.state }
        engine.removeRoom(room)
        engine.tick()
        engine.drainEvents()
        #expect(otherState != nil)  // `other` never left: its handle still owns its I/O side
        other.leave()
        #expect(otherState == nil)
        _ = core
    }
}
