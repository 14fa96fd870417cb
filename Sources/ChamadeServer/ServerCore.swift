import ChamadeCluster
import ChamadeEngine
import Foundation
import Logging
import NIOConcurrencyHelpers

/// What every controller and socket of one server shares: the engine, the call store, the keys,
/// the account events and the counters. Built once by `ChamadeServer`.
final class ServerCore: Sendable {
    let engine: Engine
    let configuration: ServerConfiguration
    let keys: APIKeys
    let events: AccountEvents
    let store: CallStore
    /// The built-in TTS and STT.
    let speech: ServerSpeech
    /// `/api/events` subscriptions made at the upgrade decision, until their socket runs.
    let pendingSubscriptions = NIOLockedValueBox<[ObjectIdentifier: EventSubscription]>([:])
    let counters = ServerCounters()
    let metrics: ServerMetrics
    let logger: Logger
    /// `http(s)://HOST:PORT` once the server listens (or the advertised URL): the base of every
    /// `text_ws_url`, never taken from a request's `Host` header.
    private let boundBaseURL: NIOLockedValueBox<String?>
    /// This node's side of a cluster (`--cluster`), nil on a node of its own.
    let cluster: ServerCluster?

    init(engine: Engine, configuration: ServerConfiguration, logger: Logger) {
        self.engine = engine
        self.configuration = configuration
        self.keys = APIKeys(configuration.apiKeys)
        let cluster = configuration.cluster.map { ServerCluster(node: ClusterNode(configuration: $0)) }
        self.cluster = cluster
        self.events = AccountEvents(cluster: cluster?.node)
        self.speech = ServerSpeech(configuration: configuration, logger: logger)
        let bound = NIOLockedValueBox<String?>(nil)
        self.boundBaseURL = bound
        self.store = CallStore(
            engine: engine, configuration: configuration, events: events, transcriber: speech.transcriber,
            cluster: cluster?.node, baseURL: { Self.baseURL(configuration, bound) })
        self.metrics = ServerMetrics(sip: configuration.sip != nil)
        speech.bind(store)
        self.logger = logger
    }

    var baseURL: String { Self.baseURL(configuration, boundBaseURL) }

    private static func baseURL(_ configuration: ServerConfiguration, _ bound: NIOLockedValueBox<String?>) -> String {
        if let advertised = configuration.advertisedURL { return advertised }
        if let bound = bound.withLockedValue({ $0 }) { return bound }
        return "\(configuration.tls == nil ? "http" : "https")://\(configuration.host):\(configuration.port)"
    }

    var scheme: String { configuration.tls == nil ? "http" : "https" }

    var isListening: Bool { boundBaseURL.withLockedValue { $0 } != nil }

    /// The server accepts connections: a cluster node joins the cluster now, with its URL.
    func listening(port: Int) {
        let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
        boundBaseURL.withLockedValue { $0 = "\(scheme)://\(host):\(port)" }
        cluster?.start(core: self)
    }

    /// Routes the engine's events to the calls' sockets and waiters.
    func route(_ event: EngineEvent) {
        switch event {
        case .markPlayed(let pid, let mark):
            guard let call = store.byParticipant.withLockedValue({ $0[pid] }) else { return }
            if speech.markPlayed(call, mark: mark) { return }
            for s in call.withLock({ Array($0.sessions.values) }) { s.markPlayed(mark) }
        case .cleared(let pid, let dropped, _, let request):
            let ms = event.droppedMilliseconds ?? 0
            guard let call = store.byParticipant.withLockedValue({ $0[pid] }) else { return }
            let (spoken, lines) = call.settleClear(request: request, dropped: dropped)
            speech.cleared(call, cuts: lines)
            let (sessions, waiters) = call.withLock { m in
                let ready = m.clearWaiters.filter { $0.request <= request }.map(\.resume)
                m.clearWaiters.removeAll { $0.request <= request }
                return (Array(m.sessions.values), ready)
            }
            for w in waiters { w(ms, spoken) }
            for s in sessions { s.cleared(request: request, droppedMilliseconds: ms, spokenText: spoken) }
        case .lateTick(let shard, let ns):
            logger.warning("late tick", metadata: ["shard": "\(shard)", "late_us": "\(ns / 1000)"])
        case .skippedTicks(let shard, let count):
            logger.warning("skipped ticks", metadata: ["shard": "\(shard)", "count": "\(count)"])
        }
    }

    /// Barge-in from HTTP: clears the call's queue and waits for the engine's answer (ms dropped,
    /// and the words of an interrupted `say` that were heard).
    func stopSpeaking(_ call: Call) async -> (Int, String) {
        await withCheckedContinuation { (c: CheckedContinuation<(Int, String), Never>) in
            let once = Once(c)
            // The waiter is registered with the request, before the engine can answer it.
            let request = call.requestClear { m, request in
                guard !m.state.isFinal else { return }
                m.clearWaiters.append((request, { once.resume(($0, $1)) }))
            }
            if request == nil { once.resume((0, "")) }
        }
    }
}

/// Resumes a continuation at most once.
final class Once<T: Sendable>: Sendable {
    private let continuation: NIOLockedValueBox<CheckedContinuation<T, Never>?>
    init(_ c: CheckedContinuation<T, Never>) { continuation = NIOLockedValueBox(c) }
    func resume(_ value: T) {
        let c = continuation.withLockedValue { c in
            defer { c = nil }
            return c
        }
        c?.resume(returning: value)
    }
}
