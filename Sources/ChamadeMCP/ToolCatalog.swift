import Foundation
import MCP

/// The tools of SPEC §8, each a thin use of one route of §3: its JSON Schema (required fields,
/// the platform enum, the API's bounds), a description written for a model, and the request it
/// makes.
enum ToolCatalog {
    struct Entry: Sendable {
        let tool: Tool
        /// The route for the arguments: method, path, body.
        let route: @Sendable ([String: Value]) -> (String, String, [String: Value]?)
    }

    static let platforms: [Value] = ["discord", "teams", "meet", "zoom", "telegram", "slack", "nctalk", "sip", "whatsapp", "rtp"]

    static func object(_ properties: [String: Value], required: [String] = []) -> Value {
        .object([
            "type": "object", "properties": .object(properties), "required": .array(required.map { .string($0) }),
            "additionalProperties": false,
        ])
    }

    static let callID: Value = .object(["type": "string", "description": "The call's id (call_…), from chamade_call_join or chamade_call_list."])

    static func string(_ description: String, min: Int? = nil, max: Int? = nil, pattern: String? = nil) -> Value {
        var o: [String: Value] = ["type": "string", "description": .string(description)]
        if let min { o["minLength"] = .int(min) }
        if let max { o["maxLength"] = .int(max) }
        if let pattern { o["pattern"] = .string(pattern) }
        return .object(o)
    }

    static func id(_ a: [String: Value]) -> String {
        let raw = a["call_id"]?.stringValue ?? ""
        return raw.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? raw
    }

    static let entries: [Entry] = [
        Entry(
            tool: Tool(
                name: "chamade_call_join",
                description: """
                    Join a meeting as an agent. Calls with the same platform and meeting_url share one room. \
                    Returns the call object: call_id (use it with every other tool), state (active; \
                    connecting for sip while it dials), the room's audio format. Transcripts of what is said \
                    in the room come with chamade_call_status or the chamade://calls/{call_id}/transcript resource.
                    """,
                inputSchema: object(
                    [
                        "platform": .object(["type": "string", "enum": .array(platforms), "description": "The meeting's platform; sip dials meeting_url (sip:USER@HOST), rtp bridges rtp://HOST:PORT?codec=…"]),
                        "meeting_url": string("The meeting's URL (or sip:/rtp: address).", min: 1, max: 2048),
                        "agent_name": string("Your name in the meeting and in transcripts (default \"AI Agent\").", max: 256),
                        "transcripts": .object(["type": "boolean", "description": "Transcribe the room (default true)."]),
                    ], required: ["platform", "meeting_url"])),
            route: { a in
                var body: [String: Value] = [:]
                for k in ["platform", "meeting_url", "agent_name", "transcripts"] { body[k] = a[k] }
                return ("POST", "/api/call", body)
            }),
        Entry(
            tool: Tool(
                name: "chamade_call_status",
                description: """
                    A call's state and its new transcript lines ("[Speaker] text"). Pass since = the \
                    transcript_length of your previous status to get only what was said since. Use it to \
                    follow the conversation.
                    """,
                inputSchema: object(
                    ["call_id": callID, "since": .object(["type": "integer", "minimum": 0, "description": "First transcript line to return (default 0)."])],
                    required: ["call_id"])),
            route: { a in ("GET", "/api/call/\(id(a))?since=\(a["since"]?.intValue ?? 0)", nil) }),
        Entry(
            tool: Tool(
                name: "chamade_call_say",
                description: """
                    Speak text aloud in the meeting with the built-in voice. It plays after anything you \
                    said before; returns queued_ms, how long it will take. The meeting's transcript gets \
                    your line when it has played.
                    """,
                inputSchema: object(["call_id": callID, "text": string("What to say.", min: 1, max: 10000)], required: ["call_id", "text"])),
            route: { a in ("POST", "/api/call/\(id(a))/say", ["text": a["text"] ?? ""]) }),
        Entry(
            tool: Tool(
                name: "chamade_call_stop_speaking",
                description: "Stop speaking at once (barge-in). Returns dropped_ms and spoken_text: the words the meeting actually heard.",
                inputSchema: object(["call_id": callID], required: ["call_id"])),
            route: { a in ("POST", "/api/call/\(id(a))/stop-speaking", [:]) }),
        Entry(
            tool: Tool(
                name: "chamade_call_chat",
                description: "Send a text chat message to the meeting (every other call of the room gets it).",
                inputSchema: object(
                    ["call_id": callID, "text": string("The message.", min: 1, max: 10000), "sender_name": string("Sender shown (default: your agent name).", max: 256)],
                    required: ["call_id", "text"])),
            route: { a in
                var body: [String: Value] = ["text": a["text"] ?? ""]
                if let s = a["sender_name"] { body["sender_name"] = s }
                return ("POST", "/api/call/\(id(a))/chat", body)
            }),
        Entry(
            tool: Tool(
                name: "chamade_call_typing",
                description: "Show the others that you are typing.",
                inputSchema: object(["call_id": callID], required: ["call_id"])),
            route: { a in ("POST", "/api/call/\(id(a))/typing", [:]) }),
        Entry(
            tool: Tool(
                name: "chamade_call_dtmf",
                description: "Press phone keys on the room's phone leg (sip or rtp calls only), e.g. a conference PIN followed by #.",
                inputSchema: object(
                    ["call_id": callID, "digits": string("Keys: 0-9 * # A-D.", min: 1, max: 64, pattern: "^[0-9*#A-Da-d]+$")],
                    required: ["call_id", "digits"])),
            route: { a in ("POST", "/api/call/\(id(a))/dtmf", ["digits": a["digits"] ?? ""]) }),
        Entry(
            tool: Tool(
                name: "chamade_call_accept",
                description: "Answer an inbound call that is ringing (state ringing).",
                inputSchema: object(["call_id": callID], required: ["call_id"])),
            route: { a in ("POST", "/api/call/\(id(a))/accept", [:]) }),
        Entry(
            tool: Tool(
                name: "chamade_call_refuse",
                description: "Decline an inbound call that is ringing.",
                inputSchema: object(["call_id": callID], required: ["call_id"])),
            route: { a in ("POST", "/api/call/\(id(a))/refuse", [:]) }),
        Entry(
            tool: Tool(
                name: "chamade_call_hangup",
                description: "Leave the meeting (end the call).",
                inputSchema: object(["call_id": callID], required: ["call_id"])),
            route: { a in ("DELETE", "/api/call/\(id(a))", nil) }),
        Entry(
            tool: Tool(
                name: "chamade_call_list",
                description: "Your calls that have not ended, with their states (ringing ones wait for accept or refuse).",
                inputSchema: object([:])),
            route: { _ in ("GET", "/api/calls", nil) }),
        Entry(
            tool: Tool(
                name: "chamade_account",
                description: "What this bridge offers: features (speech, SIP), platforms and limits.",
                inputSchema: object([:])),
            route: { _ in ("GET", "/api/account", nil) }),
    ]
}
