public import ChamadeCore
import ChamadeEngine
import Foundation

/// The platforms a call can join, with their native rate and capabilities (SPEC §3).
public enum Platform: String, CaseIterable, Sendable, Codable {
    case discord, teams, meet, zoom, telegram, slack, nctalk, sip, whatsapp

    /// The rate the platform's leg runs at: the room's native rate.
    public var nativeRate: SampleRate {
        switch self {
        case .discord, .meet, .nctalk, .slack: .hz48000
        case .teams, .zoom, .telegram, .whatsapp: .hz16000
        case .sip: .hz8000
        }
    }

    /// What a call on this platform can do. SIP carries audio only.
    public var capabilities: [String] {
        switch self {
        case .sip: ["audio_in", "audio_out"]
        default: ["audio_in", "audio_out", "read", "write", "typing"]
        }
    }
}

/// A call's state.
public enum CallState: String, Sendable {
    case ringing, active, ended, refused
}

/// An API error: `{"error": {"code", "message"}}` with an HTTP status.
struct APIError: Error, Sendable {
    var status: Int
    var code: String
    var message: String

    static func badRequest(_ code: String, _ message: String) -> APIError { .init(status: 400, code: code, message: message) }
    static let unauthorized = APIError(status: 401, code: "unauthorized", message: "missing or wrong API key (X-API-Key)")
    static func notFound(_ what: String = "no such call") -> APIError { .init(status: 404, code: "not_found", message: what) }
    static func conflict(_ code: String, _ message: String) -> APIError { .init(status: 409, code: code, message: message) }
    static let tooLarge = APIError(status: 413, code: "body_too_large", message: "the request body exceeds 1 MiB")

    var json: String {
        JSON.encode(["error": ["code": code, "message": message]])
    }
}

/// Small JSON helpers over Foundation (the server is not on the tick).
enum JSON {
    static func encode(_ value: Any) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Parses an object; nil when the text is not a JSON object.
    static func object(_ data: Data) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    static func timestamp(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: date)
    }
}

/// One call: an agent's presence in a room, owned by one API key.
final class Call: @unchecked Sendable {
    // SAFETY: mutable fields are guarded by the registry's lock.
    let id: String
    let apiKey: String
    let platform: Platform
    let meetingURL: String
    let agentName: String
    let roomKey: String
    let room: Room
    let participant: Participant
    let createdAt = Date()
    let direction = "outbound"
    var endedAt: Date?
    var state: CallState = .active
    var transcript: [String] = []
    var sessions: [ObjectIdentifier: Session] = [:]
    /// Clear requests from HTTP stop-speaking, waiting for the engine's answer.
    var clearWaiters: [(request: UInt64, resume: @Sendable (Int) -> Void)] = []

    init(id: String, apiKey: String, platform: Platform, meetingURL: String, agentName: String, roomKey: String,
         room: Room, participant: Participant) {
        self.id = id
        self.apiKey = apiKey
        self.platform = platform
        self.meetingURL = meetingURL
        self.agentName = agentName
        self.roomKey = roomKey
        self.room = room
        self.participant = participant
    }

    /// The call object (SPEC §3). `since`: include transcript lines from that index on.
    func object(baseURL: String, since: Int? = nil) -> [String: Any] {
        let rate = participant.sampleRate
        var o: [String: Any] = [
            "call_id": id, "room_id": "room_\(room.id.rawValue)", "participant_id": "p_\(participant.id.rawValue)",
            "text_ws_url": "\(baseURL.replacingOccurrences(of: "http", with: "ws", options: .anchored))/api/call/\(id)/stream",
            "state": state.rawValue, "capabilities": platform.capabilities, "platform": platform.rawValue,
            "meeting_url": meetingURL, "agent_name": agentName, "direction": direction, "caller": "",
            "created_at": JSON.timestamp(createdAt), "ended_at": endedAt.map(JSON.timestamp) ?? NSNull(),
            "audio": [
                "sample_rate": platform.nativeRate.hertz, "format": "pcm_s16le", "channels": 1,
                "frame_duration_ms": 20, "frame_bytes": platform.nativeRate.blockByteCount,
            ] as [String: Any],
            "connection_sample_rate": rate.hertz,
        ]
        if let since {
            o["transcript"] = Array(transcript.dropFirst(max(0, since)))
            o["transcript_length"] = transcript.count
        }
        return o
    }
}
