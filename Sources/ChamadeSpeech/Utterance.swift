import ChamadeEngine
import Synchronization

/// One talker's utterance on its way to a recognizer: 16 kHz audio appended by the transcriber as
/// the talker speaks, taken by the recognizer's worker as it can, and closed when voice activity
/// says it ended.
///
/// The audio waiting for the recognizer is bounded (`maxPendingSamples`): a recognizer that falls
/// behind loses the oldest of it, counted, so the transcriber never waits and memory never grows
/// with a stall.
final class Utterance: Sendable {
    let participant: ParticipantID
    let startTick: UInt64
    /// The talker's cepstral mean from its previous utterance (nil: the decoder's own), and the
    /// one the recognizer ended this utterance with (`Recognizer.cepstralMean`).
    let initialMean: [Float]?
    let finalMean = Locked<[Float]?>(nil)
    /// Its talker's audio came at under 16 kHz (upsampled: no energy above its Nyquist).
    let narrowband: Bool

    struct Pending {
        var chunks: [[Int16]] = []
        var sampleCount = 0
        var closed = false
        var endTick: UInt64 = 0
        /// Given up by the pool (its backlog was full): what comes is dropped.
        var abandoned = false
    }
    private let pending = Locked(Pending())
    let maxPendingSamples: Int

    init(
        participant: ParticipantID, startTick: UInt64, maxPendingSamples: Int, narrowband: Bool = false,
        initialMean: [Float]? = nil
    ) {
        self.narrowband = narrowband
        self.initialMean = initialMean
        self.participant = participant
        self.startTick = startTick
        self.maxPendingSamples = maxPendingSamples
    }

    /// Appends audio; returns the samples dropped to stay within the bound (the oldest first).
    func append(_ samples: [Int16]) -> Int {
        pending.withLock { p in
            guard !p.abandoned else { return samples.count }
            p.chunks.append(samples)
            p.sampleCount += samples.count
            var dropped = 0
            while p.sampleCount > maxPendingSamples, p.chunks.count > 1 {
                let oldest = p.chunks.removeFirst()
                p.sampleCount -= oldest.count
                dropped += oldest.count
            }
            return dropped
        }
    }

    /// No more audio: the utterance ended at `tick` (its last voiced block).
    func close(endTick: UInt64) {
        pending.withLock { p in
            p.closed = true
            p.endTick = endTick
        }
    }

    /// Takes what is waiting. `closed` with no chunks: the recognizer may finish.
    func take() -> (chunks: [[Int16]], closed: Bool, endTick: UInt64) {
        pending.withLock { p in
            let chunks = p.chunks
            p.chunks.removeAll(keepingCapacity: true)
            p.sampleCount = 0
            return (chunks, p.closed, p.endTick)
        }
    }

    /// Gives the utterance up: returns the samples it had waiting (now dropped).
    func abandon() -> Int {
        pending.withLock { p in
            let n = p.sampleCount
            p.abandoned = true
            p.chunks = []
            p.sampleCount = 0
            return n
        }
    }

    /// Samples waiting for the recognizer (its lag).
    var pendingSampleCount: Int { pending.withLock { $0.sampleCount } }
}
