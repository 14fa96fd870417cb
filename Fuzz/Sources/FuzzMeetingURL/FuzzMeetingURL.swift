import ChamadeMedia
import ChamadeSIP
import FuzzSupport

// The meeting-URL parsers of SPEC §6 on any text: what they accept is within their grammar, and a
// SIP URI written back parses to itself.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let text = String(decoding: FuzzInput(data, count).bytes, as: UTF8.self)
    if let url = try? RTPURL(parsing: text) {
        fuzzCheck((1...65535).contains(url.port), "port out of range")
        fuzzCheck(url.payloadType <= 127 && url.telephoneEventPayloadType <= 127, "payload type out of range")
        fuzzCheck(url.payloadType != url.telephoneEventPayloadType, "pt and dtmf_pt equal")
        fuzzCheck(!url.name.isEmpty && url.name.unicodeScalars.count <= 100, "name out of bounds")
        fuzzCheck(!url.host.isEmpty, "empty host")
    }
    if let uri = try? SIPURI(parsing: text) {
        fuzzCheck(uri.port.map { (1...65535).contains($0) } ?? true, "port out of range")
        fuzzCheck(!uri.host.isEmpty, "empty host")
        let again = try? SIPURI(parsing: uri.description)
        fuzzCheck(again == uri, "\(uri.description) does not parse back to itself")
    }
    return 0
}
