import CChamadeShims
import CPocketSphinx
import ChamadeEngine
#if canImport(Glibc)
import Glibc
#endif

/// Speech to text with PocketSphinx and its US-English model (SPEC §7): the one Swift owner of a
/// decoder.
///
/// A decoder is big (about 90 MB, 0.3 s to load) and slow to finish an utterance (about 120 ms in
/// `finish`, up to 45 ms in one 20 ms `feed`), so recognizers are made off every real-time thread,
/// pooled and reused (`RecognizerPool`), and each is used by one thread at a time (it is not
/// `Sendable`: the pool hands it from worker to worker). Audio is 16 kHz mono s16: 8 kHz legs are
/// upsampled before, since the model's front end cannot run at 8 kHz.
public final class Recognizer {
    public enum Error: Swift.Error, Sendable, Equatable, CustomStringConvertible {
        /// The model is missing (Debian `pocketsphinx-en-us`) or the decoder would not start.
        case unavailable(String)

        public var description: String {
            switch self {
            case .unavailable(let why): "PocketSphinx unavailable: \(why)"
            }
        }
    }

    /// The rate the model's front end expects.
    public static let hertz = 16000
    /// Where Debian's `pocketsphinx-en-us` puts the model.
    public static let defaultModelDirectory = "/usr/share/pocketsphinx/model/en-us"

    private let decoder: OpaquePointer
    private var inUtterance = false
    /// Whose utterance it decoded last (set by its pool).
    var lastTalker: ParticipantID?
    /// Whether an utterance is open (fed, not finished).
    public var isInUtterance: Bool { inUtterance }

    /// Loads a decoder (about 0.3 s and 90 MB): never on a real-time thread.
    public init(modelDirectory: String = Recognizer.defaultModelDirectory) throws(Error) {
        let files = ["\(modelDirectory)/en-us", "\(modelDirectory)/en-us.lm.bin", "\(modelDirectory)/cmudict-en-us.dict"]
        for f in files where access(f, R_OK) != 0 {
            throw .unavailable("model file \(f) missing (Debian package pocketsphinx-en-us)")
        }
        let args = [
            "-hmm", files[0], "-lm", files[1], "-dict", files[2],
            "-samprate", "\(Self.hertz)", "-logfn", "/dev/null",
        ]
        // cmd_ln_init is variadic; cmd_ln_parse_r takes the same arguments as an argv.
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        defer { argv.forEach { free($0) } }
        guard let config = cmd_ln_parse_r(nil, ps_args(), Int32(argv.count), &argv, 1) else {
            throw .unavailable("bad configuration")
        }
        defer { cmd_ln_free_r(config) }
        guard let decoder = ps_init(config) else { throw .unavailable("the decoder did not start") }
        self.decoder = decoder
    }

    deinit {
        ps_free(decoder)
        // Right after: glibc keeps what ps_free released (about 90 MB) until asked.
        Self.returnFreedMemory()
    }

    /// Feeds the next samples of the current utterance (starting one if none is open).
    public func feed(_ samples: UnsafeBufferPointer<Int16>) {
        guard let base = samples.baseAddress, !samples.isEmpty else { return }
        if !inUtterance {
            ps_start_utt(decoder)
            inUtterance = true
        }
        ps_process_raw(decoder, base, samples.count, 0, 0)
    }

    /// The live cepstral mean (the channel's average spectrum, which PocketSphinx subtracts and
    /// updates as it hears). It adapts to whoever the decoder heard last, so a pooled decoder is
    /// given each talker's own mean at the start of its utterance and the talker keeps the updated
    /// one after (measured: carried over from another talker, or fresh, it costs a third of the
    /// words of an utterance).
    public var cepstralMean: [Float] {
        get {
            guard let feat = ps_get_feat(decoder), let cmn = feat.pointee.cmn_struct else { return [] }
            var v = [mfcc_t](repeating: 0, count: Int(feat.pointee.cepsize))
            cmn_live_get(cmn, &v)
            return v.map { Float($0) }
        }
        set {
            guard let feat = ps_get_feat(decoder), let cmn = feat.pointee.cmn_struct,
                newValue.count == Int(feat.pointee.cepsize)
            else { return }
            let v = newValue.map { mfcc_t($0) }
            cmn_live_set(cmn, v)
        }
    }

    /// Ends the current utterance and returns its words ("" when nothing was recognized or no
    /// utterance was open).
    public func finish() -> String {
        guard inUtterance else { return "" }
        inUtterance = false
        ps_end_utt(decoder)
        guard let hypothesis = ps_get_hyp(decoder, nil) else { return "" }
        return String(cString: hypothesis)
    }

    /// Gives freed heap back to the system. glibc keeps what `ps_free` released (about 190 MB for
    /// two decoders) until asked; call after freeing recognizers.
    public static func returnFreedMemory() {
        cchamade_malloc_trim()
    }
}
