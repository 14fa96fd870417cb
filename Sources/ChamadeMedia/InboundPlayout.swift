import ChamadeCore
import ChamadeDSP

/// The receiving half of a leg without its socket: jitter buffer → decoder and concealment → one
/// 20 ms block per pull (SPEC §6 "Receiving").
///
/// The jitter buffer hands out whole packets (10–120 ms) and concealment spans; their PCM goes
/// into a residue from which exactly one block leaves per pull, so any packet duration becomes a
/// continuous 20 ms stream. Loss is concealed with Opus in-band FEC when the packet after the gap
/// is buffered, else Opus PLC; G.711 with its pitch-repeating fade. Storage is allocated in `init`;
/// `nextBlock` allocates nothing. One owner (a leg's media worker, or a test in virtual time).
final class InboundPlayout {
    var jitter: JitterBuffer
    let rate: SampleRate
    let clockRate: Int
    private let decoder: StreamDecoder
    private let residue: UnsafeMutableBufferPointer<Int16>
    private var residueCount = 0
    /// Whether Opus losses use the in-band FEC of the next packet when it is buffered (always, in a
    /// leg; off only to measure what FEC buys).
    var forwardErrorCorrection = true

    init(codec: MediaCodec, rate: SampleRate, configuration: JitterBuffer.Configuration? = nil) throws(RTPLegError) {
        self.rate = rate
        clockRate = codec.clockRate
        var config = configuration ?? JitterBuffer.Configuration(clockRate: codec.clockRate)
        config.clockRate = codec.clockRate
        do throws(JitterBuffer.ConfigurationError) { jitter = try JitterBuffer(configuration: config) } catch {
            throw .codec("jitter buffer: \(error)")
        }
        do throws(Opus.Error) { decoder = try StreamDecoder(codec: codec, rate: rate) } catch { throw .codec("\(error)") }
        // A packet of up to 120 ms plus a block, at the leg's rate.
        residue = .allocate(capacity: rate.hertz * 140 / 1000 + 16)
    }

    deinit { residue.deallocate() }

    /// The next 20 ms block to play (valid until the next call), or nil when the stream is idle or
    /// filling: play silence then.
    func nextBlock() -> UnsafeBufferPointer<Int16>? {
        // The block handed out last time leaves the residue now.
        if handedOut > 0 {
            residueCount -= handedOut
            if residueCount > 0 { residue.baseAddress!.update(from: residue.baseAddress! + handedOut, count: residueCount) }
            handedOut = 0
        }
        let block = jitter.pull()
        guard block.kind == .playing else {
            residueCount = 0
            return nil
        }
        for i in 0..<block.itemCount {
            let free = UnsafeMutableBufferPointer(rebasing: residue[residueCount...])
            switch jitter.item(i) {
            case .packet(let packet):
                let expected = packet.sampleCount * rate.hertz / clockRate
                var n = decoder.decode(packet.payload, into: free)
                if n != expected {
                    // Undecodable (or not the length its TOC claimed): conceal its length instead.
                    n = decoder.conceal(expected, following: nil, into: free)
                }
                residueCount += n
            case .conceal(let count, let following):
                residueCount += decoder.conceal(count * rate.hertz / clockRate, following: forwardErrorCorrection ? following?.payload : nil, into: free)
            }
        }
        let n = rate.blockSampleCount
        guard residueCount >= n else {
            residueCount = 0
            return nil
        }
        handedOut = n
        return UnsafeBufferPointer(rebasing: residue[0..<n])
    }

    /// Samples at the front of the residue handed out by the last `nextBlock`.
    private var handedOut = 0
}
