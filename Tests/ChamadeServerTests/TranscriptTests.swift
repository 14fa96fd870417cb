import ChamadeEngine
import ChamadeServer
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HummingbirdWSClient
import Logging
import Synchronization
import Testing

/// The library side of the server: a gateway that embeds `ChamadeServer` adds transcript lines;
/// they show in `GET /api/call/{id}?since=N` and go out as `call_transcript` events. Through a real
/// socket on 127.0.0.1.
@Suite("Transcripts from an embedding gateway")
struct TranscriptTests {
    @Test(.timeLimit(.minutes(1)))
    func linesAndEvents() async throws {
        let server = ChamadeServer(engine: Engine(), configuration: .init(port: 0, apiKeys: ["chmd_t"]))
        let port = Mutex<Int>(0)
        let task = Task { try await server.run { p in port.withLock { $0 = p } } }
        defer { task.cancel() }
        var base = ""
        for _ in 0..<200 where base.isEmpty {
            try await Task.sleep(for: .milliseconds(25))
            let p = port.withLock { $0 }
            if p != 0 { base = "http://127.0.0.1:\(p)" }
        }
        #expect(!base.isEmpty)

        func request(_ method: String, _ path: String, body: [String: Any]? = nil) async throws -> [String: Any] {
            var r = URLRequest(url: URL(string: base + path)!)
            r.httpMethod = method
            r.setValue("chmd_t", forHTTPHeaderField: "X-API-Key")
            if let body { r.httpBody = try JSONSerialization.data(withJSONObject: body) }
            let (data, _) = try await URLSession.shared.data(for: r)
            return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        }
        let a = try await request("POST", "/api/call", body: ["platform": "teams", "meeting_url": "https://teams/t1"])
        let b = try await request("POST", "/api/call", body: ["platform": "teams", "meeting_url": "https://teams/t1"])
        let idA = try #require(a["call_id"] as? String)
        let idB = try #require(b["call_id"] as? String)

        // B listens on its WebSocket for the event.
        let heard = Mutex<[String]>([])
        let wsURL = base.replacingOccurrences(of: "http", with: "ws") + "/api/call/\(idB)/stream?api_key=chmd_t"
        let client = Task { () async throws -> Void in
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            _ = try await WebSocketClient.connect(
                url: wsURL, logger: logger
            ) { inbound, _, _ in
                for try await message in inbound.messages(maxSize: 1 << 16) {
                    if case .text(let t) = message, t.contains("call_transcript") {
                        heard.withLock { $0.append(t) }
                        return
                    }
                }
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(server.addTranscript(callID: idA, speaker: "Alice", text: "Hello everyone"))
        #expect(server.addTranscript(callID: idA, speaker: "Bob", text: "Hi Alice"))
        #expect(!server.addTranscript(callID: "call_nope", speaker: "X", text: "lost"))

        let all = try await request("GET", "/api/call/\(idB)?since=0")
        #expect(all["transcript"] as? [String] == ["[Alice] Hello everyone", "[Bob] Hi Alice"])
        #expect(all["transcript_length"] as? Int == 2)
        let delta = try await request("GET", "/api/call/\(idB)?since=1")
        #expect(delta["transcript"] as? [String] == ["[Bob] Hi Alice"])
        #expect(delta["transcript_length"] as? Int == 2)
        let none = try await request("GET", "/api/call/\(idB)?since=5")
        #expect(none["transcript"] as? [String] == [])

        _ = try await client.value
        let event = try #require(heard.withLock { $0.first })
        let object = try JSONSerialization.jsonObject(with: Data(event.utf8)) as? [String: String]
        // The line is attributed to the participant of the call it was added through.
        let speakerParticipant = try #require(a["participant_id"] as? String)
        #expect(
            object == [
                "type": "call_transcript", "speaker": "Alice", "text": "Hello everyone",
                "participant_id": speakerParticipant,
            ])
    }
}
