import ChamadeCluster
import ChamadeCore
import ChamadeMedia
import ChamadeWire
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// `/api/call…` and `/api/calls` (SPEC §3): create, read, list and end calls, and what a call can
/// do in its room (chat, say, stop-speaking, DTMF, typing, accept, refuse).
struct CallController {
    let core: ServerCore

    func addRoutes(to router: Router<APIRequestContext>) {
        router.post("/api/call", use: create)
        router.get("/api/calls", use: list)
        router.get("/api/call/:id", use: get)
        router.delete("/api/call/:id", use: end)
        router.post("/api/call/:id/chat", use: chat)
        router.post("/api/call/:id/say", use: say)
        router.post("/api/call/:id/stop-speaking", use: stopSpeaking)
        router.post("/api/call/:id/dtmf", use: dtmf)
        router.post("/api/call/:id/typing", use: typing)
        router.post("/api/call/:id/accept", use: accept)
        router.post("/api/call/:id/refuse", use: refuse)
        router.get("/api/call/:id/stream", use: streamWithoutUpgrade)
    }

    @Sendable func create(_ request: Request, context: APIRequestContext) async throws -> Response {
        var request = request
        let raw: ByteBuffer
        do { raw = try await request.collectBody(upTo: ServerConfiguration.maxBodyBytes) } catch { throw APIError.bodyTooLarge }
        let body = try decodeBody(
            CreateCallRequest.self, from: raw,
            fields: ["platform", "meeting_url", "agent_name", "transcripts", "stt_voice_config_id", "tts_voice_config_id"],
            codeForField: CreateCallRequest.code(forField:))
        guard let name = body.platform, let platform = Platform(rawValue: name) else {
            throw APIError.badRequest(
                "invalid_platform",
                "platform is required: one of \(Platform.allCases.map(\.rawValue).joined(separator: " "))")
        }
        guard let url = body.meetingURL, !url.isEmpty, url.utf8.count <= 2048 else {
            throw APIError.badRequest("invalid_meeting_url", "meeting_url is required (at most 2,048 bytes)")
        }
        for (id, preset) in [(body.sttVoiceConfigID, VoiceConfigs.stt), (body.ttsVoiceConfigID, VoiceConfigs.tts)] {
            guard let id else { continue }
            guard id == preset.id else {
                throw APIError.badRequest("unknown_voice_config", "no voice config \"\(id)\" of that kind: see GET /api/voice-configs")
            }
        }
        let agent = body.agentName.flatMap { $0.isEmpty ? nil : $0 } ?? "AI Agent"
        guard agent.unicodeScalars.count <= 256 else {
            throw APIError.badRequest("invalid_agent_name", "agent_name is at most 256 characters")
        }
        let create = { (onlyIfOpen: Bool) throws -> Response in
            try self.createHere(
                context: context, platform: platform, meetingURL: url, agentName: agent, transcripts: body.transcripts,
                onlyIfOpen: onlyIfOpen)
        }
        guard let cluster = core.cluster else { return try create(false) }
        // A room open here takes the call without asking Redis (so a node cut off from Redis keeps
        // its rooms); any other is placed (or found) in Redis first, and the call created on its node.
        if let response = try? create(true) { return response }
        let room = RoomKey(platform: platform, meetingURL: url).name
        let forwarded = request.headers[ServerCluster.forwardedHeader] != nil
        let owner: NodeInfo
        do throws(ClusterError) {
            owner = forwarded ? try await cluster.node.claimForSelf(room: room) : try await cluster.node.place(room: room)
        } catch {
            throw APIError.clusterUnavailable(error.description)
        }
        if owner.id == cluster.node.id { return try create(false) }
        guard !forwarded, !owner.url.isEmpty else {
            throw APIError.clusterUnavailable("the room moved to node \(owner.id); try again")
        }
        return try await cluster.forward(request, body: raw, to: owner.url, nodeID: owner.id)
    }

    /// Creates the call on this node (`onlyIfOpen`: only into a room open here).
    private func createHere(
        context: APIRequestContext, platform: Platform, meetingURL: String, agentName: String, transcripts: Bool?,
        onlyIfOpen: Bool
    ) throws -> Response {
        let call = try core.store.create(
            apiKey: context.apiKey, platform: platform, meetingURL: meetingURL, agentName: agentName, transcripts: transcripts,
            onlyIfOpen: onlyIfOpen)
        return try Self.json(call.object(baseURL: core.baseURL), status: .ok)
    }

    /// The key's calls not ended; in a cluster, those of every live node (a node that does not
    /// answer in 5 s is left out).
    @Sendable func list(_ request: Request, context: APIRequestContext) async throws -> Response {
        let base = core.baseURL
        let local = CallList(calls: core.store.liveCalls(apiKey: context.apiKey).map { $0.object(baseURL: base) })
        guard let cluster = core.cluster, request.headers[ServerCluster.forwardedHeader] == nil else {
            return try Self.json(local, status: .ok)
        }
        var calls = try (JSONSerialization.jsonObject(with: JSONEncoder().encode(local)) as? [String: Any])?["calls"] as? [Any] ?? []
        for data in await cluster.gather(path: "/api/calls", apiKey: context.apiKey) {
            calls += (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["calls"] as? [Any] ?? []
        }
        calls.sort { (($0 as? [String: Any])?["created_at"] as? String ?? "") < (($1 as? [String: Any])?["created_at"] as? String ?? "") }
        let data = try JSONSerialization.data(withJSONObject: ["calls": calls], options: [.withoutEscapingSlashes])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status) throws(APIError) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { throw APIError(.internalServerError, "internal", "encoding failed") }
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    @Sendable func get(_ request: Request, context: APIRequestContext) async throws -> CallObject {
        let call = try self.call(context)
        var since = 0
        if let s = request.uri.queryParameters.get("since") {
            guard let n = Int(s), n >= 0 else { throw APIError.badRequest("invalid_since", "since must be a whole number ≥ 0") }
            since = n
        }
        return call.object(baseURL: core.baseURL, since: since)
    }

    @Sendable func end(_ request: Request, context: APIRequestContext) async throws -> CallObject {
        let call = try self.call(context)
        try core.store.end(call)
        return call.object(baseURL: core.baseURL)
    }

    @Sendable func chat(_ request: Request, context: APIRequestContext) async throws -> OK {
        let call = try liveCall(context)
        let body = try await decodeBody(
            ChatRequest.self, from: request, context: context, fields: ["text", "sender_name"], codeForField: ChatRequest.code)
        guard let text = body.text, WireLimits.isValidText(text) else {
            throw APIError.badRequest("invalid_text", "text must be 1 to 10,000 characters")
        }
        let sender = body.senderName.flatMap { $0.isEmpty ? nil : $0 } ?? call.agentName
        core.store.tellOthers(of: call, ServerMessage.Chat(sender: sender, text: text))
        return OK()
    }

    @Sendable func say(_ request: Request, context: APIRequestContext) async throws -> Queued {
        let call = try liveCall(context)
        let body = try await decodeBody(
            SayRequest.self, from: request, context: context, fields: ["text"], codeForField: SayRequest.code)
        guard let text = body.text, WireLimits.isValidText(text) else {
            throw APIError.badRequest("invalid_text", "text must be 1 to 10,000 characters")
        }
        return Queued(queuedMs: try await core.speech.say(text, on: call))
    }

    @Sendable func stopSpeaking(_ request: Request, context: APIRequestContext) async throws -> StopSpeakingResponse {
        let call = try liveCall(context)
        let (dropped, spoken) = await core.stopSpeaking(call)
        return StopSpeakingResponse(droppedMs: dropped, spokenText: spoken)
    }

    @Sendable func dtmf(_ request: Request, context: APIRequestContext) async throws -> Queued {
        let call = try liveCall(context)
        let body = try await decodeBody(
            DTMFRequest.self, from: request, context: context, fields: ["digits"], codeForField: DTMFRequest.code)
        guard let digits = body.digits else {
            throw APIError.badRequest("invalid_dtmf", "digits must be 1 to 64 of 0-9 * # A-D")
        }
        return try Queued(queuedMs: DTMF.send(digits, on: call))
    }

    @Sendable func typing(_ request: Request, context: APIRequestContext) async throws -> OK {
        let call = try liveCall(context)
        core.store.tellOthers(of: call, ServerMessage.Typing(sender: call.agentName))
        return OK()
    }

    @Sendable func accept(_ request: Request, context: APIRequestContext) async throws -> CallObject {
        let call = try call(context)
        try core.store.accept(call)
        return call.object(baseURL: core.baseURL)
    }

    @Sendable func refuse(_ request: Request, context: APIRequestContext) async throws -> CallObject {
        let call = try call(context)
        try core.store.refuse(call)
        return call.object(baseURL: core.baseURL)
    }

    @Sendable func streamWithoutUpgrade(_ request: Request, context: APIRequestContext) async throws -> Response {
        _ = try call(context)
        throw APIError.badRequest("websocket_required", "open this URL as a WebSocket")
    }

    // MARK: helpers

    /// Only inbound calls ring, and this server has no inbound legs yet: whatever the call's state,
    /// it is not ringing.

    private func call(_ context: APIRequestContext) throws -> Call {
        try core.store.call(context.parameters.get("id") ?? "", apiKey: context.apiKey)
    }

    private func liveCall(_ context: APIRequestContext) throws -> Call {
        let call = try self.call(context)
        guard !call.state.isFinal else { throw APIError.callEnded }
        return call
    }
}

/// DTMF digits as the contract takes them (SPEC §6).
enum DTMF {
    /// Queues `digits` on the call's leg; returns how long everything queued takes to send (ms).
    static func send(_ digits: String, on call: Call) throws(APIError) -> Int {
        guard WireLimits.isValidDTMF(digits) else { throw APIError.badRequest("invalid_dtmf", "digits must be 1 to 64 of 0-9 * # A-D") }
        guard let leg = call.leg else {
            throw APIError.conflict("no_leg", "this call's room has no platform leg to send DTMF on")
        }
        do throws(RTPLegError) {
            return try leg.sendDigits(digits)
        } catch {
            guard case .invalidDigits(let why) = error else {
                throw APIError.conflict("no_leg", "this call's room has no platform leg any more")
            }
            if case .queueFull(let queued) = why {
                throw APIError.conflict("dtmf_busy", "\(queued) digits are already waiting; send more once they have gone")
            }
            throw APIError.badRequest("invalid_dtmf", "digits must be 1 to 64 of 0-9 * # A-D")
        }
    }
}
