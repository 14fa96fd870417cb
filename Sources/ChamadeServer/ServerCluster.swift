import AsyncHTTPClient
import ChamadeCluster
import ChamadeEngine
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The server's side of a cluster (SPEC §10): what it tells its `ClusterNode` (load, state, open
/// rooms), what the node tells it (other nodes' events, being declared dead), and requests sent on
/// to the node that owns a room or a call.
final class ServerCluster: ClusterDelegate {
    let node: ClusterNode
    private let core = NIOLockedValueBox<ServerCore?>(nil)
    /// HTTP between nodes (pooled keep-alive connections, on NIO's event loops).
    let http = HTTPClient(eventLoopGroupProvider: .singleton)
    /// The process's CPU time at the last heartbeat (seconds) and when (monotonic ns).
    private let cpu = NIOLockedValueBox<(seconds: Double, at: Int64)>((0, 0))

    /// A request another node sent on: answered here, never sent on again (`GET /api/calls`: this
    /// node's calls only).
    static let forwardedHeader = HTTPField.Name("X-Chamade-Forwarded")!

    init(node: ClusterNode) {
        self.node = node
    }

    func start(core: ServerCore) {
        self.core.withLockedValue { $0 = core }
        node.start(delegate: self)
    }

    /// Leaves the cluster once the calls have ended.
    func stop() async {
        node.stop()
        try? await http.shutdown()
    }

    // MARK: ClusterDelegate

    func load() -> NodeLoad {
        guard let core = core.withLockedValue({ $0 }) else { return NodeLoad(url: "", rooms: 0, participants: 0, lateTicks: 0, cpuPercent: 0) }
        let s = core.engine.statistics()
        let now = MonotonicClock.now()
        let seconds = ProcessStatistics.current()?.cpuSeconds ?? 0
        let percent = cpu.withLockedValue { last -> Double in
            defer { last = (seconds, now) }
            guard last.at > 0, now > last.at else { return 0 }
            return (seconds - last.seconds) / (Double(now - last.at) / 1e9) * 100
        }
        return NodeLoad(
            url: core.isListening ? core.baseURL : "", rooms: s.rooms, participants: s.participants,
            lateTicks: s.lateTicks, cpuPercent: percent)
    }

    func localState() -> (rooms: [String], calls: [ClusterCall]) {
        core.withLockedValue { $0 }?.store.clusterState() ?? ([], [])
    }

    func isOpen(room: String) -> Bool {
        guard let key = RoomKey(name: room), let core = core.withLockedValue({ $0 }) else { return false }
        return core.store.handle(roomKey: key) != nil
    }

    func deliver(keyTag: String, text: String) {
        core.withLockedValue { $0 }?.events.deliverRemote(keyTag: keyTag, text: text)
    }

    func declaredDead() {
        guard let core = core.withLockedValue({ $0 }) else { return }
        core.logger.warning("this node was declared dead while cut off from Redis: ending its calls")
        core.store.endAllDisconnected("This node lost the cluster for longer than its lease.")
    }

    // MARK: forwarding

    /// Sends `request` (its method, path, query, key and `body`) on to the node at `url` and gives
    /// back its answer as is. 503 `cluster_unavailable` when that node does not answer.
    func forward(_ request: Request, body: ByteBuffer?, to url: String, nodeID: String) async throws -> Response {
        var outbound = HTTPClientRequest(url: url + request.uri.description)
        outbound.method = HTTPMethod(rawValue: request.method.rawValue)
        for name in [HTTPField.Name("X-API-Key")!, .authorization, .contentType] {
            if let value = request.headers[name] { outbound.headers.add(name: name.rawName, value: value) }
        }
        outbound.headers.add(name: Self.forwardedHeader.rawName, value: node.id)
        if let body { outbound.body = .bytes(body) }
        do {
            let response = try await http.execute(outbound, timeout: .seconds(10))
            let bytes = try await response.body.collect(upTo: 64 << 20)
            var headers = HTTPFields()
            headers[.contentType] = response.headers.first(name: "content-type") ?? "application/json"
            return Response(status: .init(code: Int(response.status.code)), headers: headers, body: .init(byteBuffer: bytes))
        } catch {
            throw APIError.clusterUnavailable("node \(nodeID) at \(url) did not answer (\(error))")
        }
    }

    /// A GET to every other live node, in parallel: the JSON bodies of those that answered 200.
    func gather(path: String, apiKey: String) async -> [Data] {
        let others = node.liveNodes().filter { $0.id != node.id && !$0.url.isEmpty }
        return await withTaskGroup(of: Data?.self) { group in
            for other in others {
                group.addTask {
                    var r = HTTPClientRequest(url: other.url + path)
                    r.headers.add(name: "X-API-Key", value: apiKey)
                    r.headers.add(name: Self.forwardedHeader.rawName, value: self.node.id)
                    guard let response = try? await self.http.execute(r, timeout: .seconds(5)), response.status == .ok,
                        let bytes = try? await response.body.collect(upTo: 64 << 20)
                    else { return nil }
                    return Data(bytes.readableBytesView)
                }
            }
            var out: [Data] = []
            for await d in group { if let d { out.append(d) } }
            return out
        }
    }
}

/// Sends every request about a call of another node on to that node (SPEC §10: any node answers
/// any route). A call of a node that is gone is answered from the cluster's record of it: ended.
struct ClusterForwarding: RouterMiddleware {
    typealias Context = APIRequestContext
    let cluster: ServerCluster

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let parts = request.uri.path.split(separator: "/", omittingEmptySubsequences: true)
        guard parts.count >= 3, parts[0] == "api", parts[1] == "call", request.headers[ServerCluster.forwardedHeader] == nil,
            let owner = ClusterNode.node(ofCall: String(parts[2])), owner != cluster.node.id
        else { return try await next(request, context) }
        let callID = String(parts[2])
        if let live = cluster.node.node(owner), !live.url.isEmpty {
            var request = request
            let body = try? await request.collectBody(upTo: ServerConfiguration.maxBodyBytes)
            guard let body else { throw APIError.bodyTooLarge }
            return try await cluster.forward(request, body: body.readableBytes > 0 ? body : nil, to: live.url, nodeID: owner)
        }
        // The node is gone: its call ended with it, if it was this key's.
        let ended: ClusterCall?
        do throws(ClusterError) { ended = try await cluster.node.endedCall(callID) } catch {
            throw APIError.clusterUnavailable(error.description)
        }
        guard let ended, ended.keyTag == ClusterNode.tag(ofKey: context.apiKey) else { throw APIError.notFound() }
        guard request.method == .get, parts.count == 3 else { throw APIError.callEnded }
        return Response(
            status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: ended.objectJSON)))
    }
}
