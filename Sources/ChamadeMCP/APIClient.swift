import Foundation
import MCP
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The HTTP side of `chamade mcp`: calls of a running `chamade serve` (SPEC §3) with the key, each
/// answer as JSON. An API error keeps its status, code and message; a server that cannot be
/// reached is an error of its own, never a crash.
struct APIClient: Sendable {
    let baseURL: String
    let apiKey: String

    enum Failure: Error, Sendable {
        /// The API answered with an error body.
        case api(status: Int, code: String, message: String)
        /// No answer: the server is down or the URL is wrong.
        case unreachable(String)

        var code: String {
            switch self {
            case .api(_, let code, _): code
            case .unreachable: "server_unreachable"
            }
        }

        var message: String {
            switch self {
            case .api(_, _, let message): message
            case .unreachable(let why): why
            }
        }
    }

    /// `method path` with an optional JSON body; the answer's JSON.
    func call(_ method: String, _ path: String, body: [String: Value]? = nil) async throws(Failure) -> Value {
        guard let url = URL(string: baseURL + path) else { throw .unreachable("bad server URL \(baseURL)") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = 30
        request.setValue(apiKey, forHTTPHeaderField: "X-API-Key")
        if let body {
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = try? JSONEncoder().encode(body)
        }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw .unreachable("cannot reach chamade serve at \(baseURL): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let json = (try? JSONDecoder().decode(Value.self, from: data)) ?? .null
        guard (200..<300).contains(status) else {
            let error = json.objectValue?["error"]?.objectValue
            throw .api(
                status: status, code: error?["code"]?.stringValue ?? "http_\(status)",
                message: error?["message"]?.stringValue ?? "HTTP \(status)")
        }
        return json
    }

    /// The call's WebSocket URL (SPEC §4), the key as a query parameter.
    func streamURL(callID: String) -> String {
        let ws = baseURL.hasPrefix("https://")
            ? "wss://" + baseURL.dropFirst("https://".count) : "ws://" + baseURL.dropFirst("http://".count)
        return "\(ws)/api/call/\(callID)/stream?api_key=\(apiKey)"
    }
}
