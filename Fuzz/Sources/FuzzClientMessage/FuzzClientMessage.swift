import ChamadeWire
import FuzzSupport

// Every WebSocket text message of SPEC §4 through the decoder a session uses: whatever the bytes,
// it gives a request within the contract's bounds or a refusal with one of the contract's codes.

private let codes: Set<String> = [
    "invalid_message", "invalid_audio", "frame_too_large", "unsupported_sample_rate", "invalid_text",
    "invalid_dtmf", "unknown_type",
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let input = FuzzInput(data, count)
    let text = String(decoding: input.bytes, as: UTF8.self)
    do throws(ClientRequest.Refusal) {
        switch try ClientRequest(parsing: text) {
        case .audio(let pcm, _): fuzzCheck(pcm.count <= WireLimits.audioBytes, "audio over the limit")
        case .sendChat(let t), .say(let t):
            fuzzCheck((1...WireLimits.textScalars).contains(t.unicodeScalars.count), "text outside 1...10000 scalars")
        case .dtmf(let d):
            fuzzCheck(!d.isEmpty && d.utf8.count <= 64 && d.utf8.allSatisfy { "0123456789*#ABCD".utf8.contains($0) }, "bad digits")
        case .mark(let name): fuzzCheck(name.utf8.count <= WireLimits.markNameBytes, "mark name too long")
        case .audioConfig, .clear: break
        }
    } catch {
        fuzzCheck(codes.contains(error.code), "unknown refusal code \(error.code)")
        fuzzCheck(!error.message.isEmpty, "refusal without words")
    }
    return 0
}
