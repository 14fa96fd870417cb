// SIP signalling on libre (groundwork for issue 10): one owner, SIPStack, runs libre's loop
// (`re_main`) on a dedicated thread. Every libre object is created, used and freed on that
// thread only; other threads reach it through libre's `mqueue` (a pipe the loop polls).
// Callbacks (`SIPEvent`) are delivered on the SIP thread: they must not block.

import CLibre
import Dispatch
import Glibc

/// An error from the SIP stack. No C types: libre's errno-style codes are kept as `Int32`.
public enum SIPError: Error, Equatable, Sendable {
    /// The host is not an IP literal (no DNS client here yet).
    case invalidAddress(String)
    /// A libre call failed; `code` is the errno it returned (for example 98 EADDRINUSE).
    case libre(operation: String, code: Int32)
    /// The stack is not running (never started, or stopped).
    case notRunning
}

/// What the stack reports, on the SIP thread.
public enum SIPEvent: Sendable, Equatable {
    /// An INVITE arrived; 100 Trying and 180 Ringing have been sent. Answer with `answer(callID:)`
    /// or `reject(callID:status:reason:)`.
    case invite(SIPInvite)
    /// The ACK for our 2xx arrived: the dialog is established.
    case established(callID: String)
    /// The session ended: `byRemote` when a BYE (or CANCEL) came from the far end; `code` is
    /// libre's errno (0 for a BYE, ECONNRESET for a CANCEL, ETIMEDOUT for a missing ACK).
    case closed(callID: String, byRemote: Bool, code: Int32)
}

/// An inbound INVITE as decoded by libre (SIP headers and the SDP offer).
public struct SIPInvite: Sendable, Equatable {
    public var callID: String
    public var from: String
    public var toUser: String
    /// The remote RTP address from the SDP offer, "IP:PORT".
    public var remoteRTP: String
    /// The codec chosen from the offer ("PCMU") and its payload type there.
    public var codec: String
    public var payloadType: Int
}

/// One libre SIP stack (UDP) on its own thread. `start()` binds and returns the bound port.
public final class SIPStack: @unchecked Sendable {
    // Immutable configuration.
    private let host: String
    private let port: UInt16
    private let rtpPort: UInt16
    private let onEvent: @Sendable (SIPEvent) -> Void

    // Loop-thread state: touched only on the SIP thread (between start and stop).
    private var sip: OpaquePointer?
    private var sock: OpaquePointer?
    private var calls: [String: Call] = [:]
    /// Ended calls, freed later: libre's close handler runs inside the session's own code, so the
    /// session must not be freed from it.
    private var ended: [Call] = []

    // Written once before `ready` is signalled, then read-only; `mq` is cleared by stop.
    private var mq: OpaquePointer?
    private var thread: pthread_t?
    private var startResult: Result<UInt16, SIPError> = .failure(.notRunning)
    private let ready = DispatchSemaphore(value: 0)

    /// - Parameters: host/port to bind (port 0: any), `rtpPort` the RTP port put in SDP answers.
    public init(host: String, port: UInt16, rtpPort: UInt16, onEvent: @escaping @Sendable (SIPEvent) -> Void) {
        self.host = host
        self.port = port
        self.rtpPort = rtpPort
        self.onEvent = onEvent
    }

    deinit { stop() }

    /// Starts the SIP thread; returns the bound UDP port once the transport listens.
    public func start() throws(SIPError) -> UInt16 {
        let box = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { raw in
            let me = Unmanaged<SIPStack>.fromOpaque(raw!).takeRetainedValue()
            me.threadMain()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<SIPStack>.fromOpaque(box).release()
            throw .libre(operation: "pthread_create", code: rc)
        }
        thread = t
        ready.wait()
        if case .failure = startResult { pthread_join(t, nil); thread = nil }
        return try startResult.get()
    }

    /// Answers a ringing call with 200 OK and the SDP answer (from any thread).
    public func answer(callID: String) throws(SIPError) { try post(.answer(callID)) }

    /// Refuses a ringing call with a final status (603 Decline, 486, 480…) (from any thread).
    public func reject(callID: String, status: UInt16, reason: String) throws(SIPError) {
        try post(.reject(callID, status, reason))
    }

    /// Stops the loop (BYE to established sessions is left to libre's session destructor) and joins the thread.
    public func stop() {
        guard let t = thread else { return }
        try? post(.stop)
        pthread_join(t, nil)
        thread = nil
    }

    // MARK: - Cross-thread commands

    private enum Command {
        case answer(String)
        case reject(String, UInt16, String)
        case stop
    }

    private final class CommandBox {
        let command: Command
        init(_ command: Command) { self.command = command }
    }

    private func post(_ command: Command) throws(SIPError) {
        guard thread != nil, let mq else { throw .notRunning }
        let data = Unmanaged.passRetained(CommandBox(command)).toOpaque()
        let err = mqueue_push(mq, 0, data)
        if err != 0 {
            Unmanaged<CommandBox>.fromOpaque(data).release()
            throw .libre(operation: "mqueue_push", code: err)
        }
    }

    // MARK: - The SIP thread

    private func threadMain() {
        var err = libre_init()
        if err == 0 {
            let rt = re_thread_init()  // a thread-local loop; EALREADY if libre_init made one
            if rt != 0 && rt != EALREADY { err = rt }
        }
        guard err == 0 else { return fail("libre_init", err) }
        defer { libre_close() }
        let me = Unmanaged.passUnretained(self).toOpaque()

        err = sip_alloc(&sip, nil, 32, 32, 32, "chamade", nil, nil)
        guard err == 0 else { return fail("sip_alloc", err) }
        var laddr = sa()
        err = sa_set_str(&laddr, host, port)
        guard err == 0 else {
            teardown()
            startResult = .failure(.invalidAddress(host))
            ready.signal()
            return
        }
        err = clibre_sip_transp_add_udp(sip, &laddr)
        guard err == 0 else { teardown(); return fail("sip_transp_add", err) }
        var bound = sa()
        var dst = sa()
        _ = sa_set_str(&dst, host, 5060)  // any destination of the same family picks the transport
        err = sip_transp_laddr(sip, &bound, SIP_TRANSP_UDP, &dst)
        guard err == 0 else { teardown(); return fail("sip_transp_laddr", err) }
        err = sipsess_listen(&sock, sip, 32, { msg, arg in
            Unmanaged<SIPStack>.fromOpaque(arg!).takeUnretainedValue().onInvite(msg!)
        }, me)
        guard err == 0 else { teardown(); return fail("sipsess_listen", err) }
        err = mqueue_alloc(&mq, { _, data, arg in
            let box = Unmanaged<CommandBox>.fromOpaque(data!).takeRetainedValue()
            Unmanaged<SIPStack>.fromOpaque(arg!).takeUnretainedValue().run(box.command)
        }, me)
        guard err == 0 else { teardown(); return fail("mqueue_alloc", err) }

        startResult = .success(sa_port(&bound))
        ready.signal()
        _ = re_main(nil)
        teardown()
    }

    private func fail(_ op: String, _ err: Int32) {
        startResult = .failure(.libre(operation: op, code: err))
        ready.signal()
    }

    private func teardown() {
        for call in calls.values { call.release() }
        calls.removeAll()
        freeEnded()
        if let mq { _ = mem_deref(UnsafeMutableRawPointer(mq)) }
        mq = nil
        if let sock { _ = mem_deref(UnsafeMutableRawPointer(sock)) }
        sock = nil
        if let sip {
            sip_close(sip, true)
            _ = mem_deref(UnsafeMutableRawPointer(sip))
        }
        sip = nil
    }

    private func run(_ command: Command) {
        freeEnded()
        switch command {
        case .answer(let id):
            guard let call = calls[id], let sess = call.sess else { return }
            var mb: UnsafeMutablePointer<mbuf>?
            guard sdp_encode(&mb, call.sdp, false) == 0 else { return }
            _ = clibre_sipsess_answer(sess, 200, "OK", mb, "")
            _ = mem_deref(mb)
        case .reject(let id, let status, let reason):
            guard let call = calls.removeValue(forKey: id) else { return }
            if let sess = call.sess { _ = clibre_sipsess_reject(sess, status, reason, "") }
            call.release()
        case .stop:
            re_cancel()
        }
    }

    /// An INVITE outside any dialog (libre's conn handler).
    private func onInvite(_ msg: UnsafePointer<sip_msg>) {
        freeEnded()
        // libre never sends 100 Trying: send it statelessly (sipsess_accept makes its own transaction).
        _ = sip_reply(sip, msg, 100, "Trying")
        let callID = string(msg.pointee.callid)
        let call = Call(stack: self, callID: callID)
        // The SDP answer: c= our host, one audio m-line on rtpPort, PCMU only for now.
        var laddr = sa()
        _ = sa_set_str(&laddr, host, rtpPort)
        var media: OpaquePointer?
        guard sdp_session_alloc(&call.sdp, &laddr) == 0,
            sdp_media_add(&media, call.sdp, "audio", rtpPort, "RTP/AVP") == 0,
            clibre_sdp_format_add(nil, media, false, "0", "PCMU", 8000, 1, nil) == 0,
            clibre_sdp_media_set_lattr(media, true, "ptime", "20") == 0
        else {
            call.release()
            _ = sip_reply(sip, msg, 500, "Server Internal Error")
            return
        }
        // The offer is the INVITE's body (mb is positioned at it).
        guard msg.pointee.mb.pointee.end > msg.pointee.mb.pointee.pos,
            sdp_decode(call.sdp, msg.pointee.mb, true) == 0,
            let chosen = sdp_media_rformat(media, nil)
        else {
            call.release()
            _ = clibre_sip_replyf(sip, msg, 488, "Not Acceptable Here", "")
            return
        }
        var ip = [CChar](repeating: 0, count: 64)
        let raddr = sdp_media_raddr(media)!
        _ = sa_ntop(raddr, &ip, 64)
        let invite = SIPInvite(
            callID: callID, from: string(msg.pointee.from.auri), toUser: string(msg.pointee.uri.user),
            remoteRTP: "\(String(cString: ip)):\(sa_port(raddr))",
            codec: String(cString: chosen.pointee.name), payloadType: Int(chosen.pointee.pt))

        let arg = Unmanaged.passUnretained(call).toOpaque()
        let err = clibre_sipsess_accept(
            &call.sess, sock, msg, 180, "Ringing", "chamade", "application/sdp", nil,
            nil, nil, false,
            { descp, _, arg in  // offer handler: a re-INVITE; answer with our current SDP
                let call = Unmanaged<Call>.fromOpaque(arg!).takeUnretainedValue()
                return sdp_encode(descp, call.sdp, false)
            },
            { _, _ in 0 },  // answer handler: an SDP in the ACK (late offer), not used yet
            { _, arg in
                let call = Unmanaged<Call>.fromOpaque(arg!).takeUnretainedValue()
                call.stack?.onEvent(.established(callID: call.callID))
            },
            nil, nil,
            { err, msg, arg in
                let call = Unmanaged<Call>.fromOpaque(arg!).takeUnretainedValue()
                call.stack?.closed(call, err: err, remote: msg != nil || err == ECONNRESET)
            },
            arg, "")
        guard err == 0 else {
            call.release()
            _ = sip_reply(sip, msg, 500, "Server Internal Error")
            return
        }
        calls[callID] = call
        onEvent(.invite(invite))
    }

    private func closed(_ call: Call, err: Int32, remote: Bool) {
        calls.removeValue(forKey: call.callID)
        ended.append(call)
        onEvent(.closed(callID: call.callID, byRemote: remote, code: err))
    }

    private func freeEnded() {
        for call in ended { call.release() }
        ended.removeAll()
    }

    private func string(_ pl: pl) -> String {
        guard let p = pl.p, pl.l > 0 else { return "" }
        return p.withMemoryRebound(to: UInt8.self, capacity: pl.l) {
            String(decoding: UnsafeBufferPointer(start: $0, count: pl.l), as: UTF8.self)
        }
    }

    /// One session's libre objects (SIP thread only).
    private final class Call {
        weak var stack: SIPStack?
        let callID: String
        var sess: OpaquePointer?
        var sdp: OpaquePointer?
        init(stack: SIPStack, callID: String) {
            self.stack = stack
            self.callID = callID
        }
        /// Frees the session (sends BYE if established and not yet terminated) and the SDP session.
        func release() {
            if let sess { _ = mem_deref(UnsafeMutableRawPointer(sess)) }
            sess = nil
            if let sdp { _ = mem_deref(UnsafeMutableRawPointer(sdp)) }
            sdp = nil
        }
    }
}
