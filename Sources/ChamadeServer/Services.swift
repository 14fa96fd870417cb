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
            while !stop.isSet {
                guard registry.engine.tickSignal.wait(milliseconds: 100) else { continue }
                for call in registry.receivingCalls() {
                    let n = call.participant.sampleRate.blockSampleCount
                    while scratch.withUnsafeMutableBufferPointer({ call.participant.pullBlock(into: UnsafeMutableBufferPointer(rebasing: $0[0..<n])) }) {
                        let buffer = scratch[0..<n].withUnsafeBytes { ByteBuffer(bytes: $0) }
                        let sessions = registry.lock.withLock { call.sessions.values.filter { $0.receiving } }
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

/// Prometheus text exposition of the engine and server counters.
enum Metrics {
    static func text(_ registry: Registry) -> String {
        let s = registry.engine.statistics()
        let calls = registry.lock.withLock { registry.calls.values.filter { $0.state != .ended }.count }
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ value: Int) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        metric("chamade_calls", "gauge", "Calls not ended.", calls)
        metric("chamade_rooms", "gauge", "Rooms ticking.", s.rooms)
        metric("chamade_participants", "gauge", "Participants in rooms.", s.participants)
        metric("chamade_ticks_total", "counter", "Ticks run by the clock shards (shards with rooms).", s.ticks)
        metric("chamade_late_ticks_total", "counter", "Ticks that finished after the next deadline.", s.lateTicks)
        metric("chamade_skipped_ticks_total", "counter", "Ticks skipped after falling more than a block behind.", s.skippedTicks)
        metric(
            "chamade_frames_dropped_total", "counter", "Outbound blocks lost to slow consumers (engine queue and session queue).",
            s.droppedBlocks + registry.sessionDroppedFrames.load(ordering: .relaxed))
        metric("chamade_playout_overflow_samples_total", "counter", "Samples refused by full playout queues.", s.overflowSamples)
        metric("chamade_bytes_in_total", "counter", "PCM bytes received from agents.", s.bytesIn)
        metric("chamade_frames_out_total", "counter", "Blocks taken by connections.", s.blocksOut)
        out += "# HELP chamade_tick_seconds Processing time of one shard tick.\n# TYPE chamade_tick_seconds histogram\n"
        var cumulative = 0
        for (i, bound) in s.tickHistogramBoundsMicroseconds.enumerated() {
            cumulative += s.tickHistogram[i]
            out += "chamade_tick_seconds_bucket{le=\"\(Double(bound) / 1e6)\"} \(cumulative)\n"
        }
        cumulative += s.tickHistogram.last ?? 0
        out += "chamade_tick_seconds_bucket{le=\"+Inf\"} \(cumulative)\n"
        out += "chamade_tick_seconds_sum \(Double(s.tickNanosecondsTotal) / 1e9)\n"
        out += "chamade_tick_seconds_count \(cumulative)\n"
        return out
    }
}
