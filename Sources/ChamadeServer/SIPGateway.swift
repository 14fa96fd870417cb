import ChamadeMedia
import ChamadeSIP
import Dispatch
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// The server's SIP user agent (SPEC §6 "SIP"): owns the `SIPStack`, knows which room each dialog
/// belongs to, and hands the stack's events, in order, to the call store on a queue of its own
/// (never on the SIP thread, which must not block).
final class SIPGateway: Sendable {
    let settings: ServerConfiguration.SIPSettings
    private let stack: SIPStack
    private let queue = DispatchQueue(label: "chamade.sip-events")
    private struct State {
        var running = false
        /// The room of each live dialog.
        var rooms: [SIPDialogID: RoomKey] = [:]
    }
    private let state = NIOLockedValueBox(State())
    /// Where the stack's events go once started (the hop to `queue`).
    private let eventHandler: NIOLockedValueBox<(@Sendable (SIPEvent) -> Void)?>

    init(settings: ServerConfiguration.SIPSettings) {
        self.settings = settings
        let handler = NIOLockedValueBox<(@Sendable (SIPEvent) -> Void)?>(nil)
        eventHandler = handler
        stack = SIPStack(
            configuration: SIPConfiguration(
                host: settings.host, port: UInt16(clamping: settings.port), ringTimeoutSeconds: settings.ringTimeoutSeconds,
                credentials: settings.credentials, registrations: settings.registrations,
                accepts: { user in settings.key(forUser: user) != nil }),
            onEvent: { event in handler.withLockedValue { $0 }?(event) })
    }

    /// Starts the user agent; `handler` gets its events in order on the gateway's queue. Returns
    /// the bound port.
    func start(handler: @escaping @Sendable (SIPEvent) -> Void) throws(SIPError) -> Int {
        let queue = self.queue
        eventHandler.withLockedValue { $0 = { event in queue.async { handler(event) } } }
        let port = try stack.start()
        state.withLockedValue { $0.running = true }
        return Int(port)
    }

    /// Hangs up every dialog, unregisters, and stops (waiting up to `grace` for the far ends).
    func stop(grace: Double = 2) {
        state.withLockedValue { $0.running = false }
        stack.stop(graceSeconds: grace)
        queue.sync {}  // events already queued are handled before shutdown goes on
    }

    var isRunning: Bool { state.withLockedValue { $0.running } }
    var statistics: SIPStatistics { stack.statistics }
    var registrations: [SIPRegistrationStatus] { stack.registrationStatus }

    // MARK: dialogs

    func room(of dialog: SIPDialogID) -> RoomKey? { state.withLockedValue { $0.rooms[dialog] } }

    func adopt(_ dialog: SIPDialogID, room: RoomKey) { state.withLockedValue { $0.rooms[dialog] = room } }

    /// Dials `uri` for a room, offering `ports`.
    func dial(_ uri: SIPURI, room: RoomKey, ports: RTPPortReservation, displayName: String) throws(SIPError) -> SIPDialogID {
        guard isRunning else { throw .notRunning }
        let id = stack.newDialogID()
        adopt(id, room: room)
        do throws(SIPError) { try stack.dial(id, uri, localRTP: ports.local, displayName: displayName) } catch {
            forget(id)
            throw error
        }
        return id
    }

    func answer(_ dialog: SIPDialogID, localRTP: Endpoint) throws(SIPError) { try stack.answer(dialog, localRTP: localRTP) }

    func reject(_ dialog: SIPDialogID, status: UInt16, reason: String) {
        forget(dialog)
        try? stack.reject(dialog, status: status, reason: reason)
    }

    /// Our side hangs up (CANCEL, 480 or BYE as the dialog stands).
    func hangUp(_ dialog: SIPDialogID) {
        forget(dialog)
        stack.hangUp(dialog)
    }

    func forget(_ dialog: SIPDialogID) { _ = state.withLockedValue { $0.rooms.removeValue(forKey: dialog) } }
}

/// Runs the SIP user agent beside the server: starts it (logging `sip listening on udp:HOST:PORT`),
/// and on shutdown, after the calls have ended (their dialogs hung up), stops it once the far ends
/// have answered the BYEs and CANCELs.
struct SIPService: Service {
    let core: ServerCore
    let onListening: @Sendable (String) -> Void

    func run() async throws {
        // A service that returns would stop the whole group: this one always waits for shutdown.
        guard let sip = core.store.sip else { return try await gracefulShutdown() }
        let core = self.core
        do throws(SIPError) {
            let port = try sip.start { [weak core] event in core?.handle(event) }
            onListening("udp:\(sip.settings.host):\(port)")
        } catch {
            // The rest of the server still serves; `sip` calls are refused with sip_unavailable.
            core.logger.error("SIP unavailable: cannot listen on udp:\(sip.settings.host):\(sip.settings.port): \(error)")
            return try await gracefulShutdown()
        }
        try? await gracefulShutdown()
        core.store.endAll()
        sip.stop()
    }
}
