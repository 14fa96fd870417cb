/// Voice activity of one talker, from the energy of its 20 ms frames (SPEC §7: `call_speaking`,
/// and the end of an utterance for recognition).
///
/// An energy detector with an adaptive floor: a frame is voiced when its level is above both an
/// absolute threshold (−45 dBFS) and the talker's noise floor plus 9 dB, the floor being the
/// quietest frame of the last 2 s (minimum statistics: speech has gaps between words, steady noise
/// has none, so a noisy leg stops counting as voice within 2 s). Speech starts after two
/// voiced frames in a row (40 ms: a click does not start it); `speaking` goes off after 300 ms
/// without a voiced frame (the hang-over), and the utterance ends after 600 ms. Measured here:
/// word accuracy equal to PocketSphinx's own detector (facts file), at no decoder's cost, so it
/// can run for every talker (Debian ships no WebRTC VAD with a C API).
public struct VoiceActivity: Sendable {
    public enum Change: Sendable, Equatable {
        /// Speech started with this frame (the one before it was voiced too).
        case started
        /// 300 ms without voice: `call_speaking` false (the utterance may still go on).
        case stoppedSpeaking
        /// Voice again within the utterance, after a `stoppedSpeaking`.
        case resumedSpeaking
        /// 600 ms without voice: the utterance is over.
        case ended
    }

    public static let frameMilliseconds = 20
    public static let hangOverFrames = 15
    public static let endFrames = 30
    /// −45 dBFS, as mean square of samples scaled to ±1.
    static let absoluteThreshold: Float = 3.16e-5
    /// 9 dB above the floor.
    static let floorMargin: Float = 7.94
    /// Frames the floor looks back over (2 s).
    static let floorFrames = 100

    public private(set) var inUtterance = false
    public private(set) var speaking = false
    private var voicedRun = 0
    private var silentRun = 0
    /// The last frames' mean squares (a ring), for the floor. Starts at digital silence.
    private var recent = [Float](repeating: 0, count: VoiceActivity.floorFrames)
    private var recentIndex = 0

    public init() {}

    /// Whether a frame's mean square (samples scaled to ±1) counts as voice, updating the floor.
    mutating func isVoiced(meanSquare: Float) -> Bool {
        let floor = recent.min() ?? 0
        recent[recentIndex] = meanSquare
        recentIndex = (recentIndex + 1) % recent.count
        return meanSquare > Self.absoluteThreshold && meanSquare > floor * Self.floorMargin
    }

    /// Forgets a run of voiced frames in progress (the next frame does not follow it).
    public mutating func forgetRun() { voicedRun = 0 }

    /// Takes the next frame (any length, normally 20 ms) and says what changed, if anything.
    public mutating func take(_ frame: UnsafeBufferPointer<Int16>) -> Change? {
        var sum: Float = 0
        for s in frame {
            let x = Float(s) / 32768
            sum += x * x
        }
        return take(voiced: isVoiced(meanSquare: frame.isEmpty ? 0 : sum / Float(frame.count)))
    }

    /// A frame known to be digital silence (a tick the talker did not talk).
    public mutating func takeSilence() -> Change? {
        take(voiced: isVoiced(meanSquare: 0))
    }

    private mutating func take(voiced: Bool) -> Change? {
        if voiced {
            voicedRun += 1
            silentRun = 0
            if !inUtterance, voicedRun >= 2 {
                inUtterance = true
                speaking = true
                return .started
            }
            if inUtterance, !speaking {
                speaking = true
                return .resumedSpeaking
            }
            return nil
        }
        voicedRun = 0
        guard inUtterance else { return nil }
        silentRun += 1
        if silentRun == Self.hangOverFrames, speaking {
            speaking = false
            return .stoppedSpeaking
        }
        if silentRun >= Self.endFrames {
            inUtterance = false
            speaking = false
            silentRun = 0
            return .ended
        }
        return nil
    }
}
