import ChamadeCluster
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
        router.get("/api/cluster", use: cluster)
    }

    /// The nodes, their load and rooms (SPEC §10). From Redis now; when Redis cannot be reached,
    /// the live nodes of the last heartbeat. A node of its own lists itself.
    @Sendable func cluster(_ request: Request, context: APIRequestContext) async throws -> Response {
        struct Nodes: Encodable { var nodes: [NodeInfo] }
        var nodes: [NodeInfo]
        if let cluster = core.cluster {
            do throws(ClusterError) { nodes = try await cluster.node.nodes() } catch { nodes = cluster.node.liveNodes() }
        } else {
            let s = core.engine.statistics()
            nodes = [
                NodeInfo(
                    id: "local", url: core.baseURL, alive: true, rooms: s.rooms, participants: s.participants,
                    lateTicks: s.lateTicks, cpuPercent: 0)
            ]
        }
        return try CallController.json(Nodes(nodes: nodes), status: .ok)
    }

    @Sendable func health(_ request: Request, context: APIRequestContext) async throws -> Response {
        let ok = core.engine.clocksRunning
        let body = WireJSON.encode(["status": ok ? "ok" : "clock_stopped"])
        return Response(
            status: ok ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    @Sendable func metrics(_ request: Request, context: APIRequestContext) async throws -> Response {
        let text = core.metrics.render(
            engine: core.engine, store: core.store, counters: core.counters, speech: core.speech, cluster: core.cluster?.node)
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
