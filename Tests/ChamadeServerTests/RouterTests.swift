import ChamadeEngine
import ChamadeServer
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Every route of SPEC §3 in process, through Hummingbird's router test framework (no sockets):
/// each success and each error, with the contract's statuses and JSON bodies.
@Suite("HTTP API routes")
struct RouterTests {
    static let key = "chmd_router_one"
    static let otherKey = "chmd_router_two"

    /// A server over a virtual-clock engine (nothing ticks unless the test ticks it).
    static func makeServer(_ configure: (inout ServerConfiguration) -> Void = { _ in }) -> ChamadeServer {
        var configuration = ServerConfiguration(port: 0, apiKeys: [key, otherKey])
        configure(&configuration)
        return ChamadeServer(engine: Engine(configuration: .init(clock: .virtual)), configuration: configuration)
    }

    static func withClient<T>(
        _ server: ChamadeServer = makeServer(), _ body: @Sendable (any TestClientProtocol) async throws -> T
    ) async throws -> T {
        try await Application(router: server.makeRouter()).test(.router, body)
    }

    static func headers(_ key: String? = RouterTests.key, bearer: Bool = false) -> HTTPFields {
        var h: HTTPFields = [.contentType: "application/json"]
        if let key {
            if bearer { h[.authorization] = "Bearer \(key)" } else { h[HTTPField.Name("X-API-Key")!] = key }
        }
        return h
    }

    /// The body as a JSON object (empty when it is not one, which the expectations then catch).
    static func json(_ response: TestResponse) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView))) as? [String: Any] ?? [:]
    }

    static func errorCode(_ response: TestResponse) -> String? {
        (json(response)["error"] as? [String: Any])?["code"] as? String
    }

    static func body(_ object: [String: Any]) -> ByteBuffer {
        ByteBuffer(bytes: try! JSONSerialization.data(withJSONObject: object))
    }

    static func create(
        _ client: any TestClientProtocol, platform: String = "discord", meeting: String = UUID().uuidString,
        key: String = RouterTests.key
    ) async throws -> [String: Any] {
        try await client.execute(
            uri: "/api/call", method: .post, headers: headers(key),
            body: body(["platform": platform, "meeting_url": meeting])
        ) { r in
            #expect(r.status == .ok)
            return json(r)
        }
    }

    @Test(arguments: [
        ("discord", 48000), ("meet", 48000), ("nctalk", 48000), ("slack", 48000), ("teams", 16000), ("zoom", 16000),
        ("telegram", 16000), ("whatsapp", 16000),
    ])
    func createCallAtTheNativeRate(platform: String, rate: Int) async throws {
        try await Self.withClient { client in
            let call = try await Self.create(client, platform: platform)
            #expect(call["state"] as? String == "active")
            #expect(call["platform"] as? String == platform)
            #expect(call["direction"] as? String == "outbound")
            #expect(call["caller"] as? String == "")
            #expect(call["ended_at"] is NSNull)
            let audio = try #require(call["audio"] as? [String: Any])
            #expect(audio["sample_rate"] as? Int == rate)
            #expect(audio["frame_bytes"] as? Int == rate / 50 * 2)
            let id = try #require(call["call_id"] as? String)
            // Built from the server's own address, never from the request's Host header.
            #expect(call["text_ws_url"] as? String == "ws://127.0.0.1:0/api/call/\(id)/stream")
        }
    }

    @Test(arguments: [
        (#"{"meeting_url":"x"}"#, 400, "invalid_platform"),
        (#"{"platform":"myspace","meeting_url":"x"}"#, 400, "invalid_platform"),
        (#"{"platform":7,"meeting_url":"x"}"#, 400, "invalid_platform"),
        (#"{"platform":"discord"}"#, 400, "invalid_meeting_url"),
        (#"{"platform":"discord","meeting_url":""}"#, 400, "invalid_meeting_url"),
        (#"{"platform":"discord","meeting_url":["x"]}"#, 400, "invalid_meeting_url"),
        (#"{not json"#, 400, "invalid_json"),
        (#"[1,2]"#, 400, "invalid_json"),
        (#"{"platform":"discord","meeting_url":"x","tts_voice_config_id":"nope"}"#, 400, "unknown_voice_config"),
        (#"{"platform":"sip","meeting_url":"sip:1@127.0.0.1"}"#, 400, "sip_unavailable"),
        (#"{"platform":"rtp","meeting_url":"rtp://127.0.0.1:4000"}"#, 400, "invalid_meeting_url"),
        (#"{"platform":"rtp","meeting_url":"https://zoom.example/1"}"#, 400, "invalid_meeting_url"),
    ])
    func createCallRefusals(body: String, status: Int, code: String) async throws {
        try await Self.withClient { client in
            try await client.execute(
                uri: "/api/call", method: .post, headers: Self.headers(), body: ByteBuffer(string: body)
            ) { r in
                #expect(r.status.code == status)
                #expect(Self.errorCode(r) == code)
            }
        }
    }

    @Test func unknownFieldsAreIgnoredAndATrailingSlashAccepted() async throws {
        try await Self.withClient { client in
            try await client.execute(
                uri: "/api/call/", method: .post, headers: Self.headers(),
                body: Self.body(["platform": "zoom", "meeting_url": "z", "transcripts": false, "zzz": [1]])
            ) { r in
                #expect(r.status == .ok)
                #expect((Self.json(r)["audio"] as? [String: Any])?["sample_rate"] as? Int == 16000)
            }
        }
    }

    @Test func bodyOverOneMebibyteIs413() async throws {
        try await Self.withClient { client in
            try await client.execute(
                uri: "/api/call", method: .post, headers: Self.headers(),
                body: ByteBuffer(repeating: UInt8(ascii: " "), count: (1 << 20) + 1)
            ) { r in
                #expect(r.status.code == 413)
                #expect(Self.errorCode(r) == "body_too_large")
            }
        }
    }

    @Test func keysAreCheckedOnEveryRouteButHealthAndOpenAPI() async throws {
        try await Self.withClient { client in
            let routes: [(HTTPRequest.Method, String)] = [
                (.post, "/api/call"), (.get, "/api/calls"), (.get, "/api/call/x"), (.delete, "/api/call/x"),
                (.post, "/api/call/x/chat"), (.get, "/api/account"), (.get, "/api/voice-configs"), (.get, "/metrics"),
            ]
            for (method, path) in routes {
                for key in [nil, "chmd_wrong", Self.key + "x", String(Self.key.dropLast())] {
                    try await client.execute(uri: path, method: method, headers: Self.headers(key)) { r in
                        #expect(r.status == .unauthorized, "\(method) \(path)")
                        #expect(Self.errorCode(r) == "unauthorized")
                    }
                }
            }
            try await client.execute(uri: "/api/calls", method: .get, headers: Self.headers(bearer: true)) { r in
                #expect(r.status == .ok)
            }
            try await client.execute(uri: "/openapi.json", method: .get) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/healthz", method: .get) { r in
                // The virtual clock is not running: the health check says so.
                #expect(r.status == .serviceUnavailable)
                #expect(Self.json(r)["status"] as? String == "clock_stopped")
            }
        }
    }

    @Test func getListEndAndIsolation() async throws {
        try await Self.withClient { client in
            let mine = try await Self.create(client)
            let theirs = try await Self.create(client, key: Self.otherKey)
            let id = try #require(mine["call_id"] as? String)
            let otherID = try #require(theirs["call_id"] as? String)
            try await client.execute(uri: "/api/call/\(id)?since=0", method: .get, headers: Self.headers()) { r in
                #expect(r.status == .ok)
                let o = Self.json(r)
                #expect(o["transcript"] as? [String] == [])
                #expect(o["transcript_length"] as? Int == 0)
            }
            for bad in ["-1", "x", "1.5"] {
                try await client.execute(uri: "/api/call/\(id)?since=\(bad)", method: .get, headers: Self.headers()) { r in
                    #expect(r.status == .badRequest)
                    #expect(Self.errorCode(r) == "invalid_since")
                }
            }
            for path in ["/api/call/\(otherID)", "/api/call/call_nope"] {
                try await client.execute(uri: path, method: .get, headers: Self.headers()) { r in
                    #expect(r.status == .notFound)
                    #expect(Self.errorCode(r) == "not_found")
                }
            }
            try await client.execute(uri: "/api/calls", method: .get, headers: Self.headers()) { r in
                let calls = try #require(Self.json(r)["calls"] as? [[String: Any]])
                #expect(calls.compactMap { $0["call_id"] as? String } == [id])
            }
            try await client.execute(uri: "/api/call/\(id)", method: .delete, headers: Self.headers()) { r in
                #expect(r.status == .ok)
                let o = Self.json(r)
                #expect(o["state"] as? String == "ended")
                #expect(o["ended_at"] is String)
            }
            try await client.execute(uri: "/api/call/\(id)", method: .delete, headers: Self.headers()) { r in
                #expect(r.status == .conflict)
                #expect(Self.errorCode(r) == "call_ended")
            }
            try await client.execute(uri: "/api/call/\(id)", method: .get, headers: Self.headers()) { r in
                #expect(Self.json(r)["state"] as? String == "ended")
            }
            try await client.execute(uri: "/api/calls", method: .get, headers: Self.headers()) { r in
                #expect((Self.json(r)["calls"] as? [Any])?.isEmpty == true)
            }
        }
    }

    @Test func chatSayDTMFTypingAndRinging() async throws {
        try await Self.withClient { client in
            let call = try await Self.create(client)
            let id = try #require(call["call_id"] as? String)
            func post(_ action: String, _ body: String?, _ check: @escaping (TestResponse) throws -> Void) async throws {
                try await client.execute(
                    uri: "/api/call/\(id)/\(action)", method: .post, headers: Self.headers(),
                    body: body.map { ByteBuffer(string: $0) }
                ) { r in try check(r) }
            }
            try await post("chat", #"{"text":"hello","sender_name":"Bot"}"#) { r in
                #expect(r.status == .ok)
                #expect(Self.json(r)["ok"] as? Bool == true)
            }
            // 10,000 Unicode scalars is the limit, whatever the grapheme clusters: "a" + 9,999 combining
            // accents is one character on screen but 10,000 scalars (allowed); one more is refused.
            let accents = String(repeating: "\u{301}", count: 9_999)
            for (text, ok) in [("", false), (String(repeating: "x", count: 10_000), true),
                               (String(repeating: "x", count: 10_001), false), ("a" + accents, true),
                               ("a" + accents + "\u{301}", false)] {
                try await post("chat", String(data: try JSONSerialization.data(withJSONObject: ["text": text]), encoding: .utf8)) { r in
                    #expect(r.status == (ok ? .ok : .badRequest))
                    if !ok { #expect(Self.errorCode(r) == "invalid_text") }
                }
            }
            try await post("chat", #"{"text":5}"#) { r in #expect(Self.errorCode(r) == "invalid_text") }
            try await post("say", #"{"text":"hello"}"#) { r in
                #expect(r.status == .badRequest)
                #expect(Self.errorCode(r) == "tts_not_configured")
            }
            try await post("say", #"{"text":""}"#) { r in #expect(Self.errorCode(r) == "invalid_text") }
            for bad in [#"{"digits":""}"#, #"{"digits":"12x"}"#, #"{"digits":"E"}"#, "{\"digits\":\"\(String(repeating: "1", count: 65))\"}"] {
                try await post("dtmf", bad) { r in
                    #expect(r.status == .badRequest)
                    #expect(Self.errorCode(r) == "invalid_dtmf")
                }
            }
            try await post("dtmf", #"{"digits":"0123456789*#ABCD"}"#) { r in
                #expect(r.status == .conflict)
                #expect(Self.errorCode(r) == "no_leg")
            }
            try await post("typing", nil) { r in #expect(r.status == .ok) }
            for action in ["accept", "refuse"] {
                try await post(action, nil) { r in
                    #expect(r.status == .conflict)
                    #expect(Self.errorCode(r) == "not_ringing")
                }
            }
            try await client.execute(uri: "/api/call/\(id)/stream", method: .get, headers: Self.headers()) { r in
                #expect(Self.errorCode(r) == "websocket_required")
            }
            try await client.execute(uri: "/api/call/\(id)", method: .delete, headers: Self.headers())
            for action in ["chat", "typing", "stop-speaking", "say"] {
                try await post(action, #"{"text":"late"}"#) { r in
                    #expect(r.status == .conflict)
                    #expect(Self.errorCode(r) == "call_ended")
                }
            }
        }
    }

    @Test func stopSpeakingWaitsForTheTick() async throws {
        let server = Self.makeServer()
        let ticking = Task.detached {
            while !Task.isCancelled {
                server.engine.tick()
                server.engine.drainEvents()
                try? await Task.sleep(for: .milliseconds(2))
            }
        }
        defer { ticking.cancel() }
        try await Self.withClient(server) { client in
            let id = try #require(try await Self.create(client)["call_id"] as? String)
            try await client.execute(uri: "/api/call/\(id)/stop-speaking", method: .post, headers: Self.headers()) { r in
                #expect(r.status == .ok)
                let o = Self.json(r)
                #expect(o["dropped_ms"] as? Int == 0)
                #expect(o["spoken_text"] as? String == "")
            }
        }
    }

    @Test func perKeyLimitIs429AndFreesOnHangUp() async throws {
        try await Self.withClient(Self.makeServer { $0.maxCallsPerKey = 2 }) { client in
            let first = try await Self.create(client)
            _ = try await Self.create(client)
            try await client.execute(
                uri: "/api/call", method: .post, headers: Self.headers(), body: Self.body(["platform": "zoom", "meeting_url": "z"])
            ) { r in
                #expect(r.status == .tooManyRequests)
                #expect(Self.errorCode(r) == "too_many_calls")
            }
            _ = try await Self.create(client, key: Self.otherKey)  // another key is not affected
            try await client.execute(uri: "/api/call/\(first["call_id"]!)", method: .delete, headers: Self.headers())
            _ = try await Self.create(client)
        }
    }

    @Test func endedCallsAreForgottenAfterTheRetention() async throws {
        // 6 s: room for a test machine loaded by every other suite running beside this one (2 s
        // between the DELETE and the first GET was seen once).
        try await Self.withClient(Self.makeServer { $0.endedRetentionSeconds = 6 }) { client in
            let id = try #require(try await Self.create(client)["call_id"] as? String)
            try await client.execute(uri: "/api/call/\(id)", method: .delete, headers: Self.headers())
            try await client.execute(uri: "/api/call/\(id)", method: .get, headers: Self.headers()) { r in
                #expect(r.status == .ok)
            }
            try await Task.sleep(for: .milliseconds(6500))
            try await client.execute(uri: "/api/call/\(id)", method: .get, headers: Self.headers()) { r in
                #expect(r.status == .notFound)
            }
        }
    }

    @Test func accountVoiceConfigsMetricsOpenAPIAndUnknownPaths() async throws {
        try await Self.withClient(Self.makeServer { $0.maxCallsPerKey = 7 }) { client in
            _ = try await Self.create(client)
            try await client.execute(uri: "/api/account", method: .get, headers: Self.headers()) { r in
                let o = Self.json(r)
                #expect(o["concurrent_calls"] as? Int == 1)
                let features = try #require(o["features"] as? [String: String])
                #expect(Set(features.keys) == ["audio_in", "audio_out", "text_chat", "hosted_stt", "hosted_tts", "sip"])
                let limits = try #require(o["limits"] as? [String: Any])
                #expect(limits["max_calls_per_key"] as? Int == 7)
                #expect(limits["max_streams_per_call"] as? Int == 8)
                let platforms = try #require(o["platforms"] as? [String: [String: Any]])
                #expect(platforms["teams"]?["native_sample_rate"] as? Int == 16000)
            }
            try await client.execute(uri: "/api/voice-configs", method: .get, headers: Self.headers()) { r in
                let o = Self.json(r)
                #expect((o["tts"] as? [[String: Any]])?.first?["id"] as? String == "espeak-en")
                #expect((o["stt"] as? [[String: Any]])?.first?["id"] as? String == "pocketsphinx-en-us")
            }
            try await client.execute(uri: "/metrics", method: .get, headers: Self.headers()) { r in
                let text = String(buffer: r.body)
                for name in ["chamade_calls 1", "chamade_engine_dropped_blocks_total", "chamade_socket_dropped_frames_total"] {
                    #expect(text.contains(name), "\(name)")
                }
            }
            try await client.execute(uri: "/openapi.json", method: .get) { r in
                let o = Self.json(r)
                #expect(o["openapi"] as? String == "3.1.0")
                let paths = try #require(o["paths"] as? [String: Any])
                for path in ["/api/call", "/api/call/{id}", "/api/calls", "/api/account", "/api/events", "/healthz"] {
                    #expect(paths.keys.contains { $0.hasPrefix(path) }, "\(path)")
                }
            }
            try await client.execute(uri: "/api/nothing-here", method: .get, headers: Self.headers()) { r in
                #expect(r.status == .notFound)
                #expect(Self.errorCode(r) == "not_found")
            }
            try await client.execute(uri: "/api/events", method: .get, headers: Self.headers()) { r in
                #expect(Self.errorCode(r) == "websocket_required")
            }
        }
    }

    @Test func gatewayAPICreatesAndEndsCalls() async throws {
        let server = Self.makeServer()
        let call = try server.createCall(apiKey: Self.key, platform: .teams, meetingURL: "gw")
        #expect(call.state == .active)
        #expect(call.audio.sampleRate == 16000)
        #expect(throws: APIError.unauthorized) { try server.createCall(apiKey: "nope", platform: .teams, meetingURL: "gw") }
        try server.endCall(id: call.callID, apiKey: Self.key)
        #expect(throws: APIError.callEnded) { try server.endCall(id: call.callID, apiKey: Self.key) }
    }
}

/// The OpenAPI document and the routes agree: every documented method of every path is routed,
/// and every other method gets 405 with an `Allow` header listing the documented ones.
@Suite("OpenAPI document against the router")
struct OpenAPIRoutesTests {
    @Test func everyPathAnswersItsMethodsAnd405Otherwise() async throws {
        let server = RouterTests.makeServer()
        try await Application(router: server.makeRouter()).test(.router) { client in
            let doc = try await client.execute(uri: "/openapi.json", method: .get) { RouterTests.json($0) }
            let paths = try #require(doc["paths"] as? [String: [String: Any]])
            #expect(paths.count >= 17)
            let verbs: [HTTPRequest.Method] = [.get, .post, .delete, .put, .patch]
            for (path, operations) in paths {
                let documented = Set(operations.keys.map { $0.uppercased() }).intersection(verbs.map(\.rawValue))
                let uri = path.replacingOccurrences(of: "{id}", with: "call_nope")
                for verb in verbs {
                    try await client.execute(uri: uri, method: verb, headers: RouterTests.headers()) { r in
                        if documented.contains(verb.rawValue) {
                            #expect(r.status != .methodNotAllowed, "\(verb) \(path)")
                        } else {
                            #expect(r.status == .methodNotAllowed, "\(verb) \(path)")
                            let allow = Set((r.headers[.allow] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                            #expect(allow == documented, "\(verb) \(path)")
                        }
                    }
                }
            }
        }
    }
}
