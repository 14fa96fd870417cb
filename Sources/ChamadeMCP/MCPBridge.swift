public import Foundation
public import Logging
import MCP

/// `chamade mcp` (SPEC §8): a Model Context Protocol server over stdio, a client of a running
/// `chamade serve`, so a model that only reads and writes text can take part in a call: the tools
/// of `ToolCatalog`, each call's transcript as a resource (subscribed: notified as lines come),
/// and prompts. Nothing but protocol goes to stdout; logs go to stderr.
public enum MCPBridge {
    public static func run(url: String, apiKey: String, logger: Logger) async throws {
        let api = APIClient(baseURL: url.hasSuffix("/") ? String(url.dropLast()) : url, apiKey: apiKey)
        let server = Server(
            name: "chamade", version: "1.0.0", title: "Chamade meeting bridge",
            instructions: """
                Take part in meetings as a text agent: join with chamade_call_join, follow what is said with \
                chamade_call_status (since = the last transcript_length) or by subscribing to the call's \
                transcript resource, speak with chamade_call_say, leave with chamade_call_hangup.
                """,
            capabilities: .init(
                prompts: .init(listChanged: false), resources: .init(subscribe: true, listChanged: false),
                tools: .init(listChanged: false)))
        let watch = TranscriptWatch(api: api, logger: logger) { [weak server] uri in
            try? await server?.notify(ResourceUpdatedNotification.message(.init(uri: uri)))
        }
        let entries = Dictionary(uniqueKeysWithValues: ToolCatalog.entries.map { ($0.tool.name, $0) })

        await server.withMethodHandler(ListTools.self) { _ in .init(tools: ToolCatalog.entries.map(\.tool)) }
        await server.withMethodHandler(CallTool.self) { params in
            guard let entry = entries[params.name] else {
                return Self.failure("unknown_tool", "no tool \(params.name)")
            }
            let arguments = params.arguments ?? [:]
            if let missing = Self.missing(arguments, for: entry.tool) {
                return Self.failure("invalid_arguments", missing)
            }
            let (method, path, body) = entry.route(arguments)
            let json: Value
            do throws(APIClient.Failure) { json = try await api.call(method, path, body: body) } catch {
                return Self.failure(error.code, error.message)
            }
            return try CallTool.Result(
                content: [.text(text: Self.summary(params.name, json), annotations: nil, _meta: nil)], structuredContent: json)
        }

        await server.withMethodHandler(ListResources.self) { _ in
            let calls = (try? await api.call("GET", "/api/calls"))?.objectValue?["calls"]?.arrayValue ?? []
            return .init(resources: calls.compactMap { c in
                guard let o = c.objectValue, let id = o["call_id"]?.stringValue else { return nil }
                let who = o["agent_name"]?.stringValue ?? "agent"
                let meeting = o["meeting_url"]?.stringValue ?? ""
                return Resource(
                    name: "transcript \(id)", uri: TranscriptWatch.uri(of: id), title: "Transcript: \(who) in \(meeting)",
                    description: "What is said in the room of call \(id), one \"[Speaker] text\" line per utterance.",
                    mimeType: "text/plain")
            })
        }
        await server.withMethodHandler(ListResourceTemplates.self) { _ in
            .init(templates: [
                Resource.Template(
                    uriTemplate: "chamade://calls/{call_id}/transcript", name: "transcript", title: "A call's transcript",
                    description: "One \"[Speaker] text\" line per utterance in the call's room.", mimeType: "text/plain")
            ])
        }
        await server.withMethodHandler(ReadResource.self) { params in
            guard let id = TranscriptWatch.callID(of: params.uri) else {
                throw MCPError.invalidParams("unknown resource \(params.uri): chamade://calls/{call_id}/transcript")
            }
            do throws(APIClient.Failure) {
                let json = try await api.call("GET", "/api/call/\(id)?since=0")
                let lines = json.objectValue?["transcript"]?.arrayValue?.compactMap(\.stringValue) ?? []
                return .init(contents: [.text(lines.joined(separator: "\n"), uri: params.uri, mimeType: "text/plain")])
            } catch {
                throw MCPError.invalidParams("\(error.code): \(error.message)")
            }
        }
        await server.withMethodHandler(ResourceSubscribe.self) { params in
            guard let id = TranscriptWatch.callID(of: params.uri) else {
                throw MCPError.invalidParams("unknown resource \(params.uri)")
            }
            // The call must exist for this key (else the socket would be refused silently).
            do throws(APIClient.Failure) { _ = try await api.call("GET", "/api/call/\(id)") } catch {
                throw MCPError.invalidParams("\(error.code): \(error.message)")
            }
            await watch.subscribe(params.uri, callID: id)
            return Empty()
        }
        await server.withMethodHandler(ResourceUnsubscribe.self) { params in
            await watch.unsubscribe(params.uri)
            return Empty()
        }

        await server.withMethodHandler(ListPrompts.self) { _ in .init(prompts: Prompts.all) }
        await server.withMethodHandler(GetPrompt.self) { params in
            guard let result = Prompts.get(params.name, params.arguments ?? [:]) else {
                throw MCPError.invalidParams("no prompt \(params.name)")
            }
            return result
        }

        try await server.start(transport: LineTransport(logger: logger))
        await server.waitUntilCompleted()
        await watch.stopAll()
    }

    /// An error as a tool result (SPEC §8): `isError`, the API's code and message as text and as
    /// structured content.
    static func failure(_ code: String, _ message: String) -> CallTool.Result {
        let error: Value = .object(["error": .object(["code": .string(code), "message": .string(message)])])
        return CallTool.Result(
            content: [.text(text: "\(code): \(message)", annotations: nil, _meta: nil)], structuredContent: Optional<Value>.some(error),
            isError: true, _meta: nil)
    }

    /// The first required argument missing, described; nil when all are there.
    static func missing(_ arguments: [String: Value], for tool: Tool) -> String? {
        let required = tool.inputSchema.objectValue?["required"]?.arrayValue?.compactMap(\.stringValue) ?? []
        guard let name = required.first(where: { arguments[$0] == nil || arguments[$0] == .null }) else { return nil }
        return "\(tool.name) needs \"\(name)\""
    }

    /// A short line for the model beside the structured result.
    static func summary(_ tool: String, _ json: Value) -> String {
        let o = json.objectValue ?? [:]
        switch tool {
        case "chamade_call_status":
            let lines = o["transcript"]?.arrayValue?.compactMap(\.stringValue) ?? []
            let state = o["state"]?.stringValue ?? "?"
            let length = o["transcript_length"]?.intValue ?? 0
            return (["state: \(state), transcript_length: \(length)"] + lines).joined(separator: "\n")
        case "chamade_call_join":
            return "joined: call_id \(o["call_id"]?.stringValue ?? "?"), state \(o["state"]?.stringValue ?? "?")"
        case "chamade_call_say":
            return "speaking for \(o["queued_ms"]?.intValue ?? 0) ms"
        case "chamade_call_stop_speaking":
            return "stopped; the meeting heard: \"\(o["spoken_text"]?.stringValue ?? "")\""
        default:
            let data = (try? JSONEncoder().encode(json)) ?? Data()
            return String(decoding: data, as: UTF8.self)
        }
    }
}
