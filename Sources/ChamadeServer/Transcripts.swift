import ChamadeEngine
import ChamadeSpeech

/// Transcript lines and speaking events of rooms (SPEC §7): from the built-in STT, from `say`s
/// (their own text), and from a gateway that embeds the engine.
extension CallStore {
    /// The transcriber's events: voice activity to `call_speaking`, utterances to lines.
    func transcriberEvent(_ event: Transcriber.Event) {
        switch event {
        case .speaking(let pid, let on):
            guard let (roomKey, speaker) = speaker(of: pid) else { return }
            let text = WireJSON.encode(ServerMessage.Speaking(speaker: speaker, participantID: "p_\(pid.rawValue)", speaking: on))
            for c in calls(in: roomKey) { c.broadcast(text: text) }
        case .utterance(let pid, let words, let start, let end):
            guard let (roomKey, speaker) = speaker(of: pid) else { return }
            addLine(in: roomKey, speaker: speaker, text: words, participantID: pid, startMs: start, endMs: end)
        }
    }

    /// A `say`'s line, from its text (the part heard when cleared), ending now on the room's clock.
    func addSayLine(_ call: Call, text: String, playedMilliseconds duration: Int) {
        let end = (call.participant?.room.tickCount).map { Int($0) * 20 }
        addLine(
            in: call.roomKey, speaker: call.agentName, text: text, participantID: call.participantID,
            startMs: end.map { max(0, $0 - duration) }, endMs: end)
    }

    /// Appends `[speaker] text` to every call of the room and sends it to their sockets as
    /// `call_transcript`.
    func addLine(in roomKey: RoomKey, speaker: String, text: String, participantID: ParticipantID, startMs: Int?, endMs: Int?) {
        let line = "[\(speaker)] \(text)"
        let message = WireJSON.encode(
            ServerMessage.Transcript(speaker: speaker, text: text, participantID: "p_\(participantID.rawValue)", startMs: startMs, endMs: endMs))
        for c in calls(in: roomKey) {
            c.withLock { $0.transcript.append(line) }
            c.broadcast(text: message)
        }
    }
}
