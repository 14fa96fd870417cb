import ChamadeCore
import ChamadeWire
import Foundation
import Testing

private func refusal(_ text: String) -> String? {
    do throws(ClientRequest.Refusal) {
        _ = try ClientRequest(parsing: text)
        return nil
    } catch {
        return error.code
    }
}

@Suite struct ClientRequestTests {
    @Test func everyMessageOfTheContract() throws {
        let pcm: [UInt8] = [1, 2, 3, 4, 5]
        let b64 = Data(pcm).base64EncodedString()
        #expect(
            try ClientRequest(parsing: #"{"type":"audio","audio":"\#(b64)","sample_rate":24000}"#)
                == .audio(pcm: pcm, sampleRate: try SampleRate(hertz: 24000)))
        #expect(try ClientRequest(parsing: #"{"type":"audio","audio":""}"#) == .audio(pcm: [], sampleRate: nil))
        #expect(
            try ClientRequest(parsing: #"{"type":"audio_config","sample_rate":16000,"receive":false}"#)
                == .audioConfig(sampleRate: .hz16000, receive: false))
        #expect(try ClientRequest(parsing: #"{"type":"send_chat","text":"hi"}"#) == .sendChat(text: "hi"))
        #expect(try ClientRequest(parsing: #"{"type":"say","text":"hello"}"#) == .say(text: "hello"))
        #expect(try ClientRequest(parsing: #"{"type":"dtmf","digits":"12#*AD"}"#) == .dtmf(digits: "12#*AD"))
        #expect(try ClientRequest(parsing: #"{"type":"clear"}"#) == .clear)
        #expect(try ClientRequest(parsing: #"{"type":"mark","name":"turn"}"#) == .mark(name: "turn"))
        #expect(try ClientRequest(parsing: #"{"type":"mark"}"#) == .mark(name: ""))
    }

    @Test func eachBadInputHasItsCode() {
        let cases: [(String, String)] = [
            ("not json", "invalid_message"), ("[]", "invalid_message"), (#"{"type":7}"#, "invalid_message"),
            (#"{"type":"dance"}"#, "unknown_type"),
            (#"{"type":"audio","audio":"AAAA=="}"#, "invalid_audio"), (#"{"type":"audio"}"#, "invalid_audio"),
            (#"{"type":"audio","audio":5}"#, "invalid_audio"),
            (#"{"type":"audio","audio":"AAAA","sample_rate":44101}"#, "unsupported_sample_rate"),
            (#"{"type":"audio_config","sample_rate":"fast"}"#, "unsupported_sample_rate"),
            (#"{"type":"say","text":""}"#, "invalid_text"), (#"{"type":"send_chat"}"#, "invalid_text"),
            (#"{"type":"dtmf","digits":"12x"}"#, "invalid_dtmf"), (#"{"type":"dtmf"}"#, "invalid_dtmf"),
            (#"{"type":"dtmf","digits":"\#(String(repeating: "1", count: 65))"}"#, "invalid_dtmf"),
            (#"{"type":"mark","name":"\#(String(repeating: "m", count: 257))"}"#, "invalid_message"),
        ]
        for (text, code) in cases { #expect(refusal(text) == code, "\(text.prefix(60))") }
    }

    @Test func oversizedAudioIsRefusedAsTooLarge() {
        let b64 = Data(count: WireLimits.audioBytes + 3).base64EncodedString()
        #expect(refusal(#"{"type":"audio","audio":"\#(b64)"}"#) == "frame_too_large")
    }

    /// Text counts Unicode scalars, not grapheme clusters: "a" and 400,000 combining accents is one
    /// character to Swift and 400,001 to the contract.
    @Test func textIsCountedInScalars() {
        let accents = "a" + String(repeating: "\u{0301}", count: 400_000)
        #expect(accents.count == 1)
        #expect(refusal(#"{"type":"send_chat","text":"\#(accents)"}"#) == "invalid_text")
        #expect(refusal(#"{"type":"say","text":"\#(accents)"}"#) == "invalid_text")
        let tenThousand = "a" + String(repeating: "\u{0301}", count: 9_999)
        #expect(refusal(#"{"type":"send_chat","text":"\#(tenThousand)"}"#) == nil)
        #expect(WireLimits.isValidText(String(repeating: "é", count: 10_000)))
        #expect(!WireLimits.isValidText(String(repeating: "é", count: 10_001)))
    }
}
