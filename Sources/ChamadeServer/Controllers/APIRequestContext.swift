public import Foundation
public import Hummingbird
import NIOCore

/// The request context of the HTTP API: Hummingbird's, plus the key the request authenticated with.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `AuthenticationMiddleware` on every route that needs a key.
    var apiKey = ""

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    /// JSON as the wire wants it: slashes in URLs left alone.
    public var responseEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return encoder
    }

    /// Bodies larger than the contract's 1 MiB are refused (413) before they are read in full.
    public var maxUploadSize: Int { ServerConfiguration.maxBodyBytes }
}

/// Checks the key of every route but `/healthz` and `/openapi.json` (401 before any route runs).
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let keys: APIKeys

    static let open: Set<String> = ["/healthz", "/healthz/", "/openapi.json", "/openapi.json/"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        if Self.open.contains(request.uri.path) { return try await next(request, context) }
        guard let key = keys.match(APIKeys.presented(in: request.head, allowQuery: false)) else {
            throw APIError.unauthorized
        }
        var context = context
        context.apiKey = key
        return try await next(request, context)
    }
}

/// Reads a JSON body into `T`: 413 beyond 1 MiB, `invalid_json` when it is not a JSON object, and
/// a field of the wrong type gets the code `codeForField` gives it. An empty body reads as `{}`.
func decodeBody<T: Decodable>(
    _ type: T.Type, from request: Request, context: APIRequestContext, fields: [String],
    codeForField: (String) -> String
) async throws -> T {
    var request = request
    let buffer: ByteBuffer
    do {
        buffer = try await request.collectBody(upTo: ServerConfiguration.maxBodyBytes)
    } catch {
        throw APIError.bodyTooLarge
    }
    return try decodeBody(type, from: buffer, fields: fields, codeForField: codeForField)
}

/// `decodeBody` of a body already read.
func decodeBody<T: Decodable>(
    _ type: T.Type, from buffer: ByteBuffer, fields: [String], codeForField: (String) -> String
) throws -> T {
    let data = buffer.readableBytes == 0 ? Data("{}".utf8) : Data(buffer.readableBytesView)
    guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
        throw APIError.badRequest("invalid_json", "the body must be a JSON object")
    }
    // A known field set to null is a wrong type, not an absent field (unknown fields stay ignored).
    for field in fields where object[field] is NSNull {
        throw APIError.badRequest(codeForField(field), "\"\(field)\" must not be null")
    }
    do {
        return try JSONDecoder().decode(T.self, from: data)
    } catch {
        let field = error.fieldName ?? "body"
        throw APIError.badRequest(codeForField(field), "\"\(field)\" has the wrong type")
    }
}

extension Error {
    /// The first key of a decoding error's path: the field that was wrong.
    var fieldName: String? {
        guard let e = self as? DecodingError else { return nil }
        let path: [any CodingKey]
        switch e {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): path = c.codingPath
        case .keyNotFound(let key, let c): path = c.codingPath + [key]
        @unknown default: return nil
        }
        return path.first?.stringValue
    }
}
