import MCP

/// Prompts that show a model how to use the tools for the common jobs.
enum Prompts {
    static let all = [
        Prompt(
            name: "join_meeting_and_answer",
            title: "Join a meeting and answer questions",
            description: "Join a meeting, follow its transcript, and answer what is asked of you aloud.",
            arguments: [
                .init(name: "platform", description: "discord, teams, meet, zoom, sip, …", required: true),
                .init(name: "meeting_url", description: "The meeting's URL (sip:USER@HOST for a phone bridge).", required: true),
                .init(name: "agent_name", description: "Your name in the meeting.", required: false),
            ]),
        Prompt(
            name: "dial_in_with_pin",
            title: "Dial a meeting's phone bridge",
            description: "Dial a SIP dial-in number, enter the PIN, and introduce yourself.",
            arguments: [
                .init(name: "sip_uri", description: "sip:USER@HOST of the dial-in.", required: true),
                .init(name: "pin", description: "The conference PIN.", required: true),
            ]),
    ]

    static func get(_ name: String, _ a: [String: String]) -> GetPrompt.Result? {
        switch name {
        case "join_meeting_and_answer":
            let who = a["agent_name"] ?? "AI Agent"
            return .init(
                description: "Join and answer",
                messages: [
                    .user(.text(text: """
                        Join the \(a["platform"] ?? "?") meeting \(a["meeting_url"] ?? "?") as "\(who)" with \
                        chamade_call_join. Then loop: call chamade_call_status with since = the last \
                        transcript_length you saw (or subscribe to chamade://calls/{call_id}/transcript and \
                        read it when notified). When someone asks you something, answer briefly with \
                        chamade_call_say (one or two sentences; people are listening, not reading). If someone \
                        talks over you, call chamade_call_stop_speaking. Leave with chamade_call_hangup when \
                        you are asked to or the meeting ends.
                        """))
                ])
        case "dial_in_with_pin":
            return .init(
                description: "Dial in",
                messages: [
                    .user(.text(text: """
                        Call chamade_call_join with platform "sip" and meeting_url \(a["sip_uri"] ?? "?"). Wait \
                        until chamade_call_status says state "active", then send the PIN with chamade_call_dtmf \
                        digits "\(a["pin"] ?? "")#". Listen to the transcript for a few seconds, then introduce \
                        yourself with chamade_call_say.
                        """))
                ])
        default:
            return nil
        }
    }
}
