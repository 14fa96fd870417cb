@testable import ChamadeSIP
import CLibre
import ChamadeMedia
import FuzzSupport

// Our side of SDP (SPEC §6): any body, decoded by libre as an offer, then what we make of it —
// the codec and telephone-event chosen, the address, the direction — and the answer built from
// that. libre's own parser is C and its own project; this checks the code on top of it.

private let local = Endpoint(address: 0x7F00_0001, port: 40000)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let bytes = FuzzInput(data, count).bytes
    guard let ours = try? SessionDescription(local: local, formats: SessionDescription.offered) else {
        fatalError("our own offer failed")
    }
    guard ours.decode(bytes: bytes, offer: true), let media = ours.negotiated() else { return 0 }
    fuzzCheck(media.payloadType <= 127, "payload type out of range")
    fuzzCheck(media.remote.port != 0 || !media.peerReceives, "sending to port 0")
    if let te = media.telephoneEventPayloadType { fuzzCheck(te <= 127, "telephone-event type out of range") }
    let formats = SessionDescription.answerFormats(for: media)
    fuzzCheck(formats.count == (media.telephoneEventPayloadType == nil ? 1 : 2), "answer formats")
    guard let answer = try? SessionDescription(local: local, formats: formats) else {
        fatalError("the answer to a negotiated offer could not be built")
    }
    fuzzCheck(answer.decode(bytes: bytes, offer: true), "the offer decoded once and not twice")
    if let body = answer.encode(offer: false) { _ = mem_deref(UnsafeMutableRawPointer(body)) }
    return 0
}
