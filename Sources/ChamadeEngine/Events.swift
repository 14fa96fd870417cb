public import ChamadeCore

/// A participant's identity in an engine: unique for the engine's lifetime, never reused.
public struct ParticipantID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "p\(rawValue)" }
}

/// A room's identity in an engine.
public struct RoomID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "r\(rawValue)" }
}

/// What the real-time side reports. Posted by a tick into an SPSC ring without allocating, and
/// delivered on a non-real-time thread (or by `Engine.drainEvents()` with the virtual clock).
public enum EngineEvent: Sendable, Equatable {
    /// Everything the participant sent before mark `mark` has been played into the room (or was
    /// dropped by a clear or a rate change, which report pending marks at once).
    case markPlayed(ParticipantID, mark: UInt64)
    /// A clear (barge-in) took effect: `droppedSampleCount` samples at `sampleRate` were dropped.
    /// `request` is the newest clear request it covers (see `Participant.requestClear()`).
    case cleared(ParticipantID, droppedSampleCount: Int, sampleRate: SampleRate, request: UInt64)
    /// A tick of clock shard `shard` finished after the next tick's deadline.
    case lateTick(shard: Int, lateNanoseconds: Int64)
    /// Clock shard `shard` fell more than a block behind and skipped `count` ticks.
    case skippedTicks(shard: Int, count: Int)

    /// Milliseconds of audio a `cleared` event dropped.
    public var droppedMilliseconds: Int? {
        if case .cleared(_, let n, let rate, _) = self { return rate.milliseconds(ofSampleCount: n) }
        return nil
    }
}
