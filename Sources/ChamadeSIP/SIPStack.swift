// SIP signalling on libre: one owner, SIPStack, runs libre's loop (`re_main`) on a thread of its
// own. Every libre object is created, used and freed on that thread; other threads reach it
// through libre's `mqueue` (a pipe the loop polls, so a command wakes it at once). Events go to the
// owner on the SIP thread: it must not block in them. Media stays on the RTP legs: this module
// does signalling and SDP only.

import CLibre
public import ChamadeMedia
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One libre SIP user agent over UDP (SPEC §6 "SIP"): inbound INVITEs (100, 180, then the owner's
/// answer or refusal), outbound INVITEs with digest authentication, re-INVITEs (hold), and
/// registrations. Thread-safe: commands may come from any thread.
public final class SIPStack: @unchecked Sendable {
    // SAFETY: the loop-thread state below is touched only on the SIP thread, between `start` and the
    // end of `stop`; `mq` and `thread` are written before `ready` is signalled and read-only after,
    // until `stop` joins the thread.
    public let configuration: SIPConfiguration
    private let onEvent: @Sendable (SIPEvent) -> Void
    private let nextID = Atomic<UInt64>(0)
    private let counters = Mutex(SIPStatistics())
    private let registrationStates: Mutex<[SIPRegistrationStatus]>

    // Loop-thread state.
    private var sip: OpaquePointer?
    private var sock: OpaquePointer?
    private var dnsc: OpaquePointer?
    var dialogs: [UInt64: Dialog] = [:]
    private var finished: [Dialog] = []
    private let reaper: UnsafeMutablePointer<tmr>
    private let closeGuard: UnsafeMutablePointer<tmr>
    private var registrations: [Registration] = []
    /// The address put in SDP when a leg is bound to all addresses, and in our From URI.
    private(set) var localAddress = Endpoint(address: 0x7F00_0001, port: 5060)

    /// The command queue: set on the SIP thread before `ready`, cleared by it at teardown; under
    /// its lock, so a command posted while the stack stops never reaches a freed queue.
    /// (Its address as an integer: a pointer is not Sendable.)
    private let mq = Mutex<UInt>(0)
    private var thread: pthread_t?
    private var startResult: Result<UInt16, SIPError> = .failure(.notRunning)
    private let ready = DispatchSemaphore(value: 0)

    public init(configuration: SIPConfiguration, onEvent: @escaping @Sendable (SIPEvent) -> Void) {
        self.configuration = configuration
        self.onEvent = onEvent
        registrationStates = Mutex(configuration.registrations.map { SIPRegistrationStatus(uri: $0.description, state: .registering, lastStatus: 0) })
        reaper = .allocate(capacity: 1)
        closeGuard = .allocate(capacity: 1)
        tmr_init(reaper)
        tmr_init(closeGuard)
    }

    deinit {
        stop()
        reaper.deallocate()
        closeGuard.deallocate()
    }

    /// The traffic counters so far (`/metrics`).
    public var statistics: SIPStatistics { counters.withLock { $0 } }

    /// Every registration and how it stands (`GET /api/account`).
    public var registrationStatus: [SIPRegistrationStatus] { registrationStates.withLock { $0 } }

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
        if case .failure = startResult {
            pthread_join(t, nil)
            thread = nil
        }
        return try startResult.get()
    }

    // MARK: - Commands (any thread)

    /// Sends an INVITE to `uri` offering RTP at `localRTP`; the outcome comes as `progress`,
    /// `answered` or `failed`.
    public func dial(_ id: SIPDialogID, _ uri: SIPURI, localRTP: Endpoint, displayName: String) throws(SIPError) {
        try post(.dial(id, uri, localRTP, displayName))
    }

    /// A new dialog's identity, to be known before `dial` (its events may come at once).
    public func newDialogID() -> SIPDialogID { SIPDialogID(rawValue: nextID.add(1, ordering: .relaxed).newValue) }

    /// Answers a ringing inbound call with 200 and our SDP answer naming `localRTP`.
    public func answer(_ id: SIPDialogID, localRTP: Endpoint) throws(SIPError) { try post(.answer(id, localRTP)) }

    /// Refuses a ringing inbound call with a final status (603 Decline, 480…).
    public func reject(_ id: SIPDialogID, status: UInt16, reason: String) throws(SIPError) {
        try post(.reject(id, status, reason))
    }

    /// Ends a dialog from our side: CANCEL before the answer of our INVITE, 480 to a ringing inbound
    /// call, BYE once established. No event follows.
    public func hangUp(_ id: SIPDialogID) { try? post(.hangUp(id)) }

    /// Hangs up every dialog and unregisters, waits (up to `graceSeconds`) for the far ends to
    /// answer, and stops the thread.
    public func stop(graceSeconds: Double = 2) {
        guard let t = thread else { return }
        try? post(.stop(graceSeconds))
        pthread_join(t, nil)
        thread = nil
    }

    enum Command {
        case dial(SIPDialogID, SIPURI, Endpoint, String)
        case answer(SIPDialogID, Endpoint)
        case reject(SIPDialogID, UInt16, String)
        case hangUp(SIPDialogID)
        case stop(Double)
    }

    private final class CommandBox {
        let command: Command
        init(_ command: Command) { self.command = command }
    }

    private func post(_ command: Command) throws(SIPError) {
        let data = Unmanaged.passRetained(CommandBox(command)).toOpaque()
        let err = mq.withLock { bits -> Int32 in
            guard let queue = OpaquePointer(bitPattern: bits) else { return -1 }
            return mqueue_push(queue, 0, data)
        }
        guard err == 0 else {
            Unmanaged<CommandBox>.fromOpaque(data).release()
            throw err == -1 ? .notRunning : .libre(operation: "mqueue_push", code: err)
        }
    }

    // MARK: - The SIP thread

    private func threadMain() {
        var err = libre_init()
        if err == 0 {
            let rt = re_thread_init()  // a thread-local loop; EALREADY if libre_init made one
            if rt != 0 && rt != EALREADY { err = rt }
        }
        guard err == 0 else { return fail(.libre(operation: "libre_init", code: err)) }
        defer { libre_close() }
        if let error = open() {
            teardown()
            return fail(error)
        }
        startResult = .success(localAddress.port)
        ready.signal()
        for r in registrations { r.start() }
        _ = re_main(nil)
        teardown()
    }

    private func fail(_ error: SIPError) {
        startResult = .failure(error)
        ready.signal()
    }

    /// Makes the DNS client, the SIP stack, its UDP transport, the session socket and the command
    /// queue; nil when all worked.
    private func open() -> SIPError? {
        let me = Unmanaged.passUnretained(self).toOpaque()
        dnsc = Self.systemDNSClient()
        var err = sip_alloc(&sip, dnsc, 32, 32, 32, "chamade", { arg in
            // Every transaction of a graceful close has ended: the loop may stop.
            _ = arg
            re_cancel()
        }, me)
        guard err == 0 else { return .libre(operation: "sip_alloc", code: err) }
        sip_set_trace_handler(sip) { tx, _, _, _, pkt, len, arg in
            guard let arg, let pkt else { return }
            Unmanaged<SIPStack>.fromOpaque(arg).takeUnretainedValue().count(tx: tx, UnsafeBufferPointer(start: pkt, count: len))
        }
        var laddr = sa()
        guard sa_set_str(&laddr, configuration.host, configuration.port) == 0, sa_af(&laddr) == AF_INET else {
            return .invalidAddress(configuration.host)
        }
        err = clibre_sip_transp_add_udp(sip, &laddr)
        guard err == 0 else { return .libre(operation: "sip_transp_add", code: err) }
        var bound = sa()
        var dst = sa()
        _ = sa_set_str(&dst, "127.0.0.1", 5060)  // any destination of the family picks the transport
        err = sip_transp_laddr(sip, &bound, SIP_TRANSP_UDP, &dst)
        guard err == 0 else { return .libre(operation: "sip_transp_laddr", code: err) }
        var address = sa_in(&bound)
        if address == 0 {
            var source = sa()
            if net_default_source_addr_get(AF_INET, &source) == 0 { address = sa_in(&source) }
        }
        localAddress = Endpoint(address: address == 0 ? 0x7F00_0001 : address, port: sa_port(&bound))
        err = sipsess_listen(&sock, sip, 32, { msg, arg in
            Unmanaged<SIPStack>.fromOpaque(arg!).takeUnretainedValue().onInvite(msg!)
        }, me)
        guard err == 0 else { return .libre(operation: "sipsess_listen", code: err) }
        var queue: OpaquePointer?
        err = mqueue_alloc(&queue, { _, data, arg in
            let box = Unmanaged<CommandBox>.fromOpaque(data!).takeRetainedValue()
            Unmanaged<SIPStack>.fromOpaque(arg!).takeUnretainedValue().run(box.command)
        }, me)
        guard err == 0 else { return .libre(operation: "mqueue_alloc", code: err) }
        mq.withLock { $0 = UInt(bitPattern: queue.map { Int(bitPattern: $0) } ?? 0) }
        registrations = configuration.registrations.enumerated().map { i, uri in
            Registration(stack: self, index: i, uri: uri)
        }
        return nil
    }

    /// libre's DNS client on the system's name servers (for `sip:` URIs with host names); nil when
    /// there are none (IP literals still work).
    private static func systemDNSClient() -> OpaquePointer? {
        var servers = [sa](repeating: sa(), count: 4)
        var count: UInt32 = 4
        var domain = [CChar](repeating: 0, count: 256)
        guard dns_srv_get(&domain, 256, &servers, &count) == 0, count > 0 else { return nil }
        var client: OpaquePointer?
        guard dnsc_alloc(&client, nil, servers, count) == 0 else { return nil }
        return client
    }

    private func teardown() {
        tmr_cancel(reaper)
        tmr_cancel(closeGuard)
        for d in dialogs.values { d.release() }
        dialogs.removeAll()
        reap()
        for r in registrations { r.release() }
        registrations.removeAll()
        mq.withLock { bits in
            if let queue = OpaquePointer(bitPattern: bits) { _ = mem_deref(UnsafeMutableRawPointer(queue)) }
            bits = 0
        }
        // Commands that got in before the queue closed are dropped with it; their boxes leak
        // (a few bytes, only at stop).
        if let sock { _ = mem_deref(UnsafeMutableRawPointer(sock)) }
        sock = nil
        if let sip {
            sip_close(sip, true)
            _ = mem_deref(UnsafeMutableRawPointer(sip))
        }
        sip = nil
        if let dnsc { _ = mem_deref(UnsafeMutableRawPointer(dnsc)) }
        dnsc = nil
    }

    private func run(_ command: Command) {
        switch command {
        case .dial(let id, let uri, let local, let name):
            let dialog = Dialog(stack: self, id: id, inbound: false)
            dialogs[id.rawValue] = dialog
            if let status = dialog.connect(sock: sock, to: uri, local: rtpAddress(local), displayName: name) {
                finish(dialog)
                emit(.failed(id, status: status))
            }
        case .answer(let id, let local):
            dialogs[id.rawValue]?.answer(local: rtpAddress(local))
        case .reject(let id, let status, let reason):
            guard let d = dialogs[id.rawValue] else { return }
            // Answered meanwhile (an answer command came first): released, it hangs up with a BYE.
            _ = d.reject(status: status, reason: reason)
            finish(d)
        case .hangUp(let id):
            guard let d = dialogs[id.rawValue] else { return }
            d.hangUp()
            finish(d)
        case .stop(let grace):
            for d in Array(dialogs.values) {
                d.hangUp()
                finish(d)
            }
            reap()
            for r in registrations { r.release() }  // unregisters (REGISTER with expires 0)
            registrations.removeAll()
            if let sock { _ = mem_deref(UnsafeMutableRawPointer(sock)) }
            sock = nil
            // A graceful close waits for every transaction (BYEs, CANCELs, unregistrations), then
            // its exit handler stops the loop; the guard stops it anyway after `grace`.
            sip_close(sip, false)
            tmr_start(closeGuard, UInt64(max(0, grace) * 1000), { _ in re_cancel() }, nil)
        }
    }

    /// Our RTP address for SDP: a leg bound to all addresses is reached at the SIP address.
    private func rtpAddress(_ local: Endpoint) -> Endpoint {
        local.address == 0 ? localAddress.with(port: local.port) : local
    }

    // MARK: inbound

    /// An INVITE outside any dialog (libre's connection handler).
    private func onInvite(_ msg: UnsafePointer<sip_msg>) {
        // libre never sends 100 Trying: send it statelessly (sipsess_accept makes its own transaction).
        _ = sip_reply(sip, msg, 100, "Trying")
        let user = Self.string(msg.pointee.uri.user)
        guard configuration.accepts(user) else {
            _ = sip_reply(sip, msg, 404, "Not Found")
            return
        }
        let id = newDialogID()
        let dialog = Dialog(stack: self, id: id, inbound: true)
        guard let media = dialog.offered(msg, local: localAddress.with(port: 0)) else {
            _ = clibre_sip_replyf(sip, msg, 488, "Not Acceptable Here", "")
            return
        }
        let dname = Self.string(msg.pointee.from.dname)
        let incoming = SIPIncomingCall(
            id: id, callID: Self.string(msg.pointee.callid),
            caller: dname.isEmpty ? Self.string(msg.pointee.from.uri.user) : dname,
            fromURI: Self.string(msg.pointee.from.auri), user: user, media: media)
        guard dialog.ring(sock: sock, msg, ringTimeout: configuration.ringTimeoutSeconds) else {
            dialog.release()
            _ = sip_reply(sip, msg, 500, "Server Internal Error")
            return
        }
        dialog.callID = incoming.callID
        dialogs[id.rawValue] = dialog
        emit(.incoming(incoming))
    }

    // MARK: dialogs' outcomes (from Dialog, SIP thread)

    func emit(_ event: SIPEvent) { onEvent(event) }

    /// The dialog is over for us: no more events; freed on the next loop turn (libre may be inside
    /// one of its handlers now).
    func finish(_ dialog: Dialog) {
        guard !dialog.finished else { return }
        dialog.finished = true
        dialogs.removeValue(forKey: dialog.id.rawValue)
        finished.append(dialog)
        let me = Unmanaged.passUnretained(self).toOpaque()
        tmr_start(reaper, 0, { arg in Unmanaged<SIPStack>.fromOpaque(arg!).takeUnretainedValue().reap() }, me)
    }

    private func reap() {
        let done = finished
        finished.removeAll()
        for d in done { d.release() }
    }

    func credentials(forHost host: String) -> SIPCredentials? { configuration.credentials[host] }

    func setRegistration(_ index: Int, _ status: SIPRegistrationStatus) {
        let changed = registrationStates.withLock { states -> Bool in
            guard states[index] != status else { return false }
            states[index] = status
            return true
        }
        if changed { emit(.registration(status)) }
    }

    var sipHandle: OpaquePointer? { sip }

    // MARK: counting

    private func count(tx: Bool, _ bytes: UnsafeBufferPointer<UInt8>) {
        // A response starts "SIP/2.0 NNN"; anything else is a request.
        let isResponse = bytes.count > 9 && bytes[0] == UInt8(ascii: "S") && bytes[3] == UInt8(ascii: "/") && bytes[7] == UInt8(ascii: " ")
        let klass = isResponse ? Int(bytes[8]) - 0x30 : 0
        counters.withLock { c in
            if isResponse, (1...6).contains(klass) {
                if tx { c.responsesSent[klass] += 1 } else { c.responsesReceived[klass] += 1 }
            } else if !isResponse {
                if tx { c.requestsSent += 1 } else { c.requestsReceived += 1 }
            }
        }
    }

    static func string(_ pl: pl) -> String {
        guard let p = pl.p, pl.l > 0 else { return "" }
        return p.withMemoryRebound(to: UInt8.self, capacity: pl.l) {
            String(decoding: UnsafeBufferPointer(start: $0, count: pl.l), as: UTF8.self)
        }
    }
}
