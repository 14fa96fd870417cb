import ChamadeCore
import ChamadeEngine
import ChamadeMedia
import Foundation
import NIOConcurrencyHelpers

/// One call: an agent's presence in a room, owned by one API key (SPEC §3).
///
/// Its identity is immutable; what changes (state, transcript, its WebSockets) sits behind the
/// call's own lock, read by routes through `object(...)` snapshots, never through someone else's
/// lock. An ended call keeps only what `GET /api/call/{id}` shows: its participant (and with it
/// the room and the engine's buffers) is let go at once.
final class Call: Sendable {
    let id: String
    let apiKey: String
    let platform: Platform
    let meetingURL: String
    let agentName: String
    let roomKey: RoomKey
    let roomID: String
    let participantID: ParticipantID
    let createdAt: Date
    let direction: String
    let caller: String
    /// The room's rate (the platform's, or the leg codec's for `rtp` rooms).
    let nativeRate: SampleRate
    /// Whether the call asked for transcripts of its room (with the STT on).
    let wantsTranscripts: Bool

    struct Mutable {
        var state: CallState
        var endedAt: Date?
        /// The room's platform leg once it has one (an `rtp` room at once, a `sip` room once the
        /// dialog has media); kept after the call ends for its final counters.
        var leg: RTPLeg?
        var sipCallID: String?
        var transcript: [String] = []
        /// nil once the call has ended.
        var participant: Participant?
        var sessions: [ObjectIdentifier: Session] = [:]
        /// The outboxes of the sessions that receive audio, for delivery (rebuilt on change).
        var receivers: [Outbox] = []
        /// WebSockets admitted (counted from the upgrade decision until the connection closes).
        var streams = 0
        /// Marks waiting for their audio to play, over all the call's sessions.
        var pendingMarks = 0
        /// HTTP `stop-speaking` requests waiting for the engine's answer: ms dropped, text spoken.
        var clearWaiters: [(request: UInt64, resume: @Sendable (Int, String) -> Void)] = []
        /// Built-in speech: says being fed or played, and what waits behind them.
        var speech = CallSpeech()
        /// Where each pending clear cut the playout (for `spoken_text`).
        var clearPositions: [UInt64: Int] = [:]
    }
    private let mutable: NIOLockedValueBox<Mutable>

    /// What clear `request` (`dropped` samples not played) did to the says: the words of the one
    /// it interrupted that were heard ("" when none), and the transcript lines of every say it
    /// settled (cut, or reported played by the clear), with how long each played.
    func settleClear(request: UInt64, dropped: Int) -> (spoken: String, lines: [(text: String, playedMilliseconds: Int)]) {
        withLock { m in
            let position = m.clearPositions.filter { $0.key <= request }.max { $0.key < $1.key }?.value
            m.clearPositions = m.clearPositions.filter { $0.key > request }
            guard let position else { return ("", []) }
            let played = position - dropped
            var spoken = ""
            var lines: [(String, Int)] = []
            for i in m.speech.segments.indices where !m.speech.segments[i].lined && m.speech.segments[i].start < position {
                // Every say before the cut is settled now: played to its end, or cut (a clear
                // also stops the feeding of the say it cuts).
                let s = m.speech.segments[i]
                m.speech.segments[i].lined = true
                guard played > s.start else { continue }
                let heard = s.spokenText(playedUpTo: played)
                if s.start < played && played < s.end { spoken = heard }
                lines.append((heard, (min(played, s.end) - s.start) * 1000 / s.hertz))
            }
            return (spoken, lines)
        }
    }

    init(
        id: String, apiKey: String, platform: Platform, meetingURL: String, agentName: String, roomKey: RoomKey,
        room: Room, participant: Participant, leg: RTPLeg? = nil, state: CallState = .active, direction: String = "outbound",
        caller: String = "", sipCallID: String? = nil, wantsTranscripts: Bool = false
    ) {
        self.wantsTranscripts = wantsTranscripts
        self.nativeRate = room.nativeRate
        self.id = id
        self.apiKey = apiKey
        self.platform = platform
        self.meetingURL = meetingURL
        self.agentName = agentName
        self.roomKey = roomKey
        self.roomID = "room_\(room.id.rawValue)"
        self.participantID = participant.id
        self.createdAt = Date()
        self.direction = direction
        self.caller = caller
        self.mutable = NIOLockedValueBox(Mutable(state: state, leg: leg, sipCallID: sipCallID, participant: participant))
    }

    func withLock<R>(_ body: (inout Mutable) throws -> R) rethrows -> R { try mutable.withLockedValue(body) }

    var state: CallState { withLock { $0.state } }
    var participant: Participant? { withLock { $0.participant } }
    var receivers: [Outbox] { withLock { $0.receivers } }
    var leg: RTPLeg? { withLock { $0.leg } }

    /// A `connecting` or `ringing` call becomes `active` (its room's dialog was answered); false if
    /// it was not waiting.
    func activate(leg: RTPLeg?, sipCallID: String?) -> Bool {
        withLock { m in
            guard m.state == .connecting || m.state == .ringing else { return false }
            m.state = .active
            if let leg { m.leg = leg }
            if let sipCallID { m.sipCallID = sipCallID }
            return true
        }
    }

    /// Ends the call (`final`: `ended`, or `refused` for a refused inbound call): returns its
    /// participant and sessions for the caller to release, or nil if it had ended already.
    func markEnded(as final: CallState = .ended) -> (Participant?, [Session], [@Sendable (Int, String) -> Void])? {
        withLock { m in
            guard !m.state.isFinal else { return nil }
            m.state = final
            m.endedAt = Date()
            let p = m.participant
            let s = Array(m.sessions.values)
            let waiters = m.clearWaiters.map(\.resume)
            m.participant = nil
            m.sessions = [:]
            m.receivers = []
            m.clearWaiters = []
            return (p, s, waiters)
        }
    }

    /// Recomputes which outboxes receive audio; returns whether any does.
    @discardableResult
    func refreshReceivers(_ m: inout Mutable) -> Bool {
        m.receivers = m.sessions.values.filter(\.receiving).map(\.outbox)
        return !m.receivers.isEmpty
    }

    /// The call object (SPEC §3); `since` adds the transcript from that line on.
    func object(baseURL: String, since: Int? = nil) -> CallObject {
        let (state, endedAt, transcript, length, leg, sipCallID) = withLock { m in
            (m.state, m.endedAt, since.map { Array(m.transcript.dropFirst($0)) }, since.map { _ in m.transcript.count }, m.leg, m.sipCallID)
        }
        let wsBase =
            baseURL.hasPrefix("https://")
            ? "wss://" + baseURL.dropFirst("https://".count) : "ws://" + baseURL.dropFirst("http://".count)
        return CallObject(
            callID: id, roomID: roomID, participantID: "p_\(participantID.rawValue)",
            textWSURL: "\(wsBase)/api/call/\(id)/stream", state: state, capabilities: platform.capabilities,
            platform: platform, meetingURL: meetingURL, agentName: agentName, direction: direction, caller: caller,
            createdAt: Self.timestamp(createdAt), endedAt: endedAt.map(Self.timestamp),
            audio: .init(sampleRate: nativeRate.hertz, frameBytes: nativeRate.blockByteCount),
            leg: leg.map { Self.legObject($0, sipCallID: sipCallID) },
            transcript: transcript, transcriptLength: length)
    }

    static func legObject(_ leg: RTPLeg, sipCallID: String?) -> LegObject {
        let s = leg.statistics
        return LegObject(
            kind: sipCallID == nil ? "rtp" : "sip", codec: leg.configuration.codec.rawValue, payloadType: Int(leg.configuration.payloadType),
            localRTP: leg.local.description, remoteRTP: leg.remote.description, packetsReceived: s.packetsReceived,
            packetsLost: s.packetsLost, packetsLate: s.packetsLate, jitterMs: s.jitterMilliseconds,
            jitterBufferMs: s.jitterBufferMilliseconds, concealedMs: s.concealedMilliseconds, packetsSent: s.packetsSent,
            packetsInvalid: s.packetsInvalid, remoteFractionLost: s.remoteFractionLost,
            remoteJitterMs: s.remoteJitterMilliseconds, rtcpReceived: s.rtcpReceived, rtcpSent: s.rtcpSent, sipCallID: sipCallID)
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}

/// A room's identity in the API: platform and meeting URL (calls with both equal share a room).
struct RoomKey: Hashable, Sendable {
    var platform: Platform
    var meetingURL: String

    /// The room's name in the cluster: platform and URL on two lines.
    var name: String { platform.rawValue + "\n" + meetingURL }

    init(platform: Platform, meetingURL: String) {
        self.platform = platform
        self.meetingURL = meetingURL
    }

    init?(name: String) {
        guard let newline = name.firstIndex(of: "\n"), let platform = Platform(rawValue: String(name[..<newline])) else { return nil }
        self.init(platform: platform, meetingURL: String(name[name.index(after: newline)...]))
    }
}
