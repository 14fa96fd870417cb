import ChamadeCore
import ChamadeTesting
import Foundation
import Testing

/// Reference outputs of other implementations over every input (fixtures/g711/README.md).
private enum Reference {
    static func bytes(_ name: String) throws -> [UInt8] {
        let data = try #require(FileManager.default.contents(atPath: Fixtures.path("g711/" + name)))
        return [UInt8](data)
    }

    /// 65,536 codes, one per input sample from −32768 to 32767 in order.
    static func encoded(_ name: String) throws -> [UInt8] {
        let b = try bytes(name)
        try #require(b.count == 65536)
        return b
    }

    /// 256 samples (s16le), one per code from 0x00 to 0xFF.
    static func decoded(_ name: String) throws -> [Int16] {
        let b = try bytes(name)
        try #require(b.count == 512)
        return (0..<256).map { Int16(bitPattern: UInt16(b[2 * $0]) | UInt16(b[2 * $0 + 1]) << 8) }
    }
}

struct LawCase: Sendable, CustomStringConvertible {
    let law: G711.Law
    let tag: String
    var description: String { tag }
    static let all = [LawCase(law: .mu, tag: "pcmu"), LawCase(law: .a, tag: "pcma")]
}

@Suite("G.711 PCMU and PCMA")
struct G711Tests {
    static let allSamples: [Int16] = (0..<65536).map { Int16(truncatingIfNeeded: $0 - 32768) }

    /// Every code decodes to exactly what ffmpeg 5.1 decodes it to.
    @Test(arguments: LawCase.all)
    func decodeEqualsFFmpegForAll256Codes(_ c: LawCase) throws {
        let reference = try Reference.decoded("ffmpeg_\(c.tag)_decoded.s16le")
        for code in 0...255 {
            #expect(c.law.decode(UInt8(code)) == reference[code], "code \(code)")
        }
        let table = G711.DecodeTable(c.law)
        for code in 0...255 { #expect(table[UInt8(code)] == reference[code]) }
    }

    /// Every 16-bit sample encodes to exactly what the ITU-T G.191 reference encoder gives.
    @Test(arguments: LawCase.all)
    func encodeEqualsITUReferenceForAll65536Samples(_ c: LawCase) throws {
        let reference = try Reference.encoded("g191_\(c.tag)_encoded.u8")
        var mismatches = 0
        for k in 0..<65536 where c.law.encode(Self.allSamples[k]) != reference[k] { mismatches += 1 }
        #expect(mismatches == 0)
    }

    /// ffmpeg's encoder (midpoint cuts) differs from G.711's decision values on exactly 964 inputs per
    /// law, each time by one quantisation step of the same sign; everywhere else the codes are equal.
    @Test(arguments: LawCase.all)
    func encodeDiffersFromFFmpegOnlyByOneStepAtKnownInputs(_ c: LawCase) throws {
        let ffmpeg = try Reference.encoded("ffmpeg_\(c.tag)_encoded.u8")
        let levels = Set((0...255).map { c.law.decode(UInt8($0)) }).sorted()
        var rank: [Int16: Int] = [:]
        for (i, v) in levels.enumerated() { rank[v] = i }
        var differences = 0
        for k in 0..<65536 {
            let ours = c.law.encode(Self.allSamples[k])
            guard ours != ffmpeg[k] else { continue }
            differences += 1
            let step = rank[c.law.decode(ours)]! - rank[c.law.decode(ffmpeg[k])]!
            #expect(abs(step) == 1, "sample \(Self.allSamples[k])")
        }
        #expect(differences == 964)
    }

    /// Encoding a decoded value gives back a code that decodes to the same value (both zero codes of
    /// µ-law decode to 0, which encodes as +0 = 0xFF).
    @Test(arguments: LawCase.all)
    func decodeThenEncodeIsIdentity(_ c: LawCase) {
        for code in 0...255 {
            let sample = c.law.decode(UInt8(code))
            let again = c.law.encode(sample)
            #expect(c.law.decode(again) == sample)
            if !(c.law == .mu && code == 0x7F) { #expect(again == UInt8(code), "code \(code)") }
        }
    }

    /// The quantisation error stays within half of the widest step (µ-law 1024 → 512 plus the
    /// clipping region beyond 32124; A-law 1024 → 512).
    @Test(arguments: LawCase.all)
    func errorIsBoundedAndMonotonic(_ c: LawCase) {
        var previous = Int.min
        for sample in Self.allSamples {
            let y = Int(c.law.decode(c.law.encode(sample)))
            #expect(y >= previous, "not monotonic at \(sample)")
            previous = y
            let bound = c.law == .mu ? (Int(sample) > 32124 || Int(sample) < -32124 ? 644 : 512) : 512
            #expect(abs(y - Int(sample)) <= bound, "sample \(sample)")
        }
    }

    @Test func knownValues() {
        #expect(G711.encodeMuLaw(0) == 0xFF)
        #expect(G711.decodeMuLaw(0xFF) == 0)
        #expect(G711.decodeMuLaw(0x7F) == 0)
        #expect(G711.encodeMuLaw(-1) == 0x7F)  // G.191: one's complement, −1 is −0
        #expect(G711.encodeMuLaw(32767) == 0x80)
        #expect(G711.encodeMuLaw(-32768) == 0x00)
        #expect(G711.decodeMuLaw(0x80) == 32124)
        #expect(G711.decodeMuLaw(0x00) == -32124)
        #expect(G711.encodeALaw(0) == 0xD5)
        #expect(G711.decodeALaw(0xD5) == 8)
        #expect(G711.encodeALaw(8) == 0xD5)
        #expect(G711.encodeALaw(-1) == 0x55)
        #expect(G711.decodeALaw(0x55) == -8)
        #expect(G711.encodeALaw(32767) == 0xAA)
        #expect(G711.encodeALaw(-32768) == 0x2A)
        #expect(G711.decodeALaw(0xAA) == 32256)
        #expect(G711.decodeALaw(0x2A) == -32256)
        #expect(G711.Law.mu.staticPayloadType == 0)
        #expect(G711.Law.a.staticPayloadType == 8)
    }

    /// The buffer versions equal the scalar ones, and touch nothing past `input.count`.
    @Test(arguments: LawCase.all)
    func bufferVersionsEqualScalar(_ c: LawCase) {
        var codes = [UInt8](repeating: 0xEE, count: 65536 + 4)
        Self.allSamples.withUnsafeBufferPointer { i in codes.withUnsafeMutableBufferPointer { c.law.encode(i, into: $0) } }
        for k in 0..<65536 { #expect(codes[k] == c.law.encode(Self.allSamples[k])) }
        #expect(codes[65536...] == [0xEE, 0xEE, 0xEE, 0xEE])
        let all = (0...255).map { UInt8($0) }
        var samples = [Int16](repeating: 0x55, count: 257)
        all.withUnsafeBufferPointer { i in samples.withUnsafeMutableBufferPointer { c.law.decode(i, into: $0) } }
        for k in 0...255 { #expect(samples[k] == c.law.decode(UInt8(k))) }
        #expect(samples[256] == 0x55)
        let empty = UnsafeBufferPointer<Int16>(start: nil, count: 0)
        c.law.encode(empty, into: UnsafeMutableBufferPointer(start: nil, count: 0))
    }
}
