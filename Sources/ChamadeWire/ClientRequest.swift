public import ChamadeCore
import Foundation

/// A client's WebSocket text message (SPEC §4), decoded and checked: everything a session acts on,
/// or the `call_error` it answers. Pure, so that every message can be fuzzed without a server.
public enum ClientRequest: Sendable, Equatable {
    /// PCM s16le bytes; `sampleRate` when the message named one.
    case audio(pcm: [UInt8], sampleRate: SampleRate?)
    case audioConfig(sampleRate: SampleRate?, receive: Bool?)
    case sendChat(text: String)
    case say(text: String)
    case dtmf(digits: String)
    case clear
    case mark(name: String)

    /// A `call_error`: its code and words.
    public struct Refusal: Error, Sendable, Equatable {
        public var code: String
        public var message: String
        init(_ code: String, _ message: String) { (self.code, self.message) = (code, message) }
    }

    public init(parsing text: String) throws(Refusal) {
        guard let m = try? JSONDecoder().decode(ClientMessage.self, from: Data(text.utf8)) else {
            throw Refusal("invalid_message", "expected a JSON object with a string \"type\"")
        }
        if let field = m.invalidField {
            throw Refusal(ClientMessage.code(forField: field), "\"\(field)\" has the wrong type for a \"\(m.type)\" message")
        }
        switch m.type {
        case "audio":
            guard let b64 = m.audio else { throw Refusal("invalid_audio", "\"audio\" must be base64-encoded PCM s16le") }
            let pcm: [UInt8]
            do throws(Base64Audio.Invalid) {
                pcm = try Base64Audio.decode(b64, limit: WireLimits.audioBytes)
            } catch {
                switch error {
                case .malformed: throw Refusal("invalid_audio", "\"audio\" must be base64-encoded PCM s16le")
                case .tooLarge(let n):
                    throw Refusal("frame_too_large", "audio messages carry at most 1 MiB of PCM; this one had \(n)")
                }
            }
            self = .audio(pcm: pcm, sampleRate: try Self.rate(m.sampleRate))
        case "audio_config":
            self = .audioConfig(sampleRate: try Self.rate(m.sampleRate), receive: m.receive)
        case "send_chat":
            self = .sendChat(text: try Self.text(m.text))
        case "say":
            self = .say(text: try Self.text(m.text))
        case "dtmf":
            guard let digits = m.digits, WireLimits.isValidDTMF(digits) else {
                throw Refusal("invalid_dtmf", "digits must be 1 to 64 of 0-9 * # A-D")
            }
            self = .dtmf(digits: digits)
        case "clear":
            self = .clear
        case "mark":
            let name = m.name ?? ""
            guard name.utf8.count <= WireLimits.markNameBytes else {
                throw Refusal("invalid_message", "a mark name is at most 256 bytes; this one had \(name.utf8.count)")
            }
            self = .mark(name: name)
        default:
            throw Refusal("unknown_type", "unknown message type \"\(m.type)\"")
        }
    }

    private static func rate(_ hz: Int?) throws(Refusal) -> SampleRate? {
        guard let hz else { return nil }
        guard let rate = try? SampleRate(hertz: hz) else {
            throw Refusal("unsupported_sample_rate", "sample_rate \(hz) is not supported: use a multiple of 50 from 8000 to 48000")
        }
        return rate
    }

    private static func text(_ text: String?) throws(Refusal) -> String {
        guard let text, WireLimits.isValidText(text) else {
            throw Refusal("invalid_text", "\"text\" must be 1 to 10,000 characters")
        }
        return text
    }
}
