public import ChamadeEngine
import ChamadeSpeech
import Foundation
import HTTPTypes
public import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
public import Logging
import NIOCore
import NIOSSL
public import ServiceLifecycle
import UnixSignals

/// The HTTP call API (SPEC §3) and the WebSocket session layer (SPEC §4) over an engine.
///
/// A gateway embeds it with an `Engine` of its own: `makeApplication` gives the Hummingbird
/// application and `makeServices` the services that must run beside it (delivery, housekeeping,
/// the clean shutdown of calls), or `run` runs them all until SIGINT/SIGTERM. The rest of the
/// public API is what a gateway does to calls from its side: create and end them, add transcript
/// lines, report a lost platform leg.
public final class ChamadeServer: Sendable {
    public let engine: Engine
    public let configuration: ServerConfiguration
    let core: ServerCore
    private let observer: UInt64

    public init(engine: Engine, configuration: ServerConfiguration, logger: Logger = Logger(label: "chamade")) {
        Memory.configure()
        self.engine = engine
        self.configuration = configuration
        let core = ServerCore(engine: engine, configuration: configuration, logger: logger)
        self.core = core
        self.observer = engine.addEventObserver { core.route($0) }
    }

    deinit { engine.removeEventObserver(observer) }

    // MARK: running

    /// Starts the engine's clocks and runs the application and its services until SIGINT or SIGTERM,
    /// which end every call cleanly (`call_state` ended, close frame) before the server stops.
    /// `onListening` is called once the socket accepts connections, with the bound port.
    /// `onSIPListening` gets `udp:HOST:PORT` once the SIP user agent listens.
    public func run(
        onListening: @escaping @Sendable (Int) -> Void, onSIPListening: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws {
        engine.start()
        defer { engine.shutdown() }
        let app = try makeApplication(onListening: onListening)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: app)] + makeServices(onSIPListening: onSIPListening).map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint], logger: core.logger))
        try await group.run()
    }

    /// The services to run beside the application: delivery of audio to the sockets, housekeeping
    /// (forgetting ended calls, giving memory back), the SIP user agent (stopped after the calls, so
    /// their BYEs and CANCELs are answered first), and, last so it shuts down first, the clean end
    /// of every call on shutdown.
    public func makeServices(onSIPListening: @escaping @Sendable (String) -> Void = { _ in }) -> [any Service] {
        [
            Delivery(engine: engine, store: core.store), Housekeeping(core: core),
            SIPService(core: core, onListening: onSIPListening), CallsShutdown(store: core.store, cluster: core.cluster),
        ]
    }

    /// The Hummingbird application: the API router, the WebSocket routes, TLS when configured, the
    /// 16 KiB head limit and the idle timeout.
    public func makeApplication(onListening: @escaping @Sendable (Int) -> Void = { _ in }) throws -> some ApplicationProtocol {
        let core = self.core
        let webSocketResponder = WebSocketRoutes(core: core).router().buildResponder()
        let upgrade = HTTP1WebSocketUpgradeChannel.Configuration(
            http1: .init(
                additionalChannelHandlers: [UpgradeRejection(), CloseAfterResponse()],
                idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds))),
            // The protocol-level cap sits above the contract's 1 MiB so a larger message can be
            // refused with `frame_too_large` on a connection that stays open.
            ws: .init(maxFrameSize: ServerConfiguration.maxMessageBytes, autoPing: .enabled(timePeriod: .seconds(30))))
        let tls = try configuration.tls.map { files in
            try TLSConfiguration.makeServerConfiguration(
                certificateChain: NIOSSLCertificate.fromPEMFile(files.certificatePath).map { .certificate($0) },
                privateKey: .privateKey(NIOSSLPrivateKey(file: files.privateKeyPath, format: .pem)))
        }
        let server = HTTPServerBuilder { responder in
            let base = GuardedChannel(
                base: HTTP1WebSocketUpgradeChannel(
                    responder: responder, webSocketResponder: webSocketResponder, configuration: upgrade))
            if let tls { return try TLSChannel(base, tlsConfiguration: tls) }
            return base
        }
        return Application(
            router: makeRouter(), server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "chamade"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                core.listening(port: port)
                onListening(port)
            },
            logger: core.logger)
    }

    /// The HTTP API router alone (for in-process tests with HummingbirdTesting).
    public func makeRouter() -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        router.add(middleware: APIErrorMiddleware())
        router.add(middleware: AuthenticationMiddleware(keys: core.keys))
        if let cluster = core.cluster { router.add(middleware: ClusterForwarding(cluster: cluster)) }
        CallController(core: core).addRoutes(to: router)
        AccountController(core: core).addRoutes(to: router)
        OperationsController(core: core).addRoutes(to: router)
        return router
    }

    // MARK: the gateway's side

    /// Creates a call of `apiKey` as `POST /api/call` would.
    public func createCall(apiKey: String, platform: Platform, meetingURL: String, agentName: String = "AI Agent")
        throws(APIError) -> CallObject
    {
        guard let key = core.keys.match(apiKey) else { throw APIError.unauthorized }
        return try core.store.create(apiKey: key, platform: platform, meetingURL: meetingURL, agentName: agentName)
            .object(baseURL: core.baseURL)
    }

    /// Ends call `id` as `DELETE /api/call/{id}` would.
    public func endCall(id: String, apiKey: String) throws(APIError) {
        try core.store.end(core.store.call(id, apiKey: apiKey))
    }

    /// Appends a transcript line `[speaker] text` to every call in the room of `callID` and sends
    /// it to their sockets as `call_transcript`. Returns false if there is no such live call.
    @discardableResult
    public func addTranscript(callID: String, speaker: String, text: String) -> Bool {
        guard let call = core.store.anyCall(callID), !call.state.isFinal else { return false }
        core.store.addLine(in: call.roomKey, speaker: speaker, text: text, participantID: call.participantID, startMs: nil, endMs: nil)
        return true
    }

    /// Tells every call of the room of `callID` that the platform leg is gone (`bridge_disconnected`).
    public func reportBridgeDisconnected(callID: String) {
        guard let call = core.store.anyCall(callID) else { return }
        let message = WireJSON.encode(ServerMessage.bridgeDisconnected("Bridge connection lost."))
        for c in core.store.roomCalls(of: call) { c.broadcast(text: message) }
    }
}

/// On SIGINT/SIGTERM, ends every call cleanly (`call_state` ended, close frame) before the HTTP
/// server stops.
final class CallsShutdown: Service, Sendable {
    let store: CallStore
    let cluster: ServerCluster?
    init(store: CallStore, cluster: ServerCluster?) {
        self.store = store
        self.cluster = cluster
    }

    func run() async throws {
        try? await gracefulShutdown()
        store.endAll()
        // After the calls' ends went out: the node leaves, and no other node reports them again.
        await cluster?.stop()
        store.media.shutdown()
        store.transcriber?.stop()
        // Give the sockets a moment to send `ended` and their close frames.
        try? await Task.sleep(for: .milliseconds(300))
    }
}

/// Once a second: forgets ended calls past their retention, and gives freed memory back to the
/// system once no call is live (SPEC §9).
final class Housekeeping: Service, Sendable {
    let core: ServerCore
    init(core: ServerCore) { self.core = core }

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            var trimmedIdle = false
            while true {
                try await Task.sleep(for: .seconds(1))
                self.core.store.forgetExpired()
                let idle = self.core.store.liveCallCount == 0
                if idle && !trimmedIdle { Memory.trim() }
                trimmedIdle = idle
            }
        }
    }
}
