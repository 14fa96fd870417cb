import ChamadeWire
import Foundation
import FuzzSupport

// The strict base64 decoder against Foundation's encoder, both ways. First byte even: the rest is
// text to decode, and what decodes must be exactly what Foundation would encode back (one
// encoding per byte string), and within the limit. Odd: the rest is bytes, encoded by Foundation,
// which must decode back to themselves.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    var input = FuzzInput(data, count)
    let mode = input.integer(UInt8.self)
    let limit = Int(input.integer(UInt16.self))
    let rest = input.rest()
    if mode & 1 == 0 {
        do throws(Base64Audio.Invalid) {
            let bytes = try Base64Audio.decode(rest, limit: limit)
            fuzzCheck(bytes.count <= limit, "decoded past the limit")
            let back = Data(bytes).base64EncodedString()
            fuzzCheck(Array(back.utf8) == Array(rest), "accepted a non-canonical encoding")
        } catch {
            if case .tooLarge(let n) = error { fuzzCheck(n > limit, "refused as too large within the limit") }
        }
    } else {
        let text = Data(rest).base64EncodedString()
        do throws(Base64Audio.Invalid) {
            let bytes = try Base64Audio.decode(text, limit: rest.count)
            fuzzCheck(bytes == Array(rest), "round trip changed the bytes")
        } catch {
            fuzzCheck(false, "refused Foundation's own encoding: \(error)")
        }
    }
    return 0
}
