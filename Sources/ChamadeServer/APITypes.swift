public import ChamadeCore
import Foundation
public import Hummingbird

// The bodies of SPEC §3, as Codable types. Requests decode leniently (unknown fields ignored) and
// are validated by the routes, so each bad field gets its own error code; responses encode exactly
// the contract's field names.

/// The platforms a call can join, with their native rate and capabilities (SPEC §3).
public enum Platform: String, CaseIterable, Sendable, Codable {
    case discord, teams, meet, zoom, telegram, slack, nctalk, sip, whatsapp, rtp

    /// The rate the platform's leg runs at: the room's native rate.
    public var nativeRate: SampleRate {
        switch self {
        case .discord, .meet, .nctalk, .slack, .rtp: .hz48000
        case .teams, .zoom, .telegram, .whatsapp: .hz16000
        case .sip: .hz8000
        }
    }

    /// What a call on this platform can do. SIP and RTP carry audio only.
    public var capabilities: [String] {
        switch self {
        case .sip, .rtp: ["audio_in", "audio_out"]
        default: ["audio_in", "audio_out", "read", "write", "typing"]
        }
    }
}

/// A call's state (SPEC §3).
public enum CallState: String, Sendable, Codable {
    case connecting, ringing, active, refused, ended

    /// Refused and ended calls change no more.
    public var isFinal: Bool { self == .refused || self == .ended }
}

/// `POST /api/call`.
struct CreateCallRequest: Decodable {
    var platform: String?
    var meetingURL: String?
    var agentName: String?
    var transcripts: Bool?
    var sttVoiceConfigID: String?
    var ttsVoiceConfigID: String?

    enum CodingKeys: String, CodingKey {
        case platform, transcripts
        case meetingURL = "meeting_url"
        case agentName = "agent_name"
        case sttVoiceConfigID = "stt_voice_config_id"
        case ttsVoiceConfigID = "tts_voice_config_id"
    }

    /// Which error code a type mismatch in a field maps to.
    static func code(forField field: String) -> String {
        switch field {
        case "platform": "invalid_platform"
        case "meeting_url": "invalid_meeting_url"
        case "stt_voice_config_id", "tts_voice_config_id": "unknown_voice_config"
        default: "invalid_\(field)"
        }
    }
}

/// `POST /api/call/{id}/chat`.
struct ChatRequest: Decodable {
    var text: String?
    var senderName: String?
    enum CodingKeys: String, CodingKey {
        case text
        case senderName = "sender_name"
    }
    static func code(forField field: String) -> String { field == "text" ? "invalid_text" : "invalid_\(field)" }
}

/// `POST /api/call/{id}/say`.
struct SayRequest: Decodable {
    var text: String?
    static func code(forField field: String) -> String { "invalid_text" }
}

/// `POST /api/call/{id}/dtmf`.
struct DTMFRequest: Decodable {
    var digits: String?
    static func code(forField field: String) -> String { "invalid_dtmf" }
}

/// The call object (SPEC §3).
public struct CallObject: ResponseEncodable, Sendable, Equatable {
    public struct Audio: Codable, Sendable, Equatable {
        public var sampleRate: Int
        public var format = "pcm_s16le"
        public var channels = 1
        public var frameDurationMs = 20
        public var frameBytes: Int
        enum CodingKeys: String, CodingKey {
            case format, channels
            case sampleRate = "sample_rate"
            case frameDurationMs = "frame_duration_ms"
            case frameBytes = "frame_bytes"
        }
    }

    public var callID: String
    public var roomID: String
    public var participantID: String
    public var textWSURL: String
    public var state: CallState
    public var capabilities: [String]
    public var platform: Platform
    public var meetingURL: String
    public var agentName: String
    public var direction: String
    public var caller: String
    public var createdAt: String
    public var endedAt: String?
    public var audio: Audio
    /// The room's platform leg (`rtp` and `sip` rooms), SPEC §6.
    public var leg: LegObject?
    /// Present on `GET /api/call/{id}` only.
    public var transcript: [String]?
    public var transcriptLength: Int?

    enum CodingKeys: String, CodingKey {
        case state, capabilities, platform, direction, caller, audio, transcript, leg
        case callID = "call_id"
        case roomID = "room_id"
        case participantID = "participant_id"
        case textWSURL = "text_ws_url"
        case meetingURL = "meeting_url"
        case agentName = "agent_name"
        case createdAt = "created_at"
        case endedAt = "ended_at"
        case transcriptLength = "transcript_length"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(callID, forKey: .callID)
        try c.encode(roomID, forKey: .roomID)
        try c.encode(participantID, forKey: .participantID)
        try c.encode(textWSURL, forKey: .textWSURL)
        try c.encode(state, forKey: .state)
        try c.encode(capabilities, forKey: .capabilities)
        try c.encode(platform, forKey: .platform)
        try c.encode(meetingURL, forKey: .meetingURL)
        try c.encode(agentName, forKey: .agentName)
        try c.encode(direction, forKey: .direction)
        try c.encode(caller, forKey: .caller)
        try c.encode(createdAt, forKey: .createdAt)
        // `ended_at` is always present: null while the call lives.
        try c.encode(endedAt, forKey: .endedAt)
        try c.encode(audio, forKey: .audio)
        try c.encodeIfPresent(leg, forKey: .leg)
        try c.encodeIfPresent(transcript, forKey: .transcript)
        try c.encodeIfPresent(transcriptLength, forKey: .transcriptLength)
    }
}

/// A platform leg as the call object shows it (SPEC §6).
public struct LegObject: Codable, Sendable, Equatable {
    public var kind: String
    public var codec: String
    public var payloadType: Int
    public var localRTP: String
    public var remoteRTP: String?
    public var packetsReceived: Int
    public var packetsLost: Int
    public var packetsLate: Int
    public var jitterMs: Double
    public var jitterBufferMs: Double
    public var concealedMs: Double
    public var packetsSent: Int
    public var packetsInvalid: Int
    /// From the far end's RTCP reports on the leg's stream (null before the first).
    public var remoteFractionLost: Double?
    public var remoteJitterMs: Double?
    public var rtcpReceived: Int
    public var rtcpSent: Int
    public var sipCallID: String?

    enum CodingKeys: String, CodingKey {
        case kind, codec
        case payloadType = "payload_type"
        case localRTP = "local_rtp"
        case remoteRTP = "remote_rtp"
        case packetsReceived = "packets_received"
        case packetsLost = "packets_lost"
        case packetsLate = "packets_late"
        case jitterMs = "jitter_ms"
        case jitterBufferMs = "jitter_buffer_ms"
        case concealedMs = "concealed_ms"
        case packetsSent = "packets_sent"
        case packetsInvalid = "packets_invalid"
        case remoteFractionLost = "remote_fraction_lost"
        case remoteJitterMs = "remote_jitter_ms"
        case rtcpReceived = "rtcp_received"
        case rtcpSent = "rtcp_sent"
        case sipCallID = "sip_call_id"
    }
}

/// `{"queued_ms": N}`: how long what is queued takes to play or send.
struct Queued: ResponseEncodable {
    var queuedMs: Int
    enum CodingKeys: String, CodingKey { case queuedMs = "queued_ms" }
}

struct CallList: ResponseEncodable {
    var calls: [CallObject]
}

struct OK: ResponseEncodable {
    var ok = true
}

struct StopSpeakingResponse: ResponseEncodable {
    var droppedMs: Int
    var spokenText: String
    enum CodingKeys: String, CodingKey {
        case droppedMs = "dropped_ms"
        case spokenText = "spoken_text"
    }
}

/// `GET /api/account`.
struct AccountResponse: ResponseEncodable {
    struct PlatformInfo: Encodable {
        var status: String
        var nativeSampleRate: Int
        var capabilities: [String]
        enum CodingKeys: String, CodingKey {
            case status, capabilities
            case nativeSampleRate = "native_sample_rate"
        }
    }
    struct Limits: Encodable {
        var maxCallsPerKey: Int
        var maxStreamsPerCall: Int
        var endedRetentionSeconds: Double
        var maxBodyBytes: Int
        var maxHeaderBytes: Int
        var maxAudioFrameBytes: Int
        enum CodingKeys: String, CodingKey {
            case maxCallsPerKey = "max_calls_per_key"
            case maxStreamsPerCall = "max_streams_per_call"
            case endedRetentionSeconds = "ended_retention_seconds"
            case maxBodyBytes = "max_body_bytes"
            case maxHeaderBytes = "max_header_bytes"
            case maxAudioFrameBytes = "max_audio_frame_bytes"
        }
    }
    var plan: String
    var features: [String: String]
    var platforms: [String: PlatformInfo]
    var concurrentCalls: Int
    /// The SIP user agent (absent when SIP is off): its state and registrations (SPEC §6).
    var sip: SIPInfo?
    var limits: Limits
    struct SIPInfo: Encodable {
        var status: String
        var registrations: [Registration]
        struct Registration: Encodable {
            var uri: String
            var state: String
            var lastStatus: Int
            enum CodingKeys: String, CodingKey {
                case uri, state
                case lastStatus = "last_status"
            }
        }
    }
    enum CodingKeys: String, CodingKey {
        case plan, features, platforms, limits, sip
        case concurrentCalls = "concurrent_calls"
    }
}

/// One built-in speech preset (SPEC §7).
struct VoiceConfig: Encodable, Sendable {
    var id: String
    var provider: String
    var language: String
    var enabled: Bool
}

struct VoiceConfigList: ResponseEncodable {
    var tts: [VoiceConfig]
    var stt: [VoiceConfig]
}

struct Health: ResponseEncodable {
    var status: String
}
