public import ChamadeCore
public import ChamadeEngine
import Foundation
import HTTPTypes
public import Hummingbird
import HummingbirdWebSocket
public import Logging
import NIOCore
import NIOHTTPTypes
public import ServiceLifecycle
import UnixSignals

/// `chamade serve`: the HTTP call API (SPEC §3) and the WebSocket session layer (SPEC §4) over the
/// engine. Network threads hand audio to the engine through its rings and take blocks from them;
/// a delivery thread woken by the engine's tick signal moves fresh blocks to the sessions.
public final class ChamadeServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var apiKeys: [String]
        public var engine: Engine.Configuration
        public var roomCapacity: Int

        public init(
            host: String = "127.0.0.1", port: Int = 8787, apiKeys: [String], engine: Engine.Configuration = .init(),
            roomCapacity: Int = 256
        ) {
            self.host = host
            self.port = port
            self.apiKeys = apiKeys
            self.engine = engine
            self.roomCapacity = roomCapacity
        }
    }

    public let configuration: Configuration
    public let registry: Registry
    let logger: Logger
    /// Largest HTTP request body accepted (413 beyond).
    static let maxBodyBytes = 1 << 20

    public init(configuration: Configuration, logger: Logger = Logger(label: "chamade")) {
        self.configuration = configuration
        self.logger = logger
        self.registry = Registry(
            apiKeys: Set(configuration.apiKeys), engineConfiguration: configuration.engine,
            roomCapacity: configuration.roomCapacity, logger: logger)
    }

    public var engine: Engine { registry.engine }

    /// Runs until SIGINT or SIGTERM, which end every call cleanly (`call_state` ended, close frame).
    /// `onListening` is called once the socket accepts connections, with the bound port.
    public func run(onListening: @escaping @Sendable (Int) -> Void) async throws {
        engine.start()
        // Stops the clocks however the service group ends: signal, cancellation or error.
        defer { engine.shutdown() }
        let delivery = DeliveryService(registry: registry)
        let app = Application(
            router: makeRouter(),
            server: .http1WebSocketUpgrade(
                webSocketRouter: makeWebSocketRouter(),
                configuration: .init(
                    http1: .init(additionalChannelHandlers: [UpgradeRejection(registry: self.registry)]),
                    // The protocol-level cap sits above the contract's 1 MiB so a larger message can be
                    // refused with `frame_too_large` on a connection that stays open.
                    ws: .init(maxFrameSize: 16 << 20, autoPing: .enabled(timePeriod: .seconds(30))))),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "chamade"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        let calls = CallsService(registry: registry)
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: app), .init(service: delivery),
                    .init(service: calls),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    // MARK: HTTP API

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        let registry = self.registry

        router.post("/api/call") { request, context in
            await respond {
                let key = try Self.authenticate(request, registry)
                let body = try await Self.body(request, context: context)
                guard let name = body["platform"] as? String, let platform = Platform(rawValue: name) else {
                    throw APIError.badRequest(
                        "invalid_platform",
                        "platform is required: one of \(Platform.allCases.map(\.rawValue).joined(separator: " "))")
                }
                guard let url = body["meeting_url"] as? String, !url.isEmpty else {
                    throw APIError.badRequest("invalid_meeting_url", "meeting_url is required")
                }
                let agent = (body["agent_name"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? "AI Agent"
                let call = try registry.createCall(apiKey: key, platform: platform, meetingURL: url, agentName: agent)
                return Self.json(call.object(baseURL: Self.baseURL(request, self.configuration)))
            }
        }
        router.get("/api/call/:id") { request, context in
            await respond {
                let call = try Self.call(request, context, registry)
                var since = 0
                if let s = request.uri.queryParameters.get("since") {
                    guard let n = Int(s), n >= 0 else { throw APIError.badRequest("invalid_since", "since must be a whole number ≥ 0") }
                    since = n
                }
                let object = registry.lock.withLock { call.object(baseURL: Self.baseURL(request, self.configuration), since: since) }
                return Self.json(object)
            }
        }
        router.delete("/api/call/:id") { request, context in
            await respond {
                let call = try Self.call(request, context, registry)
                try registry.end(call)
                return Self.json(registry.lock.withLock { call.object(baseURL: Self.baseURL(request, self.configuration)) })
            }
        }
        router.get("/api/calls") { request, _ in
            await respond {
                let key = try Self.authenticate(request, registry)
                let base = Self.baseURL(request, self.configuration)
                let calls = registry.activeCalls(apiKey: key)
                return Self.json(["calls": registry.lock.withLock { calls.map { $0.object(baseURL: base) } }])
            }
        }
        router.post("/api/call/:id/chat") { request, context in
            await respond {
                let call = try Self.liveCall(request, context, registry)
                let body = try await Self.body(request, context: context)
                guard let text = body["text"] as? String, (1...10_000).contains(text.count) else {
                    throw APIError.badRequest("invalid_text", "text must be 1 to 10,000 characters")
                }
                let sender = (body["sender_name"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? call.agentName
                registry.broadcast(
                    JSON.encode(["type": "call_chat", "sender": sender, "text": text]), to: registry.others(of: call))
                return Self.json(["ok": true])
            }
        }
        router.post("/api/call/:id/say") { request, context in
            await respond {
                _ = try Self.call(request, context, registry)
                throw APIError.badRequest(
                    "tts_not_configured", "no hosted TTS in this engine: synthesize locally and send PCM on the WebSocket")
            }
        }
        router.post("/api/call/:id/stop-speaking") { request, context in
            await respond {
                let call = try Self.liveCall(request, context, registry)
                let dropped = await registry.stopSpeaking(call)
                return Self.json(["dropped_ms": dropped])
            }
        }
        router.post("/api/call/:id/typing") { request, context in
            await respond {
                let call = try Self.liveCall(request, context, registry)
                registry.broadcast(JSON.encode(["type": "call_typing", "sender": call.agentName]), to: registry.others(of: call))
                return Self.json(["ok": true])
            }
        }
        for action in ["accept", "refuse"] {
            router.post("/api/call/:id/\(action)") { request, context in
                await respond {
                    let call = try Self.call(request, context, registry)
                    let state = registry.lock.withLock { call.state }
                    guard state == .ringing else {
                        throw APIError.conflict("not_ringing", "only a ringing inbound call can be \(action == "accept" ? "accepted" : "refused"); this one is \(state.rawValue)")
                    }
                    // No inbound legs exist in this engine yet, so no call is ever ringing.
                    throw APIError.conflict("not_ringing", "the call is not ringing")
                }
            }
        }
        router.get("/api/call/:id/stream") { request, context in
            // Reached only without a WebSocket upgrade (refused upgrades are answered earlier).
            await respond {
                _ = try Self.liveCall(request, context, registry, keyFromQuery: true)
                throw APIError.badRequest("websocket_required", "open this URL as a WebSocket")
            }
        }
        router.get("/api/account") { request, _ in
            await respond {
                let key = try Self.authenticate(request, registry)
                var platforms: [String: Any] = [:]
                for p in Platform.allCases {
                    platforms[p.rawValue] = [
                        "status": "available", "native_sample_rate": p.nativeRate.hertz, "capabilities": p.capabilities,
                    ] as [String: Any]
                }
                return Self.json([
                    "plan": "self-hosted", "platforms": platforms,
                    "concurrent_calls": registry.activeCalls(apiKey: key).count,
                    "features": ["audio_in": "ready", "audio_out": "ready", "text_chat": "ready", "hosted_stt": "unavailable", "hosted_tts": "unavailable"],
                ])
            }
        }
        router.get("/healthz") { _, _ in
            let ok = registry.engine.clocksRunning
            return Self.json(["status": ok ? "ok" : "clock_stopped"], status: ok ? 200 : 503)
        }
        router.get("/metrics") { request, _ in
            await respond {
                _ = try Self.authenticate(request, registry)
                var response = Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"])
                response.body = .init(byteBuffer: ByteBuffer(string: registry.metrics.text(registry)))
                return response
            }
        }
        return router
    }

    // MARK: WebSocket

    func makeWebSocketRouter() -> Router<StreamRequestContext> {
        let router = Router(context: StreamRequestContext.self)
        let registry = self.registry
        router.ws("/api/call/:id/stream") { request, context in
            // Refusals (401, 404, 409) are written by `UpgradeRejection` in place of Hummingbird's empty 400.
            guard let refusal = UpgradeRejection.rejection(for: request.head, registry: registry) else { return .upgrade([:]) }
            UpgradeRejection.record(refusal, for: context.channel)
            return .dontUpgrade
        } onUpgrade: { inbound, outbound, context in
            let key = Self.key(of: context.request.head)
            guard let id = context.request.uri.path.split(separator: "/").dropLast().last.map(String.init),
                let call = try? registry.call(id, apiKey: key ?? "")
            else { return }
            let session = Session(call: call, registry: registry, channel: context.requestContext.channel)
            guard registry.attach(session, to: call) else {
                try? await outbound.write(.text(JSON.encode(["type": "call_state", "state": "ended"])))
                return
            }
            session.boundOutboundBuffer()
            session.send(["type": "call_state", "state": "active"])
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await session.runWriter(outbound) }
                do {
                    for try await message in inbound.messages(maxSize: 16 << 20) {
                        switch message {
                        case .binary(let buffer): session.handle(binary: buffer)
                        case .text(let text): session.handle(text: text)
                        }
                    }
                } catch {}
                session.finish()
                await group.waitForAll()
            }
            registry.detach(session, from: call)
        }
        return router
    }

    // MARK: helpers

    static let apiKeyHeader = HTTPField.Name("X-API-Key")!

    static func key(of head: HTTPRequest) -> String? {
        if let k = head.headerFields[apiKeyHeader] { return k }
        let items = URLComponents(string: head.path ?? "")?.queryItems ?? []
        return items.first { $0.name == "api_key" }?.value
    }

    static func authenticate(_ request: Request, _ registry: Registry) throws(APIError) -> String {
        guard let key = request.headers[apiKeyHeader], registry.isValid(key: key) else { throw .unauthorized }
        return key
    }

    static func call(_ request: Request, _ context: BasicRequestContext, _ registry: Registry, keyFromQuery: Bool = false)
        throws(APIError) -> Call
    {
        let key = keyFromQuery ? (Self.key(of: request.head) ?? "") : try authenticate(request, registry)
        guard registry.isValid(key: key) else { throw .unauthorized }
        guard let id = context.parameters.get("id") else { throw .notFound() }
        return try registry.call(id, apiKey: key)
    }

    static func liveCall(_ request: Request, _ context: BasicRequestContext, _ registry: Registry, keyFromQuery: Bool = false)
        throws(APIError) -> Call
    {
        let call = try call(request, context, registry, keyFromQuery: keyFromQuery)
        guard registry.lock.withLock({ call.state }) != .ended else { throw .conflict("call_ended", "the call has ended") }
        return call
    }

    static func body(_ request: Request, context: BasicRequestContext) async throws(APIError) -> [String: Any] {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: maxBodyBytes)
        } catch {
            throw .tooLarge
        }
        if buffer.readableBytes == 0 { return [:] }
        guard let object = JSON.object(Data(buffer.readableBytesView)) else {
            throw .badRequest("invalid_json", "the body must be a JSON object")
        }
        return object
    }

    static func baseURL(_ request: Request, _ configuration: Configuration) -> String {
        "http://\(request.head.authority ?? "\(configuration.host):\(configuration.port)")"
    }

    static func json(_ object: [String: Any], status: Int = 200) -> Response {
        var response = Response(status: .init(code: status), headers: [.contentType: "application/json"])
        response.body = .init(byteBuffer: ByteBuffer(string: JSON.encode(object)))
        return response
    }
}

/// Runs `body`; an `APIError` becomes its JSON answer, the key check included.
func respond(_ body: () async throws -> Response) async -> Response {
    do {
        return try await body()
    } catch let e as APIError {
        var response = Response(status: .init(code: e.status), headers: [.contentType: "application/json"])
        response.body = .init(byteBuffer: ByteBuffer(string: e.json))
        return response
    } catch {
        var response = Response(status: .internalServerError, headers: [.contentType: "application/json"])
        response.body = .init(byteBuffer: ByteBuffer(string: APIError(status: 500, code: "internal", message: "\(error)").json))
        return response
    }
}

/// The WebSocket router's request context: Hummingbird's basic one, plus the channel, so a refusal
/// can be recorded against it.
struct StreamRequestContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<StreamRequestContext>
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        channel = source.channel
    }
}
