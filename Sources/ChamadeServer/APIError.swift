import Foundation
public import HTTPTypes
public import Hummingbird
import Logging
import NIOCore

/// Every refusal of the API: an HTTP status and the body `{"error": {"code", "message"}}` (SPEC §3).
/// Routes throw it; Hummingbird turns it into the response. Codes are stable, messages are for
/// people.
public struct APIError: HTTPResponseError, Sendable, Equatable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public static func badRequest(_ code: String, _ message: String) -> APIError { .init(.badRequest, code, message) }
    public static func conflict(_ code: String, _ message: String) -> APIError { .init(.conflict, code, message) }
    public static let unauthorized = APIError(
        .unauthorized, "unauthorized", "missing or wrong API key (X-API-Key or Authorization: Bearer)")
    public static func notFound(_ message: String = "no such call") -> APIError { .init(.notFound, "not_found", message) }
    public static let callEnded = APIError.conflict("call_ended", "the call has ended")
    public static let bodyTooLarge = APIError(
        .contentTooLarge, "body_too_large", "the request body exceeds 1 MiB (1,048,576 bytes)")
    public static let headersTooLarge = APIError(
        .init(code: 431), "headers_too_large", "the request head exceeds 16 KiB (16,384 bytes)")
    public static let requestTimeout = APIError(
        .requestTimeout, "request_timeout", "the request head was not complete within 10 s")
    /// A cluster node cannot reach Redis (or the room's node): no new room until it can (SPEC §10).
    public static func clusterUnavailable(_ why: String) -> APIError {
        APIError(.serviceUnavailable, "cluster_unavailable", "the cluster cannot take new rooms now: \(why)")
    }
    /// Internal: the room is not open on this node (a cluster create must claim it first).
    static let roomNotOpen = APIError(.serviceUnavailable, "room_not_open", "the room is not open on this node")
    public static let shuttingDown = APIError(.serviceUnavailable, "shutting_down", "the server is shutting down")

    /// The JSON body.
    public var body: String {
        struct Envelope: Encodable {
            struct Inner: Encodable {
                var code: String
                var message: String
            }
            var error: Inner
        }
        let data = (try? JSONEncoder().encode(Envelope(error: .init(code: code, message: message)))) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if closesConnection { headers[.connection] = "close" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// A refusal of the request itself rather than of what it asks (SPEC §9: a wrong method, a
    /// body too large): answered, then the connection is closed (`CloseAfterResponse`).
    var closesConnection: Bool { [405, 408, 411, 413, 431, 501, 505].contains(status.code) }
}

/// Turns every error a route can throw into the contract's JSON error shape: Hummingbird's own
/// (404 for an unknown path, 405, parse errors) keep their status with a JSON body, and anything
/// unexpected becomes a 500 whose body names no internals (the detail goes to the log).
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError {
            switch error.status {
            case .notFound:
                // A path that exists with other methods is 405 with `Allow`, not 404 (SPEC §9).
                let allowed = RouteTable.methods(for: request.uri.path)
                guard allowed.isEmpty else {
                    var response = try APIError(
                        .methodNotAllowed, "method_not_allowed", "\(request.method) is not allowed on \(request.uri.path)"
                    ).response(from: request, context: context)
                    response.headers[.allow] = allowed.joined(separator: ", ")
                    return response
                }
                throw APIError.notFound("no such path: \(request.method) \(request.uri.path)")
            case .methodNotAllowed:
                throw APIError(.methodNotAllowed, "method_not_allowed", "\(request.method) is not allowed on \(request.uri.path)")
            case .contentTooLarge: throw APIError.bodyTooLarge
            default: throw APIError(error.status, "bad_request", error.body ?? error.status.reasonPhrase)
            }
        } catch {
            context.logger.error("internal error", metadata: ["error": "\(String(reflecting: error))"])
            throw APIError(.internalServerError, "internal", "an internal error occurred; it has been logged")
        }
    }
}

/// The API's paths and their methods, to tell "no such path" (404) from "not with this method"
/// (405 with `Allow`). Kept beside the controllers' routes; the router tests check they agree.
enum RouteTable {
    static let routes: [(pattern: [Substring], methods: [String])] = [
        ("/api/call", ["POST"]), ("/api/calls", ["GET"]), ("/api/call/:id", ["GET", "DELETE"]),
        ("/api/call/:id/chat", ["POST"]), ("/api/call/:id/say", ["POST"]), ("/api/call/:id/stop-speaking", ["POST"]),
        ("/api/call/:id/dtmf", ["POST"]), ("/api/call/:id/typing", ["POST"]), ("/api/call/:id/accept", ["POST"]),
        ("/api/call/:id/refuse", ["POST"]), ("/api/call/:id/stream", ["GET"]), ("/api/account", ["GET"]),
        ("/api/voice-configs", ["GET"]), ("/api/events", ["GET"]), ("/healthz", ["GET"]), ("/metrics", ["GET"]),
        ("/openapi.json", ["GET"]), ("/api/cluster", ["GET"]),
    ].map { (pattern: $0.0.split(separator: "/"), methods: $0.1) }

    static func methods(for path: String) -> [String] {
        let parts = path.split(separator: "/")
        for route in routes where route.pattern.count == parts.count {
            if zip(route.pattern, parts).allSatisfy({ $0.hasPrefix(":") || $0 == $1 }) { return route.methods }
        }
        return []
    }
}
