import ChamadeCluster
import ChamadeCore
import ChamadeEngine
import ChamadeMedia
import ChamadeSIP
import ChamadeSpeech
import Foundation
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore

/// Owns the calls, the rooms and the per-key bookkeeping of the server.
///
/// Its lock guards bookkeeping only (dictionaries and counts); nothing slow runs under it. Creating
/// a call is reserve → join the engine outside the lock (rings and converters are allocated then) →
/// commit; ending one is the reverse. Delivery never takes this lock: it finds calls through
/// `byParticipant`, a separate index.
final class CallStore: Sendable {
    let engine: Engine
    let configuration: ServerConfiguration
    let events: AccountEvents

    struct RoomEntry {
        let handle: RoomHandle
        /// Calls reserved or committed in the room; the room is removed when it falls to zero.
        var members = 0
        var callIDs: Set<String> = []
        /// Calls that want transcripts: the room is transcribed while this is above zero.
        var transcribed = 0
    }

    struct State {
        var calls: [String: Call] = [:]
        /// Calls not ended, per key.
        var live: [String: [String: Call]] = [:]
        /// Creations in progress, per key (counted against the per-key limit).
        var reserved: [String: Int] = [:]
        var rooms: [RoomKey: RoomEntry] = [:]
        /// Ended calls in the order they ended, with when they may be forgotten (monotonic ns).
        var ended = CircularBuffer<(forgetAt: UInt64, id: String)>()
        var stopping = false
    }
    private let state = NIOLockedValueBox(State())
    /// Calls by participant: how engine events and delivered blocks find their call.
    let byParticipant = NIOLockedValueBox<[ParticipantID: Call]>([:])
    /// Talkers of calls ended in the last minute: their last utterance, decoded after they left,
    /// still reaches the room's other calls under their name. (room, name, forget at, ns)
    let departed = NIOLockedValueBox<[ParticipantID: (RoomKey, String, Int64)]>([:])

    /// The media plane of platform legs, started with the first leg.
    let media: ServerMedia
    /// Counters of the legs already closed (`/metrics` adds the open ones).
    let closedLegs = NIOLockedValueBox(RTPLegStatistics())

    /// The built-in STT, when on.
    let transcriber: Transcriber?

    /// This node's membership of a cluster (SPEC §10), when `--cluster` is on: call ids name the
    /// node, calls are indexed in Redis while they live, a room's claim is given up when it closes.
    let cluster: ClusterNode?
    /// The server's base URL (for the call objects the cluster index keeps).
    let baseURL: @Sendable () -> String

    init(
        engine: Engine, configuration: ServerConfiguration, events: AccountEvents, transcriber: Transcriber? = nil,
        cluster: ClusterNode? = nil, baseURL: @escaping @Sendable () -> String = { "" }
    ) {
        self.cluster = cluster
        self.baseURL = baseURL
        self.transcriber = transcriber
        self.engine = engine
        self.configuration = configuration
        self.events = events
        self.media = ServerMedia(configuration: configuration)
        self.sip = configuration.sip.map(SIPGateway.init)
    }

    /// The SIP user agent, unless SIP is off.
    let sip: SIPGateway?

    // MARK: create and end

    /// `onlyIfOpen`: only into a room already open here (a cluster node that has not claimed the
    /// room: `roomNotOpen` otherwise, decided under the store's lock).
    func create(
        apiKey: String, platform: Platform, meetingURL: String, agentName: String, transcripts: Bool? = nil,
        onlyIfOpen: Bool = false
    ) throws(APIError) -> Call {
        let kind: RoomHandle.Kind
        switch platform {
        case .rtp:
            kind = .rtp(try LegPlan(meetingURL: meetingURL, configuration: configuration))
        case .sip:
            guard let sip, sip.isRunning else {
                throw APIError.badRequest("sip_unavailable", "SIP is not available on this server (--sip off, or its port could not be bound)")
            }
            do throws(SIPURI.Invalid) { kind = .sipOut(try SIPURI(parsing: meetingURL)) } catch {
                throw APIError.badRequest("invalid_meeting_url", "\(error.description): sip:USER@HOST[:PORT]")
            }
        default:
            kind = .plain
        }
        return try admit(
            apiKey: apiKey, platform: platform, meetingURL: meetingURL, agentName: agentName,
            roomKey: RoomKey(platform: platform, meetingURL: meetingURL), kind: kind, transcripts: transcripts,
            onlyIfOpen: onlyIfOpen)
    }

    /// Reserves a place for the key, opens (or finds) the room, joins it and commits the call.
    func admit(
        apiKey: String, platform: Platform, meetingURL: String, agentName: String, roomKey: RoomKey, kind: RoomHandle.Kind,
        direction: String = "outbound", caller: String = "", transcripts: Bool? = nil, onlyIfOpen: Bool = false
    ) throws(APIError) -> Call {
        let nativeRate = kind.nativeRate(platform: platform)
        let limit = configuration.maxCallsPerKey
        let handle = try state.withTypedLock { (s: inout State) throws(APIError) -> RoomHandle in
            guard !s.stopping else { throw APIError.shuttingDown }
            let held = (s.live[apiKey]?.count ?? 0) + s.reserved[apiKey, default: 0]
            guard held < limit else {
                throw APIError(.tooManyRequests, "too_many_calls", "this key already has \(held) calls not ended (limit \(limit))")
            }
            guard !onlyIfOpen || s.rooms[roomKey] != nil else { throw APIError.roomNotOpen }
            s.reserved[apiKey, default: 0] += 1
            let entry = s.rooms[roomKey] ?? RoomEntry(handle: RoomHandle(nativeRate: nativeRate, kind: kind))
            s.rooms[roomKey, default: entry].members += 1
            return entry.handle
        }
        let room: Room
        let participant: Participant
        do throws(APIError) {
            room = try handle.open(
                engine: engine, capacity: configuration.roomCapacity, media: media,
                onLegEvent: legEventHandler(roomKey: roomKey, handle: handle))
            if case .sipOut(let uri) = handle.kind, let sip {
                try handle.dialOnce(media: media) { ports throws(APIError) in
                    do throws(SIPError) {
                        return try sip.dial(uri, room: roomKey, ports: ports, displayName: agentName)
                    } catch {
                        throw APIError.badRequest("sip_unavailable", "cannot dial \(uri): \(error)")
                    }
                }
            }
            do throws(EngineError) {
                participant = try room.join(rate: room.nativeRate, receiving: false)
            } catch .roomFull(let capacity) {
                throw APIError.conflict("room_full", "the room is full (\(capacity) participants)")
            } catch {
                throw APIError(.serviceUnavailable, "engine_unavailable", error.description)
            }
        } catch {
            release(reservationOf: apiKey, in: roomKey)
            throw error
        }
        let link = handle.link
        let initial: CallState =
            switch handle.kind {
            case .sipIn: .ringing
            case .sipOut: link.answered ? .active : .connecting
            case .plain, .rtp: .active
            }
        let call = Call(
            id: cluster?.callID(random: Self.randomToken(12)) ?? "call_" + Self.randomToken(12), apiKey: apiKey, platform: platform, meetingURL: meetingURL,
            agentName: agentName, roomKey: roomKey, room: room, participant: participant, leg: handle.leg, state: initial,
            direction: direction, caller: caller, sipCallID: link.sipCallID,
            wantsTranscripts: transcriber != nil && (transcripts ?? true))
        // Announced before it can be found: an event of the room's dialog (the 2xx making it
        // active) can only reach the call after this, so its key hears the states in order.
        events.publish(apiKey: apiKey, state: initial, callID: call.id)
        let committed = state.withLockedValue { s -> Bool in
            s.reserved[apiKey, default: 1] -= 1
            if s.reserved[apiKey] == 0 { s.reserved.removeValue(forKey: apiKey) }
            guard !s.stopping else { return false }
            s.calls[call.id] = call
            s.live[apiKey, default: [:]][call.id] = call
            s.rooms[roomKey]?.callIDs.insert(call.id)
            if call.wantsTranscripts, let entry = s.rooms[roomKey] {
                s.rooms[roomKey]?.transcribed += 1
                if entry.transcribed == 0 { startTranscribing(room) }
            }
            return true
        }
        guard committed else {
            participant.leave()
            release(reservationOf: nil, in: roomKey)
            events.publish(apiKey: apiKey, state: .ended, callID: call.id)
            throw APIError.shuttingDown
        }
        byParticipant.withLockedValue { $0[participant.id] = call }
        if let cluster { cluster.register(clusterRecord(call)) }
        // The dialog may have been answered, or be over, between reading its state and the commit
        // (the events of a room's dialog see only the calls committed in it).
        let now = handle.link
        if now.over {
            end([call], failedStatus: now.failedStatus)
        } else if initial == .connecting, now.answered {
            activate([call], leg: handle.leg, sipCallID: now.sipCallID)
        }
        return call
    }

    /// Calls waiting on their room's dialog become active: `call_state` on their sockets and the
    /// keys' events.
    func activate(_ calls: [Call], leg: RTPLeg?, sipCallID: String?) {
        for c in calls where c.activate(leg: leg, sipCallID: sipCallID) {
            c.broadcast(text: WireJSON.encode(ServerMessage.State(state: .active)))
            events.publish(apiKey: c.apiKey, state: .active, callID: c.id)
        }
    }

    /// Undoes a reservation that did not become a call.
    private func release(reservationOf apiKey: String?, in roomKey: RoomKey) {
        let emptied: RoomHandle? = state.withLockedValue { s in
            if let apiKey {
                s.reserved[apiKey, default: 1] -= 1
                if s.reserved[apiKey] == 0 { s.reserved.removeValue(forKey: apiKey) }
            }
            s.rooms[roomKey]?.members -= 1
            guard let entry = s.rooms[roomKey], entry.members <= 0 else { return nil }
            s.rooms.removeValue(forKey: roomKey)
            return entry.handle
        }
        if let emptied { close(emptied, roomKey: roomKey) }
    }

    /// Closes a room that lost its last call: its leg (counters kept for `/metrics`), then the room.
    private func close(_ handle: RoomHandle, roomKey: RoomKey) {
        cluster?.release(room: roomKey.name)
        let closed = handle.close()
        if let dialog = closed.dialog { sip?.hangUp(dialog) }
        if let ports = closed.ports { media.cancel(ports) }
        if let leg = closed.leg {
            media.close(leg)
            let s = leg.statistics
            closedLegs.withLockedValue { $0.add(s) }
        }
        if let room = closed.room {
            transcriber?.detach(room)
            engine.removeRoom(room)
        }
    }

    /// Taps `room` for the transcriber (under the store's lock, so attach and detach keep the
    /// order of the calls that cause them). Audio a `say` queued is not recognized: the say
    /// writes its own line from its text.
    private func startTranscribing(_ room: Room) {
        transcriber?.attach(room) { [weak self] pid, position in
            self?.byParticipant.withLockedValue { $0[pid] }?.isSynthesized(at: position) ?? false
        }
    }

    /// The room and speaker name of a talker: a call's agent name, or the room's leg (the rtp
    /// leg's `name`, the SIP caller, or the dialled user).
    func speaker(of pid: ParticipantID) -> (RoomKey, String)? {
        if let call = byParticipant.withLockedValue({ $0[pid] }) { return (call.roomKey, call.agentName) }
        if let (key, name, _) = departed.withLockedValue({ $0[pid] }) { return (key, name) }
        return state.withLockedValue { s in
            for (key, entry) in s.rooms where entry.handle.leg?.participantID == pid { return (key, entry.handle.legSpeaker) }
            return nil
        }
    }

    /// The handler of a room's leg events.
    func legEventHandler(roomKey: RoomKey, handle: RoomHandle) -> @Sendable (RTPLegEvent) -> Void {
        { [weak self, weak handle] event in
            guard let self, let handle else { return }
            self.legEvent(event, roomKey: roomKey, handle: handle)
        }
    }

    /// A call as the cluster's index keeps it.
    func clusterRecord(_ call: Call) -> ClusterCall {
        ClusterCall(
            id: call.id, keyTag: ClusterNode.tag(ofKey: call.apiKey),
            objectJSON: WireJSON.encode(call.object(baseURL: baseURL())))
    }

    /// The names of the rooms open here, and the calls not ended (what a cluster node reasserts).
    func clusterState() -> (rooms: [String], calls: [ClusterCall]) {
        let (rooms, calls) = state.withLockedValue { s in (s.rooms.keys.map(\.name), s.live.values.flatMap(\.values)) }
        return (rooms, calls.map(clusterRecord))
    }

    func roomHandles() -> [RoomHandle] { state.withLockedValue { $0.rooms.values.map(\.handle) } }

    /// The room's handle, if the room is open.
    func handle(roomKey: RoomKey) -> RoomHandle? { state.withLockedValue { $0.rooms[roomKey]?.handle } }

    /// The calls of a room that have not ended.
    func calls(in roomKey: RoomKey) -> [Call] {
        state.withLockedValue { s in (s.rooms[roomKey]?.callIDs ?? []).compactMap { s.calls[$0] } }
    }

    /// A leg's event: a digit goes to every call of its room; a lost leg ends them all.
    private func legEvent(_ event: RTPLegEvent, roomKey: RoomKey, handle: RoomHandle) {
        let calls = state.withLockedValue { s -> [Call] in
            guard let entry = s.rooms[roomKey], entry.handle === handle else { return [] }
            return entry.callIDs.compactMap { s.calls[$0] }
        }
        switch event {
        case .digit(let digit, let ms):
            let text = WireJSON.encode(ServerMessage.DTMF(digit: String(digit), durationMs: ms))
            for c in calls { c.broadcast(text: text) }
        case .timedOut:
            let text = WireJSON.encode(
                ServerMessage.bridgeDisconnected("The platform leg sent no RTP or RTCP for \(configuration.rtpTimeoutSeconds) s."))
            for c in calls {
                c.broadcast(text: text)
                try? end(c)
            }
        }
    }

    /// Counters summed over every leg, open and closed, and each open leg's own.
    func legStatistics() -> (total: RTPLegStatistics, open: [RTPLegStatistics]) {
        let open = state.withLockedValue { s in s.rooms.values.compactMap { $0.handle.leg } }.map(\.statistics)
        var total = closedLegs.withLockedValue { $0 }
        for s in open { total.add(s) }
        return (total, open)
    }

    /// Ends `call`: it leaves its room (removed with its last call), its WebSockets get `call_state`
    /// ended and a close frame, and its key's account events hear of it.
    func end(_ call: Call, as final: CallState = .ended) throws(APIError) {
        guard let (participant, sessions, waiters) = call.markEnded(as: final) else { throw APIError.callEnded }
        let retention = UInt64(max(0, configuration.endedRetentionSeconds) * 1e9)
        let emptied: RoomHandle? = state.withLockedValue { s in
            s.live[call.apiKey]?.removeValue(forKey: call.id)
            if s.live[call.apiKey]?.isEmpty == true { s.live.removeValue(forKey: call.apiKey) }
            s.ended.append((UInt64(MonotonicClock.now()) + retention, call.id))
            s.rooms[call.roomKey]?.callIDs.remove(call.id)
            s.rooms[call.roomKey]?.members -= 1
            if call.wantsTranscripts, let entry = s.rooms[call.roomKey], let room = entry.handle.room {
                s.rooms[call.roomKey]?.transcribed -= 1
                if entry.transcribed == 1 { transcriber?.detach(room) }
            }
            guard let entry = s.rooms[call.roomKey], entry.members <= 0 else { return nil }
            s.rooms.removeValue(forKey: call.roomKey)
            return entry.handle
        }
        byParticipant.withLockedValue { _ = $0.removeValue(forKey: call.participantID) }
        cluster?.unregister(callID: call.id)
        if transcriber != nil {
            let forgetAt = MonotonicClock.now() + 60_000_000_000
            departed.withLockedValue { $0[call.participantID] = (call.roomKey, call.agentName, forgetAt) }
        }
        participant?.leave()
        for w in waiters { w(0, "") }
        for s in sessions { s.callEnded(final) }
        events.publish(apiKey: call.apiKey, state: final, callID: call.id)
        if let emptied { close(emptied, roomKey: call.roomKey) }
    }

    /// Ends every call with `bridge_disconnected` first (this cluster node was declared dead).
    func endAllDisconnected(_ why: String) {
        let all = state.withLockedValue { s in s.live.values.flatMap(\.values) }
        let text = WireJSON.encode(ServerMessage.bridgeDisconnected(why))
        for c in all {
            c.broadcast(text: text)
            try? end(c)
        }
    }

    /// Ends every call and refuses new ones (shutdown).
    func endAll() {
        let all = state.withLockedValue { s in
            s.stopping = true
            return s.live.values.flatMap(\.values)
        }
        for c in all { try? end(c) }
    }

    /// Forgets ended calls older than the retention. Returns how many were forgotten.
    @discardableResult
    func forgetExpired() -> Int {
        let nowNs = MonotonicClock.now()
        departed.withLockedValue { d in
            if d.values.contains(where: { $0.2 <= nowNs }) { d = d.filter { $0.value.2 > nowNs } }
        }
        let now = UInt64(nowNs)
        return state.withLockedValue { s in
            var n = 0
            while let first = s.ended.first, first.forgetAt <= now {
                s.ended.removeFirst()
                s.calls.removeValue(forKey: first.id)
                n += 1
            }
            return n
        }
    }

    // MARK: lookups

    /// The call `id` if it belongs to `apiKey` (another key's call is "not found").
    func call(_ id: String, apiKey: String) throws(APIError) -> Call {
        // Exact retention whatever the housekeeping period: what has expired is forgotten first.
        forgetExpired()
        guard let call = state.withLockedValue({ $0.calls[id] }), call.apiKey == apiKey else { throw APIError.notFound() }
        return call
    }

    /// The call `id`, whatever its key (the gateway's side).
    func anyCall(_ id: String) -> Call? { state.withLockedValue { $0.calls[id] } }

    /// The key's calls that have not ended, oldest first.
    func liveCalls(apiKey: String) -> [Call] {
        state.withLockedValue { s in s.live[apiKey].map { Array($0.values) } ?? [] }.sorted { $0.createdAt < $1.createdAt }
    }

    func liveCallCount(apiKey: String) -> Int { state.withLockedValue { $0.live[apiKey]?.count ?? 0 } }

    var liveCallCount: Int { state.withLockedValue { s in s.live.values.reduce(0) { $0 + $1.count } } }

    /// The other calls of `call`'s room that have not ended.
    func others(of call: Call) -> [Call] {
        state.withLockedValue { s in
            (s.rooms[call.roomKey]?.callIDs ?? []).compactMap { $0 == call.id ? nil : s.calls[$0] }
        }
    }

    /// Sends `message` to every WebSocket of the other calls of `call`'s room (chat, typing).
    func tellOthers(of call: Call, _ message: some Encodable) {
        let text = WireJSON.encode(message)
        for other in others(of: call) { other.broadcast(text: text) }
    }

    /// Every call of `call`'s room that has not ended, itself included.
    func roomCalls(of call: Call) -> [Call] {
        state.withLockedValue { s in (s.rooms[call.roomKey]?.callIDs ?? []).compactMap { s.calls[$0] } }
    }

    static func randomToken(_ bytes: Int) -> String {
        var g = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes * 2)
        for _ in 0..<bytes {
            let b = UInt8.random(in: 0...255, using: &g)
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A room of the store, created in the engine by the first call that joins it, outside the store's
/// lock (the room's own lock makes concurrent first joins create it once). A room of a leg
/// platform has a leg: an `rtp` room opens it with the room (SPEC §6: the first call of the room
/// opens the leg); a `sip` room dials once (outbound) and opens it when the dialog has media.
final class RoomHandle: Sendable {
    enum Kind: Sendable {
        case plain
        case rtp(LegPlan)
        /// A room that dials this URI.
        case sipOut(SIPURI)
        /// The room of one inbound SIP call.
        case sipIn(SIPIncomingCall)

        func nativeRate(platform: Platform) -> SampleRate {
            if case .rtp(let plan) = self { return plan.configuration.codec.nativeRate }
            return platform.nativeRate
        }
    }

    /// How the room's SIP dialog stands.
    struct Link: Sendable {
        var dialog: SIPDialogID?
        var answered = false
        var sipCallID: String?
        /// The media the dialog runs (what the leg was opened with, updated by re-INVITEs).
        var media: SIPMedia?
        /// The dialog is over (failed, or ended by the far end); `failedStatus` for an INVITE that
        /// failed. A call that joins after this ends at once.
        var over = false
        var failedStatus: Int?
        /// An inbound call's answer (accept or refuse) has been claimed.
        var decided = false
    }

    let nativeRate: SampleRate
    let kind: Kind
    private struct State {
        var room: Room?
        var leg: RTPLeg?
        var link = Link()
        /// Ports offered in our INVITE, until the answer opens the leg on them.
        var ports: RTPPortReservation?
        var closed = false
    }
    private let state = NIOLockedValueBox(State())

    init(nativeRate: SampleRate, kind: Kind = .plain) {
        self.nativeRate = nativeRate
        self.kind = kind
        if case .sipIn(let incoming) = kind {
            state.withLockedValue { $0.link = Link(dialog: incoming.id, sipCallID: incoming.callID) }
        }
    }

    var leg: RTPLeg? { state.withLockedValue { $0.leg } }

    /// The name the room's leg speaks under in transcripts (SPEC §7).
    var legSpeaker: String {
        switch kind {
        case .rtp(let plan): plan.speakerName
        case .sipIn(let incoming): incoming.caller.isEmpty ? incoming.user : incoming.caller
        case .sipOut(let uri): uri.user
        case .plain: "Meeting"
        }
    }

    var link: Link { state.withLockedValue { $0.link } }
    var room: Room? { state.withLockedValue { $0.room } }

    func open(
        engine: Engine, capacity: Int, media: ServerMedia, onLegEvent: @escaping @Sendable (RTPLegEvent) -> Void
    ) throws(APIError) -> Room {
        try state.withTypedLock { (s: inout State) throws(APIError) -> Room in
            if let existing = s.room { return existing }
            guard !s.closed else { throw APIError(.serviceUnavailable, "engine_unavailable", "the room is closing") }
            let created: Room
            do throws(EngineError) {
                created = try engine.createRoom(nativeRate: nativeRate, capacity: capacity)
            } catch {
                throw APIError(.serviceUnavailable, "engine_unavailable", error.description)
            }
            if case .rtp(let plan) = kind {
                do throws(RTPLegError) {
                    s.leg = try media.openLeg(room: created, configuration: plan.configuration, onEvent: onLegEvent)
                } catch {
                    engine.removeRoom(created)
                    throw APIError(.serviceUnavailable, "rtp_unavailable", "cannot open the RTP leg: \(error)")
                }
            }
            s.room = created
            return created
        }
    }

    /// The first call of an outbound `sip` room dials (once): ports for the offer, then the INVITE.
    func dialOnce(media: ServerMedia, _ dial: (RTPPortReservation) throws(APIError) -> SIPDialogID) throws(APIError) {
        try state.withTypedLock { (s: inout State) throws(APIError) in
            guard s.link.dialog == nil, !s.link.over, !s.closed else { return }
            let ports: RTPPortReservation
            do throws(RTPLegError) { ports = try media.reservePorts() } catch {
                throw APIError(.serviceUnavailable, "rtp_unavailable", "cannot reserve RTP ports: \(error)")
            }
            do throws(APIError) {
                s.link.dialog = try dial(ports)
                s.ports = ports
            } catch {
                media.cancel(ports)
                throw error
            }
        }
    }

    /// Claims the answer to a ringing inbound call (accept or refuse, once).
    func claimDecision() -> Bool {
        state.withLockedValue { s in
            guard !s.link.decided, !s.link.over else { return false }
            s.link.decided = true
            return true
        }
    }

    /// Whether `dialog` is this room's live dialog (a late event of an earlier one is not).
    func runs(_ dialog: SIPDialogID) -> Bool { state.withLockedValue { $0.link.dialog == dialog && !$0.link.over } }

    /// A re-INVITE changed the media.
    func update(_ media: SIPMedia) { state.withLockedValue { $0.link.media = media } }

    /// The dialog has media: the leg opens (on the offered ports for an outbound room).
    func openLeg(
        media: ServerMedia, configuration: RTPLegConfiguration, negotiated: SIPMedia, sipCallID: String,
        onLegEvent: @escaping @Sendable (RTPLegEvent) -> Void
    ) throws(APIError) -> RTPLeg {
        try state.withTypedLock { (s: inout State) throws(APIError) -> RTPLeg in
            guard !s.closed, let room = s.room else { throw APIError.callEnded }
            if let leg = s.leg { return leg }
            let ports = s.ports
            s.ports = nil
            do throws(RTPLegError) {
                let leg = try media.openLeg(room: room, configuration: configuration, ports: ports, onEvent: onLegEvent)
                s.leg = leg
                s.link.answered = true
                s.link.sipCallID = sipCallID
                s.link.media = negotiated
                return leg
            } catch {
                if let ports { media.cancel(ports) }
                throw APIError(.serviceUnavailable, "rtp_unavailable", "cannot open the RTP leg: \(error)")
            }
        }
    }

    /// The dialog is over (failed with `status`, or ended): nothing to hang up when the room
    /// closes, and a call that joins now ends at once.
    func dialogOver(failedStatus status: Int? = nil) {
        state.withLockedValue { s in
            s.link.dialog = nil
            s.link.over = true
            s.link.failedStatus = status
        }
    }

    /// Closes the handle; returns what to release: the room, its leg, a dialog to hang up, unused ports.
    func close() -> (room: Room?, leg: RTPLeg?, dialog: SIPDialogID?, ports: RTPPortReservation?) {
        state.withLockedValue { s in
            s.closed = true
            defer { (s.room, s.leg, s.link.dialog, s.ports) = (nil, nil, nil, nil) }
            return (s.room, s.leg, s.link.dialog, s.ports)
        }
    }
}

/// What a leg platform's `meeting_url` asks for, checked before any room exists.
struct LegPlan: Sendable {
    let configuration: RTPLegConfiguration
    /// The leg's speaker name (`name=` in the URL).
    let speakerName: String

    init(meetingURL: String, configuration server: ServerConfiguration) throws(APIError) {
        let url: RTPURL
        do throws(RTPURL.Invalid) { url = try RTPURL(parsing: meetingURL) } catch {
            throw APIError.badRequest("invalid_meeting_url", "\(error.description): rtp://HOST:PORT?codec=opus|pcmu|pcma[&pt=N][&dtmf_pt=N][&name=Speaker]")
        }
        guard let remote = Endpoint.resolve(host: url.host, port: url.port) else {
            throw APIError.badRequest("invalid_meeting_url", "cannot resolve \(url.host) to an IPv4 address")
        }
        speakerName = url.name
        configuration = RTPLegConfiguration(
            codec: url.codec, remote: remote, payloadType: url.payloadType,
            telephoneEventPayloadType: url.telephoneEventPayloadType, timeoutSeconds: server.rtpTimeoutSeconds,
            canonicalName: "chamade@\(url.name)")
    }
}

extension NIOLockedValueBox {
    /// `withLockedValue` with typed throws.
    func withTypedLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = withLockedValue { value in Result { () throws(E) -> R in try body(&value) } }
        return try result.get()
    }
}
