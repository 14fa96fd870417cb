import ChamadeMedia
import ChamadeSIP
import HTTPTypes
import Logging

/// What SIP does to calls (SPEC §6 "SIP"): the user agent's events, on the gateway's queue, and the
/// agent's answers to a ringing call.
extension ServerCore {
    func handle(_ event: SIPEvent) {
        switch event {
        case .incoming(let incoming):
            store.ring(incoming, baseURL: baseURL)
        case .progress:
            break
        case .answered(let dialog, let callID, let media):
            store.dialogAnswered(dialog, sipCallID: callID, media: media)
        case .failed(let dialog, let status):
            store.dialogOver(dialog, failedStatus: status)
        case .mediaChanged(let dialog, let media):
            store.dialogMediaChanged(dialog, media: media)
        case .ended(let dialog, _):
            store.dialogOver(dialog)
        case .registration(let status):
            switch status.state {
            case .registered: logger.notice("SIP registered \(status.uri)")
            case .failed: logger.warning("SIP registration of \(status.uri) failed (status \(status.lastStatus)); retrying with back-off")
            case .registering: break
            }
        }
    }
}

extension CallStore {
    /// An inbound INVITE: a ringing call of the routed key in a room of its own, announced as
    /// `call_ringing` on the key's events. A key at its call limit (or a server stopping) answers
    /// 486 Busy Here.
    func ring(_ incoming: SIPIncomingCall, baseURL: String) {
        guard let sip else { return }
        guard let key = sip.settings.key(forUser: incoming.user) else {
            return sip.reject(incoming.id, status: 404, reason: "Not Found")
        }
        let roomKey = RoomKey(platform: .sip, meetingURL: "sip-inbound:\(incoming.id.rawValue)")
        sip.adopt(incoming.id, room: roomKey)
        let call: Call
        do throws(APIError) {
            call = try admit(
                apiKey: key, platform: .sip, meetingURL: incoming.fromURI, agentName: "AI Agent", roomKey: roomKey,
                kind: .sipIn(incoming), direction: "inbound", caller: incoming.caller)
        } catch {
            return sip.reject(incoming.id, status: 486, reason: "Busy Here")
        }
        struct Ringing: Encodable {
            var type = "call_ringing"
            var call: CallObject
        }
        events.publish(apiKey: key, Ringing(call: call.object(baseURL: baseURL)))
    }

    /// `POST …/accept`: the leg opens on the offer's media and the 200 answers with its port.
    func accept(_ call: Call) throws(APIError) {
        guard call.state == .ringing, let sip, let handle = handle(of: call), case .sipIn(let incoming) = handle.kind,
            let dialog = handle.link.dialog, handle.claimDecision()
        else { throw notRinging(call, action: "accepted") }
        let leg: RTPLeg
        do throws(APIError) {
            leg = try handle.openLeg(
                media: media, configuration: legConfiguration(incoming.media), negotiated: incoming.media,
                sipCallID: incoming.callID, onLegEvent: legEventHandler(roomKey: call.roomKey, handle: handle))
        } catch {
            // No media, no call: the caller hears 503 and the call ends.
            handle.dialogOver()
            sip.reject(dialog, status: 503, reason: "Service Unavailable")
            try? end(call)
            throw error
        }
        direct(leg, incoming.media)
        do throws(SIPError) { try sip.answer(dialog, localRTP: leg.local) } catch {
            throw APIError(.serviceUnavailable, "sip_unavailable", "cannot answer: \(error)")
        }
        activate(roomCalls(of: call), leg: leg, sipCallID: incoming.callID)
    }

    /// `POST …/refuse`: 603 Decline, and the call is `refused`.
    func refuse(_ call: Call) throws(APIError) {
        guard call.state == .ringing, let sip, let handle = handle(of: call), let dialog = handle.link.dialog,
            handle.claimDecision()
        else { throw notRinging(call, action: "refused") }
        handle.dialogOver()
        sip.reject(dialog, status: 603, reason: "Decline")
        try end(call, as: .refused)
    }

    func notRinging(_ call: Call, action: String) -> APIError {
        APIError.conflict("not_ringing", "only a ringing inbound call can be \(action); this one is \(call.state.rawValue)")
    }

    /// Our INVITE was answered: the leg opens on the offered ports with the answer's media and the
    /// room's calls become active. A leg that cannot open loses the dialog.
    func dialogAnswered(_ dialog: SIPDialogID, sipCallID: String, media negotiated: SIPMedia) {
        guard let (roomKey, handle) = room(of: dialog) else { return sip?.hangUp(dialog) ?? () }
        do throws(APIError) {
            let leg = try handle.openLeg(
                media: media, configuration: legConfiguration(negotiated), negotiated: negotiated, sipCallID: sipCallID,
                onLegEvent: legEventHandler(roomKey: roomKey, handle: handle))
            direct(leg, negotiated)
            activate(calls(in: roomKey), leg: leg, sipCallID: sipCallID)
        } catch {
            sip?.hangUp(dialog)
            handle.dialogOver()
            if error.code == APIError.callEnded.code { return }  // the room closed meanwhile: nobody to tell
            let text = WireJSON.encode(ServerMessage.bridgeDisconnected("The call was answered but its media could not start: \(error.message)."))
            for c in calls(in: roomKey) {
                c.broadcast(text: text)
                try? end(c)
            }
        }
    }

    /// The dialog is over: our INVITE failed with `failedStatus` (every call of the room gets
    /// `call_failed` with it), or the far end ended it (BYE, CANCEL) or it rang out. Every call of
    /// the room ends.
    func dialogOver(_ dialog: SIPDialogID, failedStatus: Int? = nil) {
        guard let (roomKey, handle) = room(of: dialog) else { return }
        sip?.forget(dialog)
        handle.dialogOver(failedStatus: failedStatus)
        end(calls(in: roomKey), failedStatus: failedStatus)
    }

    /// Ends calls whose dialog is over, telling them `call_failed` first when it failed.
    func end(_ calls: [Call], failedStatus: Int?) {
        let failure = failedStatus.map { WireJSON.encode(ServerMessage.callFailed(status: $0)) }
        for c in calls {
            if let failure { c.broadcast(text: failure) }
            try? end(c)
        }
    }

    /// A re-INVITE: hold or resume, or the far end moved.
    func dialogMediaChanged(_ dialog: SIPDialogID, media negotiated: SIPMedia) {
        guard let (_, handle) = room(of: dialog), let leg = handle.leg else { return }
        // Only an address the SDP moved: the leg may have latched on to the packets' true source
        // (symmetric RTP, behind a NAT), which a re-INVITE that keeps its address must not undo.
        if negotiated.peerReceives, negotiated.remote != handle.link.media?.remote { leg.redirect(to: negotiated.remote) }
        handle.update(negotiated)
        direct(leg, negotiated)
    }

    /// Live dialogs by state, for `/metrics`.
    func sipDialogCounts() -> [String: Int] {
        var counts: [String: Int] = [:]
        for handle in roomHandles() {
            let link = handle.link
            guard link.dialog != nil else { continue }
            switch handle.kind {
            case .sipIn: counts[link.answered ? "active" : "ringing", default: 0] += 1
            case .sipOut: counts[link.answered ? "active" : "connecting", default: 0] += 1
            case .plain, .rtp: break
            }
        }
        return counts
    }

    // MARK: helpers

    /// The leg follows the far end's direction: it sends only to a far end that receives, and
    /// any hold (`sendonly`, `recvonly`, `inactive`) pauses the RTP timeout (SPEC §6): a far end
    /// playing music on hold may stop at any time.
    private func direct(_ leg: RTPLeg, _ media: SIPMedia) {
        leg.setDirection(sending: media.peerReceives, receiving: media.peerSends && media.peerReceives)
    }

    /// The leg for the negotiated media: the far end's payload types, and its `ptime` for G.711
    /// (20, 40 or 60 ms; anything else, and Opus, 20).
    private func legConfiguration(_ media: SIPMedia) -> RTPLegConfiguration {
        var leg = RTPLegConfiguration(
            codec: media.codec, remote: media.remote, payloadType: media.payloadType,
            // With no telephone-event negotiated, a payload type the audio does not use: digits sent
            // then are lost, but audio is never read as digits.
            telephoneEventPayloadType: media.telephoneEventPayloadType ?? (media.payloadType == 101 ? 102 : 101),
            timeoutSeconds: configuration.rtpTimeoutSeconds,
            canonicalName: "chamade@sip")
        leg.packetMilliseconds = media.packetMilliseconds ?? 20
        return leg
    }

    private func handle(of call: Call) -> RoomHandle? { handle(roomKey: call.roomKey) }

    /// The room whose live dialog this is (a late event of a dialog whose room closed, even if a
    /// new room has the same meeting URL, finds none).
    private func room(of dialog: SIPDialogID) -> (RoomKey, RoomHandle)? {
        guard let key = sip?.room(of: dialog), let handle = handle(roomKey: key), handle.runs(dialog) else { return nil }
        return (key, handle)
    }
}
