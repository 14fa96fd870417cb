import Foundation

// The WebSocket messages the server sends (SPEC §4); what clients send is ChamadeWire's `ClientRequest`.

enum ServerMessage {
    struct State: Encodable {
        var type = "call_state"
        var state: CallState
    }

    struct Error: Encodable {
        var type = "call_error"
        var code: String
        var message: String
    }

    struct Chat: Encodable {
        var type = "call_chat"
        var sender: String
        var text: String
    }

    /// `call_error` `bridge_disconnected`: the room's platform leg is gone (SPEC §4, §6).
    /// An outbound SIP call that did not connect (SPEC §6): `call_error` `call_failed` with the
    /// final SIP status.
    struct CallFailed: Encodable {
        var type = "call_error"
        var code = "call_failed"
        var message: String
        var sipStatus: Int
        enum CodingKeys: String, CodingKey {
            case type, code, message
            case sipStatus = "sip_status"
        }
    }

    static func callFailed(status: Int) -> CallFailed {
        CallFailed(message: "The SIP call failed with status \(status)\(status == 408 ? " (no final answer in time)" : "").", sipStatus: status)
    }

    static func bridgeDisconnected(_ why: String) -> Error {
        Error(code: "bridge_disconnected", message: "\(why) Create the call again with the same meeting_url to reconnect.")
    }

    struct DTMF: Encodable {
        var type = "call_dtmf"
        var digit: String
        var durationMs: Int
        enum CodingKeys: String, CodingKey {
            case type, digit
            case durationMs = "duration_ms"
        }
    }

    struct Speaking: Encodable {
        var type = "call_speaking"
        var speaker: String
        var participantID: String
        var speaking: Bool
        enum CodingKeys: String, CodingKey {
            case type, speaker, speaking
            case participantID = "participant_id"
        }
    }

    struct Typing: Encodable {
        var type = "call_typing"
        var sender: String
    }

    struct Transcript: Encodable {
        var type = "call_transcript"
        var speaker: String
        var text: String
        var participantID: String
        var startMs: Int?
        var endMs: Int?
        enum CodingKeys: String, CodingKey {
            case type, speaker, text
            case participantID = "participant_id"
            case startMs = "start_ms"
            case endMs = "end_ms"
        }
    }

    struct AudioConfig: Encodable {
        var type = "audio_config"
        var sampleRate: Int
        var nativeSampleRate: Int
        var resampling: Bool
        var format = "pcm_s16le"
        var channels = 1
        var frameDurationMs = 20
        var frameBytes: Int
        var ready = true
        var receive: Bool
        enum CodingKeys: String, CodingKey {
            case type, resampling, format, channels, ready, receive
            case sampleRate = "sample_rate"
            case nativeSampleRate = "native_sample_rate"
            case frameDurationMs = "frame_duration_ms"
            case frameBytes = "frame_bytes"
        }
    }

    struct Cleared: Encodable {
        var type = "cleared"
        var droppedMs: Int
        var spokenText = ""
        enum CodingKeys: String, CodingKey {
            case type
            case droppedMs = "dropped_ms"
            case spokenText = "spoken_text"
        }
    }

    struct Mark: Encodable {
        var type = "mark"
        var name: String
    }
}
