import ChamadeWire
import Testing

/// A client frame: masked unless told otherwise (the payload is left unmasked: the checker reads
/// headers only).
private func frame(_ opcode: UInt8, _ length: Int, fin: Bool = true, masked: Bool = true, rsv: UInt8 = 0) -> [UInt8] {
    var b: [UInt8] = [(fin ? 0x80 : 0) | rsv | opcode]
    let m: UInt8 = masked ? 0x80 : 0
    if length < 126 {
        b.append(m | UInt8(length))
    } else if length < 65536 {
        b += [m | 126, UInt8(length >> 8), UInt8(length & 0xFF)]
    } else {
        b += [m | 127] + (0..<8).reversed().map { UInt8((length >> (8 * $0)) & 0xFF) }
    }
    if masked { b += [1, 2, 3, 4] }
    return b + [UInt8](repeating: 0x41, count: length)
}

private func verdict(_ stream: [UInt8], limit: Int = 16 << 20) -> UInt16? {
    var c = ClientFrameChecker(maxMessageBytes: limit)
    return stream.withUnsafeBytes { c.consume($0) }?.code
}

@Suite struct ClientFrameCheckerTests {
    @Test func followsWellFormedStreams() {
        #expect(verdict(frame(1, 10) + frame(2, 70_000) + frame(9, 3) + frame(2, 200)) == nil)
        // Fragments with a ping between them, up to the 1,000 allowed.
        let fragmented = frame(1, 5, fin: false) + frame(9, 0) + (0..<998).flatMap { _ in frame(0, 0, fin: false) } + frame(0, 1)
        #expect(verdict(fragmented) == nil)
    }

    @Test func stopsEachViolationWithItsCode() {
        #expect(verdict(frame(1, 3, masked: false)) == 1002)
        #expect(verdict(frame(1, 3, rsv: 0x40)) == 1002)
        #expect(verdict(frame(3, 0)) == 1002)
        #expect(verdict(frame(0, 2)) == 1002)
        #expect(verdict(frame(1, 2, fin: false) + frame(1, 2)) == 1002)
        #expect(verdict(frame(9, 126)) == 1002)
        #expect(verdict(frame(8, 2, fin: false)) == 1002)
        #expect(verdict(frame(1, 0, fin: false) + (0..<1000).flatMap { _ in frame(0, 0, fin: false) }) == 1009)
        #expect(verdict(frame(2, 600, fin: false) + frame(0, 600), limit: 1000) == 1009)
        #expect(verdict(frame(2, 1001), limit: 1000) == 1009)
    }

    @Test func theVerdictDoesNotDependOnHowTheBytesArrive() {
        let stream = frame(1, 5, fin: false) + frame(0, 300, fin: false) + frame(0, 1) + frame(1, 2, masked: false)
        for cut in [1, 2, 3, 7, 64] {
            var c = ClientFrameChecker(maxMessageBytes: 1 << 20)
            var result: ClientFrameChecker.Violation?
            for start in stride(from: 0, to: stream.count, by: cut) {
                result = stream[start..<min(stream.count, start + cut)].withUnsafeBytes { c.consume($0) }
            }
            #expect(result?.code == 1002, "cut \(cut)")
        }
    }
}
