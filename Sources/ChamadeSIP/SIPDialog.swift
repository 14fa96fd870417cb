import CLibre
import ChamadeMedia
#if canImport(Glibc)
import Glibc
#endif

/// One dialog's libre state (its `sipsess`, its SDP and its ring timer), on the SIP thread only.
/// libre's handlers reach it through an unretained pointer; the stack keeps it alive until it is
/// reaped, a loop turn after it finished.
final class Dialog {
    unowned let stack: SIPStack
    let id: SIPDialogID
    let inbound: Bool
    var callID = ""
    var sess: OpaquePointer?
    var sdp: SessionDescription?
    /// A 2xx was sent (inbound) or received (outbound).
    var answered = false
    /// Reported over: no more events (set by `SIPStack.finish`).
    var finished = false
    private var media: SIPMedia?
    /// Our RTP address in its SDP.
    private var local = Endpoint(address: 0, port: 0)
    private let timer: UnsafeMutablePointer<tmr>

    init(stack: SIPStack, id: SIPDialogID, inbound: Bool) {
        self.stack = stack
        self.id = id
        self.inbound = inbound
        timer = .allocate(capacity: 1)
        tmr_init(timer)
    }

    deinit {
        tmr_cancel(timer)
        timer.deallocate()
    }

    private var arg: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    /// Frees the session (libre sends what is due: BYE once established, CANCEL before an answer)
    /// and the SDP.
    func release() {
        tmr_cancel(timer)
        if let sess { _ = mem_deref(UnsafeMutableRawPointer(sess)) }
        sess = nil
        sdp = nil
    }

    // MARK: inbound

    /// Reads the INVITE's offer: the media we would answer with, or nil (488) when there is no
    /// offer, no codec in common, or no address.
    func offered(_ msg: UnsafePointer<sip_msg>, local: Endpoint) -> SIPMedia? {
        guard let body = msg.pointee.mb, body.pointee.end > body.pointee.pos else { return nil }
        let pos = body.pointee.pos
        guard let probe = try? SessionDescription(local: local, formats: SessionDescription.offered),
            probe.decode(body, offer: true), let media = probe.negotiated()
        else { return nil }
        // The answer names just the chosen codec: a session of its own, given the offer again.
        body.pointee.pos = pos
        guard let answer = try? SessionDescription(local: local, formats: SessionDescription.answerFormats(for: media)),
            answer.decode(body, offer: true)
        else { return nil }
        body.pointee.pos = pos
        sdp = answer
        self.media = media
        return media
    }

    /// 180 Ringing inside a session of its own, and the ring timer (480 when it fires).
    func ring(sock: OpaquePointer?, _ msg: UnsafePointer<sip_msg>, ringTimeout: Double) -> Bool {
        let err = clibre_sipsess_accept(
            &sess, sock, msg, 180, "Ringing", "chamade", "application/sdp", nil, nil, nil, false,
            Dialog.offerHandler, Dialog.answerHandler, Dialog.establishedHandler, nil, nil, Dialog.closeHandler, arg, "")
        guard err == 0 else { return false }
        tmr_start(timer, UInt64(max(0.001, ringTimeout) * 1000), { arg in
            let d = Unmanaged<Dialog>.fromOpaque(arg!).takeUnretainedValue()
            guard !d.finished, !d.answered else { return }
            if let sess = d.sess { _ = clibre_sipsess_reject(sess, 480, "Temporarily Unavailable", "") }
            d.stack.finish(d)
            d.stack.emit(.ended(d.id, .ringTimeout))
        }, arg)
        return true
    }

    /// 200 with our SDP answer, the leg at `local`.
    func answer(local: Endpoint) {
        guard inbound, !answered, !finished, let sess, let sdp else { return }
        self.local = local
        sdp.setLocal(local)
        guard let mb = sdp.encode(offer: false) else { return }
        defer { _ = mem_deref(UnsafeMutableRawPointer(mb)) }
        guard clibre_sipsess_answer(sess, 200, "OK", mb, "") == 0 else { return }
        answered = true
        tmr_cancel(timer)
    }

    /// A final refusal of a ringing inbound call; false if it is not one.
    func reject(status: UInt16, reason: String) -> Bool {
        guard inbound, !answered, !finished, let sess else { return false }
        tmr_cancel(timer)
        _ = clibre_sipsess_reject(sess, status, reason, "")
        return true
    }

    /// Our hang-up: 480 to a ringing inbound call; for the rest, `release` does it (CANCEL or BYE).
    func hangUp() {
        guard !finished else { return }
        tmr_cancel(timer)
        if inbound, !answered, let sess { _ = clibre_sipsess_reject(sess, 480, "Temporarily Unavailable", "") }
    }

    // MARK: outbound

    /// Sends the INVITE with our offer; the ring timer cancels it if nothing final comes. Returns a
    /// failure status if it could not be sent.
    func connect(sock: OpaquePointer?, to uri: SIPURI, local: Endpoint, displayName: String) -> Int? {
        guard let offer = try? SessionDescription(local: local, formats: SessionDescription.offered),
            let mb = offer.encode(offer: true)
        else { return 500 }
        defer { _ = mem_deref(UnsafeMutableRawPointer(mb)) }
        sdp = offer
        self.local = local
        let credentials = stack.credentials(forHost: uri.host)
        let fromUser = credentials?.user ?? "chamade"
        let fromHost = credentials == nil ? stack.localAddress.description : uri.host + (uri.port.map { ":\($0)" } ?? "")
        // Without credentials a challenge fails the INVITE with its status (401/407).
        let secret = credentials.flatMap(LibreCredentials.make)
        defer { if let secret { _ = mem_deref(secret) } }
        let err = clibre_sipsess_connect(
            &sess, sock, uri.description, displayName, "sip:\(fromUser)@\(fromHost)", "chamade", "application/sdp", mb,
            secret == nil ? nil : LibreCredentials.handler, secret, true, Dialog.offerHandler, Dialog.answerHandler,
            Dialog.progressHandler, Dialog.establishedHandler, nil, nil, Dialog.closeHandler, arg, "")
        guard err == 0 else { return err == EINVAL ? 400 : 503 }
        tmr_start(timer, UInt64(max(0.001, stack.configuration.ringTimeoutSeconds) * 1000), { arg in
            let d = Unmanaged<Dialog>.fromOpaque(arg!).takeUnretainedValue()
            guard !d.finished, !d.answered else { return }
            d.stack.finish(d)  // released on the next turn: CANCEL
            d.stack.emit(.failed(d.id, status: 408))
        }, arg)
        return nil
    }

    // MARK: libre's handlers

    private static func dialog(_ arg: UnsafeMutableRawPointer?) -> Dialog { Unmanaged<Dialog>.fromOpaque(arg!).takeUnretainedValue() }

    /// A re-INVITE (hold, resume, a new address): answer from what it offers.
    private static let offerHandler: @convention(c) (
        UnsafeMutablePointer<UnsafeMutablePointer<mbuf>?>?, UnsafePointer<sip_msg>?, UnsafeMutableRawPointer?
    ) -> Int32 = { descp, msg, arg in
        let d = dialog(arg)
        guard let sdp = d.sdp, let msg, let descp else { return EINVAL }
        guard let body = msg.pointee.mb, body.pointee.end > body.pointee.pos else {
            // An offerless re-INVITE: we offer what we have.
            descp.pointee = sdp.encode(offer: true)
            return descp.pointee == nil ? ENOMEM : 0
        }
        guard sdp.decode(body, offer: true), let media = sdp.negotiated() else { return EPROTO }
        // The leg runs one codec and payload type: an offer that changes them is refused (488),
        // and the dialog goes on as it was.
        if let current = d.media, media.codec != current.codec || media.payloadType != current.payloadType { return EPROTO }
        descp.pointee = sdp.encode(offer: false)
        guard descp.pointee != nil else { return ENOMEM }
        if media != d.media, !d.finished {
            d.media = media
            if d.answered { d.stack.emit(.mediaChanged(d.id, media)) }
        }
        return 0
    }

    /// The SDP answer to our offer (in the 2xx).
    private static let answerHandler: @convention(c) (UnsafePointer<sip_msg>?, UnsafeMutableRawPointer?) -> Int32 = { msg, arg in
        let d = dialog(arg)
        guard !d.inbound, let sdp = d.sdp, let body = msg?.pointee.mb, body.pointee.end > body.pointee.pos else { return 0 }
        if sdp.decode(body, offer: false) { d.media = sdp.negotiated() }
        return 0
    }

    private static let progressHandler: @convention(c) (UnsafePointer<sip_msg>?, UnsafeMutableRawPointer?) -> Void = { msg, arg in
        let d = dialog(arg)
        guard let msg, !d.finished else { return }
        d.stack.emit(.progress(d.id, status: Int(msg.pointee.scode)))
    }

    /// Outbound: the 2xx came (libre has sent the ACK). Inbound: our 2xx was ACKed.
    private static let establishedHandler: @convention(c) (UnsafePointer<sip_msg>?, UnsafeMutableRawPointer?) -> Void = { msg, arg in
        let d = dialog(arg)
        guard !d.inbound, !d.finished else { return }
        tmr_cancel(d.timer)
        d.answered = true
        d.callID = msg.map { SIPStack.string($0.pointee.callid) } ?? ""
        guard let media = d.media,
            let chosen = try? SessionDescription(local: d.local, formats: SessionDescription.answerFormats(for: media))
        else {
            // An answer with nothing in common: hang up (BYE on release).
            d.stack.finish(d)
            d.stack.emit(.failed(d.id, status: 488))
            return
        }
        // From now on the dialog's SDP names just the codec chosen, as an inbound one does: a
        // re-INVITE is answered with it (or refused), never with a codec the leg does not run.
        d.sdp = chosen
        d.stack.emit(.answered(d.id, callID: d.callID, media: media))
    }

    /// The session ended by the far end or the network; `msg` is what ended it (a BYE, a CANCEL,
    /// a final failure response), if anything.
    private static let closeHandler: @convention(c) (Int32, UnsafePointer<sip_msg>?, UnsafeMutableRawPointer?) -> Void = { err, msg, arg in
        let d = dialog(arg)
        guard !d.finished else { return }
        let stack = d.stack
        stack.finish(d)
        if !d.inbound && !d.answered {
            let status: Int =
                if let msg, !msg.pointee.req, msg.pointee.scode >= 300 { Int(msg.pointee.scode) }
                else if err == ETIMEDOUT { 408 } else { 503 }
            stack.emit(.failed(d.id, status: status))
        } else if d.inbound && !d.answered {
            stack.emit(.ended(d.id, .cancelled))
        } else if err == ECONNRESET || msg?.pointee.req == true {
            // libre ends a session on the far end's BYE with ECONNRESET.
            stack.emit(.ended(d.id, .remoteHangUp))
        } else {
            stack.emit(.ended(d.id, .lost(code: err)))
        }
    }
}
