import ChamadeEngine
import Foundation
import Hummingbird
import NIOCore

/// `/healthz`, `/metrics` and `/openapi.json`.
struct OperationsController {
    let core: ServerCore

    func addRoutes(to router: Router<APIRequestContext>) {
        router.get("/healthz", use: health)
        router.get("/metrics", use: metrics)
        router.get("/openapi.json", use: openAPI)
    }

    @Sendable func health(_ request: Request, context: APIRequestContext) async throws -> Response {
        let ok = core.engine.clocksRunning
        let body = WireJSON.encode(["status": ok ? "ok" : "clock_stopped"])
        return Response(
            status: ok ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    @Sendable func metrics(_ request: Request, context: APIRequestContext) async throws -> Response {
        let text = core.metrics.render(engine: core.engine, store: core.store, counters: core.counters, speech: core.speech)
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    @Sendable func openAPI(_ request: Request, context: APIRequestContext) async throws -> Response {
        Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.bytes)))
    }
}

/// The OpenAPI 3.1 document of the API: `Resources/openapi.json`, the source of truth, read once.
enum OpenAPIDocument {
    static let bytes: [UInt8] = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"),
            let data = try? Data(contentsOf: url)
        else { return Array(#"{"openapi":"3.1.0","info":{"title":"missing","version":"0"},"paths":{}}"#.utf8) }
        return Array(data)
    }()
}
