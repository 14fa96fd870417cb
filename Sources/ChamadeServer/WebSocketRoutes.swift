import ChamadeCluster
import ChamadeCore
import ChamadeEngine
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes
import NIOWebSocket
import Synchronization

/// The two WebSocket routes: a call's stream (SPEC §4) and a key's account events (SPEC §3).
/// Every refusal (401, 404, 409) is decided before the upgrade and answered with the contract's
/// JSON body by `UpgradeRejection`.
struct WebSocketRoutes: Sendable {
    let core: ServerCore

    func router() -> Router<StreamRequestContext> {
        let router = Router(context: StreamRequestContext.self)
        let core = self.core
        router.ws("/api/call/:id/stream") { request, context in
            switch core.admitStream(request.head, id: context.parameters.get("id") ?? "", channel: context.channel) {
            case .success: return .upgrade([:])
            case .failure(let refusal):
                UpgradeRejection.record(refusal, for: context.channel)
                return .dontUpgrade
            }
        } onUpgrade: { inbound, outbound, context in
            await core.runStream(
                head: context.request.head, id: context.requestContext.parameters.get("id") ?? "",
                channel: context.requestContext.channel, inbound: inbound, outbound: outbound)
        }
        router.ws("/api/events") { request, context in
            guard let key = core.keys.match(APIKeys.presented(in: request.head, allowQuery: true)) else {
                UpgradeRejection.record(.unauthorized, for: context.channel)
                return .dontUpgrade
            }
            core.subscribeEvents(apiKey: key, channel: context.channel)
            // Only a cluster node waits (for Redis to confirm the key's channel): a node of its own
            // decides the upgrade without suspending, as before.
            if core.cluster != nil { await core.events.heardAcrossNodes(apiKey: key) }
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            await core.runEvents(channel: context.requestContext.channel, inbound: inbound, outbound: outbound)
        }
        // Any other path: 404 with the JSON body, like the API's unknown paths. The router's trie does
        // not fall back to a root `**` from inside `/api` or a call, so each level has its own.
        for pattern in ["**", "/api/**", "/api/call/:id/**"] {
            router.ws(RouterPath(pattern)) { request, context in
                UpgradeRejection.record(.notFound("no WebSocket at \(request.uri.path)"), for: context.channel)
                return .dontUpgrade
            } onUpgrade: { _, _, _ in }
        }
        return router
    }
}

extension ServerCore {
    /// Admits a stream of call `id`, or says why not. An admitted stream holds one of the call's
    /// `maxStreamsPerCall` places until its connection closes (whether or not the upgrade completes).
    func admitStream(_ head: HTTPRequest, id: String, channel: any Channel) -> Result<Call, APIError> {
        guard let key = keys.match(APIKeys.presented(in: head, allowQuery: true)) else { return .failure(.unauthorized) }
        let call: Call
        do { call = try store.call(id, apiKey: key) } catch {
            // A call of another cluster node: its stream is on that node, where text_ws_url points.
            if let cluster, let node = ClusterNode.node(ofCall: id), node != cluster.node.id {
                return .failure(.notFound("call \(id) is on node \(node): open its text_ws_url"))
            }
            return .failure(error)
        }
        let limit = configuration.maxStreamsPerCall
        let refusal: APIError? = call.withLock { m in
            guard !m.state.isFinal else { return .callEnded }
            guard m.streams < limit else {
                return .conflict("too_many_streams", "this call already has \(limit) WebSockets open")
            }
            m.streams += 1
            return nil
        }
        if let refusal { return .failure(refusal) }
        channel.closeFuture.whenComplete { _ in call.withLock { $0.streams -= 1 } }
        return .success(call)
    }

    /// Runs an admitted call stream until it closes.
    func runStream(
        head: HTTPRequest, id: String, channel: any Channel, inbound: WebSocketInboundStream,
        outbound: WebSocketOutboundWriter
    ) async {
        guard let key = keys.match(APIKeys.presented(in: head, allowQuery: true)),
            let call = try? store.call(id, apiKey: key)
        else { return }
        let outbox = Outbox(channel: channel, counters: counters)
        guard let participant = call.participant else {
            try? await outbound.write(.text(WireJSON.encode(ServerMessage.State(state: .ended))))
            return
        }
        outbox.sizeBuffers(forFrameBytes: participant.sampleRate.blockByteCount)
        try? await channel.pipeline.addHandler(WritabilityHandler(outbox: outbox), position: .first).get()
        let session = Session(call: call, participant: participant, outbox: outbox, store: store, speech: speech)
        // The opening state is queued under the call's lock, as the session joins: a change
        // broadcast to the call's sessions (connecting → active) cannot overtake it.
        let joined: Bool = call.withLock { m in
            guard !m.state.isFinal else { return false }
            m.sessions[ObjectIdentifier(session)] = session
            session.send(ServerMessage.State(state: m.state))
            return true
        }
        guard joined else {
            try? await outbound.write(.text(WireJSON.encode(ServerMessage.State(state: .ended))))
            return
        }
        await serve(outbox: outbox, channel: channel, inbound: inbound, outbound: outbound) { message in
            switch message {
            case .binary(let buffer): session.handle(binary: buffer)
            case .text(let text): session.handle(text: text)
            }
        }
        let receiving: Bool? = call.withLock { m in
            m.sessions.removeValue(forKey: ObjectIdentifier(session))
            return m.state.isFinal ? nil : call.refreshReceivers(&m)
        }
        if let receiving { participant.setReceiving(receiving) }
        session.closed()
    }

    /// Runs an account events socket until it closes. What the client sends is ignored.
    /// Subscribes a key's events socket when its upgrade is decided (before the 101): events from
    /// then on wait for the socket. The subscription ends when the connection closes.
    func subscribeEvents(apiKey: String, channel: any Channel) {
        let subscription = events.subscribe(apiKey: apiKey)
        let id = ObjectIdentifier(channel)
        pendingSubscriptions.withLockedValue { $0[id] = subscription }
        channel.closeFuture.whenComplete { [events, pendingSubscriptions] _ in
            events.unsubscribe(apiKey: apiKey, subscription)
            pendingSubscriptions.withLockedValue { _ = $0.removeValue(forKey: id) }
        }
    }

    func runEvents(channel: any Channel, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        guard let subscription = pendingSubscriptions.withLockedValue({ $0.removeValue(forKey: ObjectIdentifier(channel)) })
        else { return }
        let outbox = Outbox(channel: channel, counters: counters)
        try? await channel.pipeline.addHandler(WritabilityHandler(outbox: outbox), position: .first).get()
        subscription.attach(outbox)
        await serve(outbox: outbox, channel: channel, inbound: inbound, outbound: outbound) { _ in }
    }


    /// Reads messages until the connection ends, while a second task closes the socket when its
    /// outbox asks (call ended, or a client that does not read its replies). A close that cannot
    /// be written (the client reads nothing) is cut short after a few seconds.
    private func serve(
        outbox: Outbox, channel: any Channel, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter,
        _ handle: (WebSocketMessage) -> Void
    ) async {
        // ORDERING: relaxed; a gauge.
        counters.openSockets.wrappingAdd(1, ordering: .relaxed)
        defer { counters.openSockets.wrappingSubtract(1, ordering: .relaxed) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await code in outbox.closeRequested {
                    channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
                    try? await outbound.close(code, reason: code == .policyViolation ? "unread replies over 1 MB" : nil)
                    return
                }
            }
            do {
                for try await message in inbound.messages(maxSize: ServerConfiguration.maxMessageBytes) {
                    handle(message)
                }
            } catch {}
            outbox.finish()
            await group.waitForAll()
        }
    }
}

/// The WebSocket router's request context: Hummingbird's basic one, plus the channel, so a refusal
/// can be recorded against it and an admitted stream can watch it close.
///
/// The handler reference is let go when the channel closes. hummingbird-websocket's `router.ws`
/// stores the context itself in that reference (`WebSocketHandlerReference.Value(context:handler:)`)
/// and never clears it, so a context holding its reference directly is a cycle (reference's box →
/// context → reference's box) that kept every upgraded connection's context, and through `channel`
/// the whole closed channel, alive for good: about 5 KB per WebSocket. The box is internal to
/// hummingbird-websocket, so the cycle is cut here, on our side of it.
struct StreamRequestContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel
    private let webSocketSlot: NIOLockedValueBox<WebSocketHandlerReference<StreamRequestContext>?>

    /// The upgrade's handler reference while the channel is open (a fresh, empty one after).
    var webSocket: WebSocketHandlerReference<StreamRequestContext> { webSocketSlot.withLockedValue { $0 } ?? .init() }

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
        let slot = NIOLockedValueBox<WebSocketHandlerReference<StreamRequestContext>?>(.init())
        webSocketSlot = slot
        channel.closeFuture.whenComplete { _ in slot.withLockedValue { $0 = nil } }
    }
}

/// Answers a refused WebSocket upgrade with the contract's status and JSON error before any upgrade
/// happens.
///
/// Hummingbird answers every refused upgrade with an empty 400, and the refused request never
/// reaches the HTTP/1 pipeline it falls back to. So `shouldUpgrade` records why it refused, keyed
/// by the channel, and this handler (in that fallback pipeline) swaps the empty 400 for the answer.
final class UpgradeRejection: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    // SAFETY: used only on its channel's event loop.
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var swallowing = false

    /// Refusals decided by `shouldUpgrade`, waiting for their channel's empty 400.
    static let refusals = Mutex<[ObjectIdentifier: APIError]>([:])

    static func record(_ error: APIError, for channel: any Channel) {
        refusals.withLock { $0[ObjectIdentifier(channel)] = error }
    }

    func channelInactive(context: ChannelHandlerContext) {
        _ = Self.refusals.withLock { $0.removeValue(forKey: ObjectIdentifier(context.channel)) }
        context.fireChannelInactive()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data)
        if case .head(let head) = part, head.status == .badRequest, head.headerFields[.contentLength] == "0" {
            // Without a recorded refusal, the empty 400 is Hummingbird's answer to a request it could
            // not read (a handshake without its key or version): it gets the JSON body too.
            let error =
                Self.refusals.withLock({ $0.removeValue(forKey: ObjectIdentifier(context.channel)) })
                ?? .badRequest("invalid_request", "the request could not be read as HTTP/1.1 or as a WebSocket handshake")
            swallowing = true
            let body = ByteBuffer(string: error.body)
            let replaced = HTTPResponse(
                status: error.status,
                headerFields: [.contentType: "application/json", .contentLength: "\(body.readableBytes)", .connection: "close"])
            context.write(wrapOutboundOut(.head(replaced)), promise: nil)
            context.write(wrapOutboundOut(.body(body)), promise: promise)
            return
        }
        if swallowing, case .body = part {
            promise?.succeed()
            return
        }
        if case .end = part { swallowing = false }
        context.write(data, promise: promise)
    }
}
