public import ChamadeCore
public import ChamadeDSP

/// The arithmetic of one room's tick: every participant's block in at its own rate, every
/// participant's mix-minus out at its own rate, and the room's full mix at the native rate.
///
/// Per tick: each input block is converted to the native rate (a private converter per participant,
/// state carried across ticks), the native rows are summed in 32 bits, and each participant's
/// `saturate16(total − own)` is converted back to its rate. All buffers are allocated in `init`.
///
/// Threading: single-threaded; the engine's clock thread or an offline driver (replay) owns it.
/// `tick()` is real-time safe: it allocates nothing and calls only `src_process` in C.
public struct RoomMixer: ~Copyable {
    public let nativeRate: SampleRate
    public let participantCount: Int

    private let rates: UnsafeMutableBufferPointer<SampleRate>
    private let inbound: UnsafeMutablePointer<SampleRateConverter>
    private let outbound: UnsafeMutablePointer<SampleRateConverter>
    /// Own-rate input blocks, one slot of `maxBlock` samples per participant.
    private let inputs: UnsafeMutableBufferPointer<Int16>
    /// Own-rate output blocks, same layout.
    private let outputs: UnsafeMutableBufferPointer<Int16>
    /// Native-rate rows, `participantCount × nativeBlock`.
    private let rows: UnsafeMutableBufferPointer<Int16>
    private let total: UnsafeMutableBufferPointer<Int32>
    private let room: UnsafeMutableBufferPointer<Int16>
    private let nativeScratch: UnsafeMutableBufferPointer<Int16>
    private let floatIn: UnsafeMutableBufferPointer<Float>
    private let floatOut: UnsafeMutableBufferPointer<Float>
    private let maxBlock: Int

    /// A room at `nativeRate` with one participant per entry of `participantRates`. Allocates.
    public init(
        nativeRate: SampleRate, participantRates: [SampleRate], quality: ConverterQuality = .default
    ) throws(SampleRateConverter.Error) {
        let n = participantRates.count
        let maxBlock = SampleRate.hz48000.blockSampleCount
        let nativeBlock = nativeRate.blockSampleCount
        let inbound = UnsafeMutablePointer<SampleRateConverter>.allocate(capacity: n)
        let outbound = UnsafeMutablePointer<SampleRateConverter>.allocate(capacity: n)
        var made = 0
        do throws(SampleRateConverter.Error) {
            while made < n {
                let rate = participantRates[made]
                (inbound + made).initialize(to: try SampleRateConverter(from: rate, to: nativeRate, quality: quality))
                do throws(SampleRateConverter.Error) {
                    (outbound + made).initialize(to: try SampleRateConverter(from: nativeRate, to: rate, quality: quality))
                } catch {
                    (inbound + made).deinitialize(count: 1)
                    throw error
                }
                made += 1
            }
        } catch {
            inbound.deinitialize(count: made)
            outbound.deinitialize(count: made)
            inbound.deallocate()
            outbound.deallocate()
            throw error
        }
        self.nativeRate = nativeRate
        self.participantCount = n
        self.maxBlock = maxBlock
        self.inbound = inbound
        self.outbound = outbound
        self.rates = .allocate(capacity: n)
        _ = self.rates.initialize(from: participantRates)
        self.inputs = Self.zeroed(Int16.self, n * maxBlock)
        self.outputs = Self.zeroed(Int16.self, n * maxBlock)
        self.rows = Self.zeroed(Int16.self, max(1, n * nativeBlock))
        self.total = Self.zeroed(Int32.self, nativeBlock)
        self.room = Self.zeroed(Int16.self, nativeBlock)
        self.nativeScratch = Self.zeroed(Int16.self, nativeBlock)
        self.floatIn = Self.zeroed(Float.self, maxBlock)
        self.floatOut = Self.zeroed(Float.self, maxBlock)
    }

    private static func zeroed<T: BitwiseCopyable & Numeric>(_: T.Type, _ count: Int) -> UnsafeMutableBufferPointer<T> {
        let b = UnsafeMutableBufferPointer<T>.allocate(capacity: count)
        b.initialize(repeating: 0)
        return b
    }

    deinit {
        inbound.deinitialize(count: participantCount)
        outbound.deinitialize(count: participantCount)
        inbound.deallocate()
        outbound.deallocate()
        rates.deallocate()
        inputs.deallocate()
        outputs.deallocate()
        rows.deallocate()
        total.deallocate()
        room.deallocate()
        nativeScratch.deallocate()
        floatIn.deallocate()
        floatOut.deallocate()
    }

    /// Participant `index`'s rate.
    public func rate(of index: Int) -> SampleRate { rates[index] }

    /// Where to put participant `index`'s next block (its rate's block size). Real-time safe.
    public func inputBlock(_ index: Int) -> UnsafeMutableBufferPointer<Int16> {
        UnsafeMutableBufferPointer(rebasing: inputs[(index * maxBlock)..<(index * maxBlock + rates[index].blockSampleCount)])
    }

    /// Participant `index`'s mix-minus from the last tick, at its rate. Real-time safe.
    public func outputBlock(_ index: Int) -> UnsafeBufferPointer<Int16> {
        UnsafeBufferPointer(rebasing: outputs[(index * maxBlock)..<(index * maxBlock + rates[index].blockSampleCount)])
    }

    /// The room's full mix from the last tick, at the native rate. Real-time safe.
    public var roomBlock: UnsafeBufferPointer<Int16> { UnsafeBufferPointer(room) }

    /// Runs one tick over the current input blocks. Real-time safe.
    public mutating func tick() {
        let nativeBlock = nativeRate.blockSampleCount
        for p in 0..<participantCount {
            let row = UnsafeMutableBufferPointer(rebasing: rows[(p * nativeBlock)..<((p + 1) * nativeBlock)])
            // `(base + p).pointee`, not `base[p]`: the subscript form of a mutating call on a ~Copyable
            // pointee crashes the Swift 6.3.1 compiler under -sanitize=thread ("Invalid bitcast").
            (inbound + p).pointee.process(
                UnsafeBufferPointer(inputBlock(p)), into: row, inputScratch: scratchIn(p), outputScratch: scratchOutNative)
        }
        MixMinus.accumulate(rows: UnsafeBufferPointer(rows), participantCount: participantCount, into: total)
        MixMinus.saturate(UnsafeBufferPointer(total), into: room)
        for p in 0..<participantCount {
            let row = UnsafeBufferPointer(rebasing: rows[(p * nativeBlock)..<((p + 1) * nativeBlock)])
            MixMinus.subtract(own: row, from: UnsafeBufferPointer(total), into: nativeScratch)
            let out = UnsafeMutableBufferPointer(mutating: outputBlock(p))
            (outbound + p).pointee.process(
                UnsafeBufferPointer(nativeScratch), into: out, inputScratch: scratchInNative, outputScratch: scratchOut(p))
        }
    }

    /// Float scratch sized for participant `p`'s block (input side of its inbound conversion).
    private func scratchIn(_ p: Int) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: floatIn[0..<rates[p].blockSampleCount])
    }

    /// Float scratch sized for participant `p`'s block (output side of its outbound conversion).
    private func scratchOut(_ p: Int) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: floatOut[0..<rates[p].blockSampleCount])
    }

    private var scratchOutNative: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: floatOut[0..<nativeRate.blockSampleCount])
    }

    private var scratchInNative: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: floatIn[0..<nativeRate.blockSampleCount])
    }
}
