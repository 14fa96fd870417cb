import ChamadeCore
import ChamadeEngine
import Synchronization
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTPTypes
import ServiceLifecycle
import CoreMetrics
import Prometheus

/// Answers a refused WebSocket upgrade with the contract's status and JSON error (401 wrong key,
/// 404 unknown call or another key's, 409 ended call) before any upgrade happens.
///
/// Hummingbird answers every refused upgrade with an empty 400, and the refused request never
/// reaches the HTTP/1 pipeline it falls back to. So `shouldUpgrade` records why it refused, keyed by
/// the channel, and this handler (in that fallback pipeline) swaps the empty 400 for the answer.
final class UpgradeRejection: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    // SAFETY: used only on its channel's event loop.
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let registry: Registry
    private var swallowing = false

    init(registry: Registry) { self.registry = registry }

    /// Why an upgrade to `head` must be refused, or nil to accept it.
    static func rejection(for head: HTTPRequest, registry: Registry) -> APIError? {
        guard let path = head.path?.split(separator: "?").first else { return .notFound("no such path") }
        let parts = path.split(separator: "/")
        guard parts.count == 4, parts[0] == "api", parts[1] == "call", parts[3] == "stream" else {
            return .notFound("no such path")
        }
        let key = ChamadeServer.key(of: head)
        guard registry.isValid(key: key) else { return .unauthorized }
        let call: Call
        do { call = try registry.call(String(parts[2]), apiKey: key!) } catch { return error }
        if registry.lock.withLock({ call.state }) == .ended { return .conflict("call_ended", "the call has ended") }
        return nil
    }

    /// Refusals decided by `shouldUpgrade`, waiting for their channel's empty 400.
    static let refusals = Mutex<[ObjectIdentifier: APIError]>([:])

    static func record(_ error: APIError, for channel: any Channel) {
        refusals.withLock { $0[ObjectIdentifier(channel)] = error }
    }

    func channelInactive(context: ChannelHandlerContext) {
        _ = Self.refusals.withLock { $0.removeValue(forKey: ObjectIdentifier(context.channel)) }
        context.fireChannelInactive()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data)
        if case .head(let head) = part, head.status == .badRequest, head.headerFields[.contentLength] == "0",
            let error = Self.refusals.withLock({ $0.removeValue(forKey: ObjectIdentifier(context.channel)) })
        {
            swallowing = true
            let body = ByteBuffer(string: error.json)
            let replaced = HTTPResponse(
                status: .init(code: error.status),
                headerFields: [.contentType: "application/json", .contentLength: "\(body.readableBytes)", .connection: "close"])
            context.write(wrapOutboundOut(.head(replaced)), promise: nil)
            context.write(wrapOutboundOut(.body(body)), promise: promise)
            return
        }
        if swallowing, case .body = part {
            promise?.succeed()
            return
        }
        if case .end = part { swallowing = false }
        context.write(data, promise: promise)
    }
}

/// Moves fresh blocks of mix-minus from the engine to the sessions right after each tick: a thread
/// woken by the engine's tick signal (not a timer, so delivery adds no waiting to the latency).
final class DeliveryService: Service, @unchecked Sendable {
    let registry: Registry
    init(registry: Registry) { self.registry = registry }

    func run() async throws {
        let stop = StopFlag()
        let registry = self.registry
        let thread = Foundation.Thread {
            var scratch = [Int16](repeating: 0, count: 960)
            var wakes = 0
            while !stop.isSet {
                guard registry.engine.tickSignal.wait(milliseconds: 100) else { continue }
                wakes += 1
                if wakes % 100 == 0 { registry.metrics.refresh(registry) }
                for (call, sessions) in registry.receivingSessions() {
                    // Nobody can take a frame: leave the blocks in the engine, whose outbound queue
                    // drops the oldest (counted) when the reader falls a second behind, so a client
                    // that resumes hears fresh audio, never stale audio.
                    guard sessions.contains(where: { $0.canTakeAudio }) else { continue }
                    while true {
                        // Size and block are taken together: the rate may change at any moment.
                        let n = scratch.withUnsafeMutableBufferPointer { call.participant.pullBlock(intoBuffer: $0) }
                        if n == 0 { break }
                        let buffer = scratch[0..<n].withUnsafeBytes { ByteBuffer(bytes: $0) }
                        for s in sessions { s.deliver(buffer) }
                    }
                }
            }
            stop.acknowledge()
        }
        thread.start()
        await withGracefulShutdownHandler {
            await stop.waitUntilStopped()
        } onGracefulShutdown: {
            stop.set()
        }
    }
}

/// On SIGINT/SIGTERM, ends every call cleanly (`call_state` ended, close frame) before the HTTP
/// server stops.
final class CallsService: Service, Sendable {
    let registry: Registry
    init(registry: Registry) { self.registry = registry }

    func run() async throws {
        try? await gracefulShutdown()
        registry.endAll()
        // Give the sessions' writers a moment to send `ended` and the close frames.
        try? await Task.sleep(for: .milliseconds(300))
    }
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    private var acknowledged = false
    private var waiter: CheckedContinuation<Void, Never>?

    var isSet: Bool { lock.withLock { stopped } }
    func set() { lock.withLock { stopped = true } }

    func acknowledge() {
        let w = lock.withLock { () -> CheckedContinuation<Void, Never>? in
            acknowledged = true
            defer { waiter = nil }
            return waiter
        }
        w?.resume()
    }

    func waitUntilStopped() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = lock.withLock { () -> Bool in
                if acknowledged { return true }
                waiter = c
                return false
            }
            if now { c.resume() }
        }
    }
}

/// `/metrics`: the engine's lock-free counters published through swift-metrics into a private
/// Prometheus registry (swift-prometheus), so the library never bootstraps a process-wide metrics
/// system. Counters advance by their delta at each refresh; each tick's processing time, drained
/// from the engine's tick-time ring, goes into a duration histogram.
final class ServerMetrics: @unchecked Sendable {
    // SAFETY: `refresh()` runs under `lock`.
    let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    private let lock = NSLock()
    private var last: [String: Int] = [:]
    private let calls, rooms, participants: CoreMetrics.Gauge
    private let counters: [String: CoreMetrics.Counter]
    private let tickTime: CoreMetrics.Timer

    init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["chamade_tick_seconds"] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(40),
        ]
        self.factory = factory
        calls = CoreMetrics.Gauge(label: "chamade_calls", factory: factory)
        rooms = CoreMetrics.Gauge(label: "chamade_rooms", factory: factory)
        participants = CoreMetrics.Gauge(label: "chamade_participants", factory: factory)
        var c: [String: CoreMetrics.Counter] = [:]
        for name in [
            "chamade_ticks_total", "chamade_late_ticks_total", "chamade_skipped_ticks_total",
            "chamade_frames_dropped_total", "chamade_playout_overflow_samples_total", "chamade_bytes_in_total",
            "chamade_frames_out_total", "chamade_lost_events_total",
        ] {
            c[name] = CoreMetrics.Counter(label: name, factory: factory)
        }
        counters = c
        tickTime = CoreMetrics.Timer(label: "chamade_tick_seconds", factory: factory)
    }

    /// Brings every metric up to date with the engine and the server.
    func refresh(_ server: Registry) {
        lock.withLock {
            let s = server.engine.statistics()
            calls.record(server.lock.withLock { server.calls.values.filter { $0.state != .ended }.count })
            rooms.record(s.rooms)
            participants.record(s.participants)
            let values = [
                "chamade_ticks_total": s.ticks, "chamade_late_ticks_total": s.lateTicks,
                "chamade_skipped_ticks_total": s.skippedTicks,
                "chamade_frames_dropped_total": s.droppedBlocks + server.sessionDroppedFrames.load(ordering: .relaxed),
                "chamade_playout_overflow_samples_total": s.overflowSamples, "chamade_bytes_in_total": s.bytesIn,
                "chamade_frames_out_total": s.blocksOut, "chamade_lost_events_total": s.lostEvents,
            ]
            for (name, value) in values {
                let delta = value - last[name, default: 0]
                if delta > 0 { counters[name]?.increment(by: delta) }
                last[name] = value
            }
            server.engine.drainTickTimes { tickTime.recordNanoseconds($0) }
        }
    }

    func text(_ server: Registry) -> String {
        refresh(server)
        return registry.emitToString()
    }
}
