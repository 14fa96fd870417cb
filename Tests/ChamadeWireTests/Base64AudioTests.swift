import ChamadeWire
import Foundation
import Testing

@Suite struct Base64AudioTests {
    @Test func decodesWhatFoundationEncodesAtEveryLength() throws {
        var bytes: [UInt8] = []
        for n in 0..<300 {
            let text = Data(bytes).base64EncodedString()
            #expect(try Base64Audio.decode(text, limit: 1 << 20) == bytes, "length \(n)")
            bytes.append(UInt8(truncatingIfNeeded: n &* 97 &+ 13))
        }
    }

    @Test(arguments: [
        "AAAA==",  // padding after a whole block (the probe's "extra ==")
        "AAAA====", "AA=A", "A===", "====", "AAA", "AAAAA",  // padding inside, lone chars, wrong length
        "AA\nAA", " AAAA", "AA-_",  // whitespace, URL-safe alphabet
        "AB==", "AAB=",  // bits under the padding not zero: not the canonical form of any bytes
        "AAAA\u{00e9}AA",
    ])
    func refusesWhatIsNotStrictBase64(_ text: String) {
        #expect(throws: Base64Audio.Invalid.malformed) { try Base64Audio.decode(text, limit: 1 << 20) }
    }

    @Test func refusesOverTheLimitBeforeDecoding() throws {
        let text = Data(count: 1001).base64EncodedString()
        #expect(throws: Base64Audio.Invalid.tooLarge(byteCount: 1001)) { try Base64Audio.decode(text, limit: 1000) }
        #expect(try Base64Audio.decode(Data(count: 1000).base64EncodedString(), limit: 1000).count == 1000)
    }
}
