import ChamadeCluster
import ChamadeEngine
import ChamadeMedia
import ChamadeSIP
import ChamadeSpeech
import CoreMetrics
import NIOConcurrencyHelpers
import Prometheus
import Synchronization

/// Counters the server's I/O paths bump without locks.
final class ServerCounters: Sendable {
    /// Audio frames dropped in sockets' outboxes for readers that fell a second behind.
    let socketDroppedFrames = Atomic<Int>(0)
    /// WebSockets open now (calls' streams and account events).
    let openSockets = Atomic<Int>(0)
}

/// `/metrics`: the engine's lock-free counters and the server's, published through swift-metrics
/// into a private Prometheus registry (swift-prometheus), so the library never bootstraps a
/// process-wide metrics system. Counters advance by their delta at each refresh; each tick's
/// processing time, drained from the engine's tick-time ring, goes into a duration histogram.
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private struct Instruments: @unchecked Sendable {
        // SAFETY: swift-metrics handlers are thread-safe; the struct is only read.
        var calls, rooms, participants, sockets: CoreMetrics.Gauge
        var legs, legJitter, legBuffer: CoreMetrics.Gauge
        var recognizers, transcribedTalkers, recognizerLag, firstAudio: CoreMetrics.Gauge
        var counters: [String: CoreMetrics.Counter]
        var tickTime: CoreMetrics.Timer
        var resident, threads, fds, cpu: CoreMetrics.Gauge
    }
    private let instruments: Instruments
    /// The SIP families (SPEC §6), when SIP is on: dialogs and registrations by state (gauges),
    /// responses by class each way and requests each way (counters, by a key of their labels).
    private struct SIPInstruments: @unchecked Sendable {
        // SAFETY: as `Instruments`.
        var dialogs: [String: Prometheus.Gauge] = [:]
        var registrations: [String: Prometheus.Gauge] = [:]
        var counters: [String: Prometheus.Counter] = [:]
    }
    private let sipInstruments: SIPInstruments?
    static let dialogStates = ["ringing", "connecting", "active"]
    // The SIP instruments' names, with the help text `/metrics` gives them.
    static var sipDialogs: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "chamade_sip_dialogs", unitName: "", helpText: "SIP dialogs by state")
    }
    static var sipRegistrations: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "chamade_sip_registrations", unitName: "", helpText: "SIP registrations by state")
    }
    static var sipResponsesSent: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "chamade_sip_responses_sent", unitName: "total", helpText: "SIP responses sent, by class")
    }
    static var sipResponsesReceived: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "chamade_sip_responses_received", unitName: "total", helpText: "SIP responses received, by class")
    }
    static var sipRequests: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "chamade_sip_requests", unitName: "total", helpText: "SIP requests sent and received")
    }
    private let last = NIOLockedValueBox<[String: Int]>([:])
    /// The cluster's families, made at the first refresh of a cluster node: whether Redis answered
    /// the last operation, and one gauge per live node of the last heartbeat (a node gone is
    /// unregistered, so ids that come and go leave nothing behind).
    private struct ClusterInstruments: @unchecked Sendable {
        // SAFETY: as `Instruments`; the struct is only used under its box's lock.
        var redisUp: Prometheus.Gauge?
        var nodeAlive: [String: Prometheus.Gauge] = [:]
    }
    private let clusterInstruments = NIOLockedValueBox(ClusterInstruments())
    static var clusterRedisUp: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "chamade_cluster_redis_up", unitName: "", helpText: "Redis answered the last operation")
    }
    static var clusterNodeAlive: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "chamade_cluster_node_alive", unitName: "", helpText: "Live nodes at the last heartbeat")
    }

    init(sip: Bool) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["chamade_tick_seconds"] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(40),
        ]
        var counters: [String: CoreMetrics.Counter] = [:]
        for name in Self.counterNames {
            counters[name] = CoreMetrics.Counter(label: name, factory: factory)
        }
        instruments = Instruments(
            calls: CoreMetrics.Gauge(label: "chamade_calls", factory: factory),
            rooms: CoreMetrics.Gauge(label: "chamade_rooms", factory: factory),
            participants: CoreMetrics.Gauge(label: "chamade_participants", factory: factory),
            sockets: CoreMetrics.Gauge(label: "chamade_websockets", factory: factory),
            legs: CoreMetrics.Gauge(label: "chamade_legs", factory: factory),
            legJitter: CoreMetrics.Gauge(label: "chamade_leg_jitter_ms_max", factory: factory),
            legBuffer: CoreMetrics.Gauge(label: "chamade_leg_jitter_buffer_ms_max", factory: factory),
            recognizers: CoreMetrics.Gauge(label: "chamade_stt_recognizers", factory: factory),
            transcribedTalkers: CoreMetrics.Gauge(label: "chamade_stt_transcribed_talkers", factory: factory),
            recognizerLag: CoreMetrics.Gauge(label: "chamade_stt_lag_ms", factory: factory),
            firstAudio: CoreMetrics.Gauge(label: "chamade_tts_first_audio_seconds", factory: factory),
            counters: counters,
            tickTime: CoreMetrics.Timer(label: "chamade_tick_seconds", factory: factory),
            resident: CoreMetrics.Gauge(label: "process_resident_memory_bytes", factory: factory),
            threads: CoreMetrics.Gauge(label: "process_threads", factory: factory),
            fds: CoreMetrics.Gauge(label: "process_open_fds", factory: factory),
            // A gauge, not a counter: swift-metrics counters take integers, and this is seconds.
            cpu: CoreMetrics.Gauge(label: "process_cpu_seconds_total", factory: factory))
        guard sip else {
            sipInstruments = nil
            return
        }
        var i = SIPInstruments()
        for state in Self.dialogStates {
            i.dialogs[state] = registry.makeGauge(descriptor: Self.sipDialogs, labels: [("state", state)])
        }
        for state in SIPRegistrationStatus.State.allCases {
            i.registrations[state.rawValue] = registry.makeGauge(descriptor: Self.sipRegistrations, labels: [("state", state.rawValue)])
        }
        for k in 1...6 {
            i.counters["sent \(k)"] = registry.makeCounter(descriptor: Self.sipResponsesSent, labels: [("class", "\(k)xx")])
            i.counters["received \(k)"] = registry.makeCounter(descriptor: Self.sipResponsesReceived, labels: [("class", "\(k)xx")])
        }
        for direction in ["sent", "received"] {
            i.counters[direction] = registry.makeCounter(descriptor: Self.sipRequests, labels: [("direction", direction)])
        }
        sipInstruments = i
    }

    static let counterNames = [
        "chamade_ticks_total", "chamade_late_ticks_total", "chamade_skipped_ticks_total",
        "chamade_engine_dropped_blocks_total", "chamade_socket_dropped_frames_total",
        "chamade_playout_overflow_samples_total", "chamade_bytes_in_total", "chamade_frames_out_total",
        "chamade_lost_events_total", "chamade_lost_ready_entries_total",
        "chamade_leg_packets_received_total", "chamade_leg_packets_lost_total", "chamade_leg_packets_late_total",
        "chamade_leg_packets_invalid_total", "chamade_leg_packets_sent_total", "chamade_leg_concealed_ms_total",
        "chamade_stt_utterances_total", "chamade_stt_audio_ms_total", "chamade_stt_dropped_ms_total",
        "chamade_tts_says_total", "chamade_tts_synthesis_ms_total",
    ]

    /// Brings every metric up to date, then renders the Prometheus text.
    func render(engine: Engine, store: CallStore, counters: ServerCounters, speech: ServerSpeech, cluster: ClusterNode?) -> String {
        last.withLockedValue { last in
            let s = engine.statistics()
            let stt = speech.transcriber?.statistics
            instruments.recognizers.record(stt?.recognizers ?? 0)
            instruments.transcribedTalkers.record(stt?.transcribedTalkers ?? 0)
            instruments.recognizerLag.record(stt?.lagMilliseconds ?? 0)
            instruments.firstAudio.record(Double(speech.firstAudioNanoseconds.load(ordering: .relaxed)) / 1e9)
            let (legs, open) = store.legStatistics()
            instruments.legs.record(open.count)
            instruments.legJitter.record(open.map(\.jitterMilliseconds).max() ?? 0)
            instruments.legBuffer.record(open.map(\.jitterBufferMilliseconds).max() ?? 0)
            instruments.calls.record(store.liveCallCount)
            instruments.rooms.record(s.rooms)
            instruments.participants.record(s.participants)
            // ORDERING: relaxed loads of statistics.
            instruments.sockets.record(counters.openSockets.load(ordering: .relaxed))
            let values = [
                "chamade_ticks_total": s.ticks, "chamade_late_ticks_total": s.lateTicks,
                "chamade_skipped_ticks_total": s.skippedTicks,
                "chamade_engine_dropped_blocks_total": s.droppedBlocks,
                "chamade_socket_dropped_frames_total": counters.socketDroppedFrames.load(ordering: .relaxed),
                "chamade_playout_overflow_samples_total": s.overflowSamples, "chamade_bytes_in_total": s.bytesIn,
                "chamade_frames_out_total": s.blocksOut, "chamade_lost_events_total": s.lostEvents,
                "chamade_lost_ready_entries_total": s.lostReadyEntries,
                "chamade_leg_packets_received_total": legs.packetsReceived,
                "chamade_leg_packets_lost_total": legs.packetsLost,
                "chamade_leg_packets_late_total": legs.packetsLate,
                "chamade_leg_packets_invalid_total": legs.packetsInvalid,
                "chamade_leg_packets_sent_total": legs.packetsSent,
                "chamade_leg_concealed_ms_total": Int(legs.concealedMilliseconds),
                "chamade_stt_utterances_total": stt?.utterances ?? 0,
                "chamade_stt_audio_ms_total": stt?.fedMilliseconds ?? 0,
                "chamade_stt_dropped_ms_total": stt?.droppedMilliseconds ?? 0,
                "chamade_tts_says_total": speech.says.load(ordering: .relaxed),
                "chamade_tts_synthesis_ms_total": speech.synthesisNanoseconds.load(ordering: .relaxed) / 1_000_000,
            ]
            for (name, value) in values {
                let delta = value - last[name, default: 0]
                if delta > 0 { instruments.counters[name]?.increment(by: delta) }
                last[name] = value
            }
            if let sip = sipInstruments, let gateway = store.sip { update(sip, from: gateway, store: store, last: &last) }
            if let cluster { update(from: cluster) }
            engine.drainTickTimes { instruments.tickTime.recordNanoseconds($0) }
            if let p = ProcessStatistics.current() {
                instruments.resident.record(p.residentBytes)
                instruments.threads.record(p.threads)
                instruments.fds.record(p.openFileDescriptors)
                instruments.cpu.record(p.cpuSeconds)
            }
        }
        return registry.emitToString()
    }

    private func update(from cluster: ClusterNode) {
        let live = Set(cluster.liveNodes().map(\.id))
        clusterInstruments.withLockedValue { c in
            if c.redisUp == nil { c.redisUp = registry.makeGauge(descriptor: Self.clusterRedisUp) }
            c.redisUp?.set(Int64(cluster.isReachable ? 1 : 0))
            for (id, gauge) in c.nodeAlive where !live.contains(id) {
                registry.unregisterGauge(gauge)
                c.nodeAlive[id] = nil
            }
            for id in live where c.nodeAlive[id] == nil {
                let gauge = registry.makeGauge(descriptor: Self.clusterNodeAlive, labels: [("node", id)])
                gauge.set(Int64(1))
                c.nodeAlive[id] = gauge
            }
        }
    }

    private func update(_ sip: SIPInstruments, from gateway: SIPGateway, store: CallStore, last: inout [String: Int]) {
        let dialogs = store.sipDialogCounts()
        for (state, gauge) in sip.dialogs { gauge.set(Int64(dialogs[state, default: 0])) }
        let registrations = gateway.registrations
        for (state, gauge) in sip.registrations { gauge.set(Int64(registrations.filter { $0.state.rawValue == state }.count)) }
        let stats = gateway.statistics
        var values = ["sent": stats.requestsSent, "received": stats.requestsReceived]
        for k in 1...6 {
            values["sent \(k)"] = stats.responsesSent[k]
            values["received \(k)"] = stats.responsesReceived[k]
        }
        for (key, value) in values {
            let delta = value - last["sip " + key, default: 0]
            if delta > 0 { sip.counters[key]?.increment(by: Int64(delta)) }
            last["sip " + key] = value
        }
    }
}

extension RTPLegStatistics {
    /// Adds another leg's counters (the gauges, jitter and buffer level, are not summed).
    mutating func add(_ o: RTPLegStatistics) {
        packetsReceived += o.packetsReceived
        packetsLost += o.packetsLost
        packetsLate += o.packetsLate
        packetsInvalid += o.packetsInvalid
        packetsSent += o.packetsSent
        telephoneEventsReceived += o.telephoneEventsReceived
        concealedMilliseconds += o.concealedMilliseconds
        rtcpReceived += o.rtcpReceived
        rtcpSent += o.rtcpSent
    }
}
