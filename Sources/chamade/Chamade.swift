import ArgumentParser
import Logging
import ChamadeCluster
import ChamadeCore
import ChamadeEngine
import ChamadeMedia
import ChamadeLoadTest
import ChamadeMCP
import ChamadeServer
import ChamadeSIP
import ChamadeTools
import Foundation

/// A failure that is not the user's usage: exit code 1.
struct RunFailure: Error, CustomStringConvertible {
    var description: String
}

struct Chamade: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chamade",
        abstract: "Chamade: the real-time audio bridge engine of an AI-agent meeting gateway.",
        subcommands: [ServeCommand.self, MCPCommand.self, ReplayCommand.self, BenchCommand.self, LoadTestCommand.self]
    )
}

struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Run a room offline with each input file as a participant; write each one's mix-minus and the room mix."
    )

    @Argument(help: "Input audio files (any format libsndfile reads; several channels are down-mixed).")
    var inputs: [String] = []

    @Option(name: .long, help: "Output directory (created if missing).")
    var out: String

    @Option(name: .long, help: "The room's native rate in Hz (multiple of 50, 8000–48000).")
    var rate: Int = 48000

    @Option(name: .long, help: "Also transcribe the room (PocketSphinx) and write its lines here: START END [input-name] text.")
    var transcript: String?

    func validate() throws {
        guard !inputs.isEmpty else { throw ValidationError("give at least one input file") }
        guard SampleRate.isSupported(rate) else {
            throw ValidationError("--rate \(rate): unsupported sample rate (use a multiple of 50 from 8000 to 48000)")
        }
    }

    func run() throws {
        let options = Replay.Options(
            inputs: inputs, outputDirectory: out, nativeRate: try SampleRate(hertz: rate), transcriptPath: transcript)
        let started = ContinuousClock.now
        let summary: Replay.Summary
        do {
            summary = try Replay.run(options) { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        } catch {
            throw RunFailure(description: error.description)
        }
        let elapsed = ContinuousClock.now - started
        let speed = summary.seconds / max(1e-9, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        print("replayed \(String(format: "%.2f", summary.seconds)) s of a \(rate) Hz room with \(inputs.count) participants in \(elapsed.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow))) (\(String(format: "%.0f", speed))x real time)")
        for path in summary.mixMinusPaths { print("  \(path)") }
        print("  \(summary.roomPath)")
        if let transcript { print("  \(transcript) (\(summary.transcript.count) lines)") }
    }
}

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the HTTP call API and the audio WebSocket.",
        discussion: """
            Every option also reads an environment variable when it is not given: CHAMADE_HOST, CHAMADE_PORT,
            CHAMADE_API_KEYS (comma-separated), CHAMADE_ADVERTISE, CHAMADE_TLS_CERT, CHAMADE_TLS_KEY,
            CHAMADE_ENDED_RETENTION, CHAMADE_MAX_CALLS_PER_KEY, CHAMADE_RTP_PORTS, CHAMADE_RTP_TIMEOUT, CHAMADE_SIP,
            CHAMADE_SIP_ROUTES (user=key,user=key), CHAMADE_SIP_REGISTER (comma-separated), CHAMADE_SIP_AUTH
            (host=user:password,...), CHAMADE_SIP_RING_TIMEOUT.
            """
    )

    @Option(name: .long, help: "Address to listen on (default 127.0.0.1; CHAMADE_HOST).")
    var host: String?
    @Option(name: .long, help: "Port to listen on, 0 for any free port (default 8787; CHAMADE_PORT).")
    var port: Int?
    @Option(name: .customLong("api-key"), help: "An API key (repeatable; CHAMADE_API_KEYS, comma-separated).")
    var apiKeys: [String] = []
    @Option(name: .long, help: "The URL clients and the other cluster nodes reach this server at, for text_ws_url (CHAMADE_ADVERTISE).")
    var advertise: String?
    @Option(name: .long, help: "Join a cluster of nodes on this Redis: redis://HOST:PORT (CHAMADE_CLUSTER).")
    var cluster: String?
    @Option(name: .customLong("node-id"), help: "This node's id in the cluster, 1-40 of A-Z a-z 0-9 - (default HOSTNAME-PORT; CHAMADE_NODE_ID).")
    var nodeID: String?
    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain: serve HTTPS and WSS only (CHAMADE_TLS_CERT).")
    var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "PEM private key for --tls-cert (CHAMADE_TLS_KEY).")
    var tlsKey: String?
    @Option(name: .customLong("ended-retention"), help: "Seconds an ended call stays readable (default 3600; CHAMADE_ENDED_RETENTION).")
    var endedRetention: Double?
    @Option(name: .customLong("max-calls-per-key"), help: "Calls not ended per key (default 1000; CHAMADE_MAX_CALLS_PER_KEY).")
    var maxCallsPerKey: Int?
    @Option(name: .customLong("rtp-ports"), help: "Local RTP ports of platform legs, LOW-HIGH (default 20000-29999; CHAMADE_RTP_PORTS).")
    var rtpPorts: String?
    @Option(name: .customLong("rtp-timeout"), help: "Seconds without RTP or RTCP before a leg is lost (default 10; CHAMADE_RTP_TIMEOUT).")
    var rtpTimeout: Double?
    @Option(name: .long, help: "Built-in TTS for say: espeak or none (default espeak; CHAMADE_TTS).")
    var tts: String?
    @Option(name: .long, help: "Built-in STT for transcripts: pocketsphinx or none (default pocketsphinx; CHAMADE_STT).")
    var stt: String?
    @Option(name: .customLong("stt-workers"), help: "Recognizer threads (default 2; CHAMADE_STT_WORKERS).")
    var sttWorkers: Int?
    @Option(name: .customLong("stt-recognizers"), help: "PocketSphinx decoders at most (~90 MB each): talkers recognized at once (default 8; CHAMADE_STT_RECOGNIZERS).")
    var sttRecognizers: Int?
    @Option(name: .long, help: "SIP over UDP: HOST:PORT to listen on (port 0: any), or off (default 127.0.0.1:5060; CHAMADE_SIP).")
    var sip: String?
    @Option(name: .customLong("sip-route"), help: "Inbound SIP calls for USER (or * for any) belong to KEY: USER=KEY (repeatable; CHAMADE_SIP_ROUTES).")
    var sipRoutes: [String] = []
    @Option(name: .customLong("sip-register"), help: "Register sip:USER@REGISTRAR[:PORT] with digest credentials from --sip-auth (repeatable; CHAMADE_SIP_REGISTER).")
    var sipRegister: [String] = []
    @Option(name: .customLong("sip-auth"), help: "Digest credentials for a host: HOST=USER:PASSWORD (repeatable; CHAMADE_SIP_AUTH).")
    var sipAuth: [String] = []
    @Option(name: .customLong("sip-ring-timeout"), help: "Seconds an inbound call rings, and an outbound one waits for an answer (default 30; CHAMADE_SIP_RING_TIMEOUT).")
    var sipRingTimeout: Double?

    /// The SIP settings from the flags and the environment, nil for `off`; a usage error says what is wrong.
    func sipSettings() throws -> ServerConfiguration.SIPSettings? {
        let env = ProcessInfo.processInfo.environment
        func list(_ flag: [String], _ name: String) -> [String] {
            flag.isEmpty ? (env[name] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } : flag
        }
        let address = sip ?? env["CHAMADE_SIP"] ?? "127.0.0.1:5060"
        if address == "off" { return nil }
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port),
            Endpoint(host: String(address[..<colon]), port: port) != nil
        else { throw ValidationError("--sip must be IPV4:PORT or off, not \(address)") }
        var routes: [String: String] = [:]
        for r in list(sipRoutes, "CHAMADE_SIP_ROUTES") {
            let kv = r.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, !kv[0].isEmpty, !kv[1].isEmpty else { throw ValidationError("--sip-route must be USER=KEY, not \(r)") }
            routes[String(kv[0])] = String(kv[1])
        }
        var credentials: [String: SIPCredentials] = [:]
        for a in list(sipAuth, "CHAMADE_SIP_AUTH") {
            let hostRest = a.split(separator: "=", maxSplits: 1)
            let userPassword = hostRest.count == 2 ? hostRest[1].split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false) : []
            guard userPassword.count == 2, !hostRest[0].isEmpty, !userPassword[0].isEmpty else {
                throw ValidationError("--sip-auth must be HOST=USER:PASSWORD")
            }
            credentials[String(hostRest[0])] = SIPCredentials(user: String(userPassword[0]), password: String(userPassword[1]))
        }
        var registrations: [SIPURI] = []
        for r in list(sipRegister, "CHAMADE_SIP_REGISTER") {
            do { registrations.append(try SIPURI(parsing: r)) } catch { throw ValidationError("--sip-register \(r): \(error)") }
        }
        let ring = try setting(sipRingTimeout, "CHAMADE_SIP_RING_TIMEOUT", 30)
        guard ring > 0, ring <= 3600 else { throw ValidationError("--sip-ring-timeout must be > 0 and ≤ 3600 seconds") }
        return .init(
            host: String(address[..<colon]), port: port, routes: routes, registrations: registrations, credentials: credentials,
            ringTimeoutSeconds: ring)
    }

    /// `LOW-HIGH`, an even-sized range of at least one RTP/RTCP pair within 1024-65535.
    static func portRange(_ text: String) -> ClosedRange<Int>? {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let low = Int(parts[0]), let high = Int(parts[1]), 1024 <= low, high <= 65535,
            high - low >= 1 + low % 2
        else { return nil }
        return low...high
    }

    /// The option's value, else its environment variable's, else the default; a bad environment
    /// value is a usage error like a bad flag.
    private func setting<T: LosslessStringConvertible>(_ flag: T?, _ name: String, _ fallback: T) throws -> T {
        if let flag { return flag }
        guard let text = ProcessInfo.processInfo.environment[name], !text.isEmpty else { return fallback }
        guard let value = T(text) else { throw ValidationError("\(name)=\(text): not a valid value") }
        return value
    }

    func validate() throws {
        let port = try setting(port, "CHAMADE_PORT", 8787)
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0 to 65535") }
        for key in apiKeys where key.isEmpty { throw ValidationError("--api-key must not be empty") }
        guard try setting(endedRetention, "CHAMADE_ENDED_RETENTION", 3600) >= 0 else {
            throw ValidationError("--ended-retention must be ≥ 0")
        }
        guard try setting(maxCallsPerKey, "CHAMADE_MAX_CALLS_PER_KEY", 1000) >= 1 else {
            throw ValidationError("--max-calls-per-key must be ≥ 1")
        }
        guard Self.portRange(try setting(rtpPorts, "CHAMADE_RTP_PORTS", "20000-29999")) != nil else {
            throw ValidationError("--rtp-ports must be LOW-HIGH within 1024-65535, holding at least one even port and the next")
        }
        let timeout = try setting(rtpTimeout, "CHAMADE_RTP_TIMEOUT", 10)
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--rtp-timeout must be > 0 and ≤ 3600 seconds") }
        _ = try sipSettings()
        guard ["espeak", "none"].contains(try setting(tts, "CHAMADE_TTS", "espeak")) else {
            throw ValidationError("--tts must be espeak or none")
        }
        guard ["pocketsphinx", "none"].contains(try setting(stt, "CHAMADE_STT", "pocketsphinx")) else {
            throw ValidationError("--stt must be pocketsphinx or none")
        }
        guard (1...16).contains(try setting(sttWorkers, "CHAMADE_STT_WORKERS", 2)) else {
            throw ValidationError("--stt-workers must be 1 to 16")
        }
        guard (1...64).contains(try setting(sttRecognizers, "CHAMADE_STT_RECOGNIZERS", 8)) else {
            throw ValidationError("--stt-recognizers must be 1 to 64")
        }
        let cert = tlsCert ?? ProcessInfo.processInfo.environment["CHAMADE_TLS_CERT"]
        let key = tlsKey ?? ProcessInfo.processInfo.environment["CHAMADE_TLS_KEY"]
        guard (cert == nil) == (key == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        for path in [cert, key].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: path) {
            throw ValidationError("cannot read \(path)")
        }
    }

    /// `--cluster` and `--node-id`: nil without a cluster.
    private func clusterConfiguration(port: Int) throws -> ClusterConfiguration? {
        let env = ProcessInfo.processInfo.environment
        guard let url = cluster ?? env["CHAMADE_CLUSTER"] else { return nil }
        var id = nodeID ?? env["CHAMADE_NODE_ID"]
        if id == nil {
            // The host name (what a node id may hold of it) and the port; a random suffix for port 0.
            let host = String(ProcessInfo.processInfo.hostName.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-") }.prefix(28))
            let suffix = port == 0 ? String(UInt32.random(in: 0...UInt32.max), radix: 16) : String(port)
            id = (host.isEmpty ? "node" : host) + "-" + suffix
        }
        do throws(ClusterError) { return try ClusterConfiguration(redisURL: url, nodeID: id!) } catch {
            throw ValidationError(error.description)
        }
    }

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        var keys = apiKeys
        if let list = env["CHAMADE_API_KEYS"] {
            keys += list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        if keys.isEmpty {
            var g = SystemRandomNumberGenerator()
            let key = "chmd_" + (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }.joined()
            keys = [key]
            FileHandle.standardOutput.write(Data("api key: \(key)\n".utf8))
        }
        let host = try setting(host, "CHAMADE_HOST", "127.0.0.1")
        var tls: ServerConfiguration.TLSFiles?
        if let cert = tlsCert ?? env["CHAMADE_TLS_CERT"], let key = tlsKey ?? env["CHAMADE_TLS_KEY"] {
            tls = .init(certificatePath: cert, privateKeyPath: key)
        }
        var configuration = ServerConfiguration(
            host: host, port: try setting(port, "CHAMADE_PORT", 8787), apiKeys: keys,
            advertisedURL: advertise ?? env["CHAMADE_ADVERTISE"], tls: tls,
            endedRetentionSeconds: try setting(endedRetention, "CHAMADE_ENDED_RETENTION", 3600),
            maxCallsPerKey: try setting(maxCallsPerKey, "CHAMADE_MAX_CALLS_PER_KEY", 1000),
            rtpPorts: Self.portRange(try setting(rtpPorts, "CHAMADE_RTP_PORTS", "20000-29999"))!,
            rtpTimeoutSeconds: try setting(rtpTimeout, "CHAMADE_RTP_TIMEOUT", 10), sip: try sipSettings(),
            tts: try setting(tts, "CHAMADE_TTS", "espeak") == "espeak",
            stt: try setting(stt, "CHAMADE_STT", "pocketsphinx") == "pocketsphinx",
            sttWorkers: try setting(sttWorkers, "CHAMADE_STT_WORKERS", 2),
            sttRecognizers: try setting(sttRecognizers, "CHAMADE_STT_RECOGNIZERS", 8))
        configuration.cluster = try clusterConfiguration(port: configuration.port)
        var logger = Logger(label: "chamade")
        logger.logLevel = .notice
        let server = ChamadeServer(engine: Engine(), configuration: configuration, logger: logger)
        let scheme = tls == nil ? "http" : "https"
        do {
            try await server.run { port in
                // Straight to the file descriptor: a supervisor waits for this line.
                FileHandle.standardOutput.write(Data("listening on \(scheme)://\(host):\(port)\n".utf8))
            } onSIPListening: { address in
                FileHandle.standardOutput.write(Data("sip listening on \(address)\n".utf8))
            }
        } catch {
            throw RunFailure(description: "\(error)")
        }
    }
}

struct MCPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "The Model Context Protocol server over stdio, a client of a running chamade serve (SPEC §8)."
    )

    @Option(name: .long, help: "The server's base URL (default http://127.0.0.1:8787; CHAMADE_URL).")
    var url: String?
    @Option(name: .customLong("api-key"), help: "API key (CHAMADE_API_KEY, else CHAMADE_API_KEYS' first key).")
    var apiKey: String?

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        let url = url ?? env["CHAMADE_URL"] ?? "http://127.0.0.1:8787"
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw ValidationError("--url must start with http:// or https://")
        }
        guard let key = apiKey ?? env["CHAMADE_API_KEY"] ?? env["CHAMADE_API_KEYS"]?.split(separator: ",").first.map(String.init)
        else { throw ValidationError("give --api-key (or CHAMADE_API_KEY)") }
        // stdout carries the protocol only: logs go to stderr.
        var logger = Logger(label: "chamade-mcp") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .notice
        do {
            try await MCPBridge.run(url: url, apiKey: key, logger: logger)
        } catch {
            throw RunFailure(description: "mcp: \(error)")
        }
    }
}

struct LoadTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadtest",
        abstract: "N agents over real WebSockets against a running server: frames lost, agent-to-agent latency, late ticks."
    )

    @Option(name: .long, help: "The server's base URL.")
    var url: String = "http://127.0.0.1:8787"
    @Option(name: .customLong("api-key"), help: "API key (default: CHAMADE_API_KEYS' first key).")
    var apiKey: String?
    @Option(name: .long, help: "Agents.")
    var agents: Int = 10
    @Option(name: .long, help: "Rooms (agents are spread round robin).")
    var rooms: Int = 1
    @Option(name: .long, help: "Each agent's rate in Hz (both directions).")
    var rate: Int = 48000
    @Option(name: .long, help: "Seconds of streaming.")
    var seconds: Double = 10
    @Option(name: .long, help: "The rooms' platform (default discord: rooms of agents only).")
    var platform: String = "discord"
    @Option(name: .customLong("meeting-url"), help: "The rooms' meeting URL, {room} replaced by the room's index (e.g. sip:echo{room}@127.0.0.1:5070 with an echoing peer).")
    var meetingURL: String?
    @Option(name: .long, help: "Soak for SECONDS instead: agents join and leave all the time (see --churn); the server's footprint is sampled every 10 s.")
    var soak: Double?
    @Option(name: .long, help: "With --soak: agents replaced per minute.")
    var churn: Int = 60
    @Flag(name: .long, help: "Print one JSON object instead of text.")
    var json = false

    func validate() throws {
        guard agents >= 1, rooms >= 1, rooms <= agents else { throw ValidationError("need --agents ≥ --rooms ≥ 1") }
        if let soak { guard soak >= 20 else { throw ValidationError("--soak needs at least 20 seconds") } }
        guard churn >= 0 else { throw ValidationError("--churn must be 0 or more") }
        guard SampleRate.isSupported(rate) else { throw ValidationError("--rate \(rate): unsupported sample rate") }
        guard seconds > 0 else { throw ValidationError("--seconds must be positive") }
    }

    func run() async throws {
        guard let key = apiKey ?? ProcessInfo.processInfo.environment["CHAMADE_API_KEYS"]?.split(separator: ",").first.map(String.init)
        else { throw ValidationError("give --api-key (or CHAMADE_API_KEYS)") }
        let options = LoadTest.Options(
            url: url, apiKey: key, agents: agents, rooms: rooms, rate: try SampleRate(hertz: rate), seconds: seconds,
            platform: platform, meetingURL: meetingURL)
        if let soak {
            var base = options
            base.seconds = soak
            try await runSoak(Soak.Options(base: base, churnPerMinute: churn))
            return
        }
        let report: LoadTest.Report
        do {
            report = try await LoadTest.run(options) { line in
                if !json { FileHandle.standardError.write(Data((line + "\n").utf8)) }
            }
        } catch {
            throw RunFailure(description: "\(error)")
        }
        if json {
            try printJSON(report)
            return
        }
        let r = report
        print("agents \(r.agents) in \(r.rooms) rooms at \(r.rate) Hz for \(r.seconds) s")
        print("frames expected \(r.frames_expected), received \(r.frames_received), lost \(r.frames_lost)")
        print("agent → agent latency ms: p50 \(String(format: "%.1f", r.latency_ms.p50))  p99 \(String(format: "%.1f", r.latency_ms.p99))  max \(String(format: "%.1f", r.latency_ms.max)) (\(r.clicks_detected) of the clicks heard)")
        print("server late ticks \(r.server_late_ticks.map(String.init) ?? "?"), frames dropped \(r.server_frames_dropped.map(String.init) ?? "?"), connect failures \(r.connect_failures)")
    }

    func runSoak(_ options: Soak.Options) async throws {
        let r: Soak.Report
        do {
            r = try await Soak.run(options) { line in
                if !json { FileHandle.standardError.write(Data((line + "\n").utf8)) }
            }
        } catch {
            throw RunFailure(description: "\(error)")
        }
        if json {
            try printJSON(r)
            return
        }
        let f = { (v: Double) in String(format: "%.1f", v) }
        print("soak: \(r.agents) agents in \(r.rooms) rooms for \(r.seconds) s, \(r.churn_per_minute) replaced a minute: \(r.calls_created) calls, \(r.connect_failures) failures")
        print("well-behaved frames expected \(r.frames_expected), received \(r.frames_received), lost \(r.frames_lost); slow readers got \(r.slow_reader_frames_received), \(r.slow_readers_closed) closed by the server")
        print("marks \(r.marks_answered)/\(r.marks_sent) answered, clears \(r.clears_answered)/\(r.clears_sent)")
        print("\(r.late_blocks_dropped) blocks the agents could not send in time dropped (at \(r.late_block_times_s.map { f($0) }.joined(separator: ", ")) s)")
        print("late ticks \(r.late_ticks); latency p99 first minute \(f(r.latency_p99_first_minute_ms)) ms, last minute \(f(r.latency_p99_last_minute_ms)) ms")
        print("RSS after warm-up \(f(r.rss_after_warmup_mb)) MB, drift \(f(r.rss_drift_percent)) % (second half against first), swing \(f(r.rss_swing_percent)) %; \(r.create_retries) creates retried")
        print("baseline: RSS \(f(r.baseline.rss_mb)) MB, \(r.baseline.threads) threads, \(r.baseline.fds) fds; at the end: RSS \(f(r.final.rss_mb)) MB, \(r.final.threads) threads, \(r.final.fds) fds")
    }
}

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Rooms of participants at 8/16/24/48 kHz on the real 20 ms clock: tick time, lateness, CPU, allocations."
    )

    @Option(name: .long, help: "Participants per room (rates cycle through 8, 16, 24, 48 kHz).")
    var participants: Int = 10
    @Option(name: .long, help: "Talkers per room (default: all).")
    var talkers: Int?
    @Option(name: .long, help: "Receiving participants per room (default: all).")
    var receivers: Int?
    @Option(name: .long, help: "Rooms.")
    var rooms: Int = 1
    @Option(name: .long, help: "Seconds to measure (after a one-second warm-up).")
    var seconds: Double = 10
    @Flag(name: .long, help: "Print one JSON object instead of text.")
    var json = false
    @Option(name: .long, help: "Write an SVG of the tick-time histogram and the per-second p99.")
    var plot: String?
    @Option(name: .long, help: "Platform legs instead of agents: N RTP legs in --rooms rooms, fed 50 packets/s each, sending their mix-minus back.")
    var legs: Int?
    @Option(name: .long, help: "Leg codec: opus, pcmu or pcma (with --legs).")
    var codec: String = "opus"
    @Option(name: .long, help: "talk (every leg talks) or half (every leg talks 1 s, silent 1 s) (with --legs).")
    var mode: String = "talk"
    @Option(name: .customLong("leg-ports"), help: "Local RTP ports of the legs, LOW-HIGH; leg i gets LOW+2i (with --legs).")
    var legPorts: String = "40000-49999"
    @Option(name: .customLong("leg-peer"), help: "HOST:PORT: leg i sends to PORT+2i and outside senders feed it (default: the bench feeds the legs itself).")
    var legPeer: String?
    @Option(name: .customLong("opus-complexity"), help: "Opus encoder complexity of the legs, 0-10 (with --legs).")
    var opusComplexity: Int = 5

    func validate() throws {
        guard participants >= 1 else { throw ValidationError("--participants must be at least 1") }
        guard rooms >= 1 else { throw ValidationError("--rooms must be at least 1") }
        guard seconds > 0 else { throw ValidationError("--seconds must be positive") }
        if let talkers, talkers < 0 { throw ValidationError("--talkers must not be negative") }
        if let receivers, receivers < 0 { throw ValidationError("--receivers must not be negative") }
        if let legs, legs < 1 { throw ValidationError("--legs must be at least 1") }
        guard MediaCodec(rawValue: codec) != nil else { throw ValidationError("--codec must be opus, pcmu or pcma") }
        guard LegBench.Mode(rawValue: mode) != nil else { throw ValidationError("--mode must be talk or half") }
        guard ServeCommand.portRange(legPorts) != nil else { throw ValidationError("--leg-ports must be LOW-HIGH within 1024-65535") }
        guard (0...10).contains(opusComplexity) else { throw ValidationError("--opus-complexity must be 0 to 10") }
        if let legPeer, Self.endpoint(legPeer) == nil { throw ValidationError("--leg-peer must be IPv4:PORT") }
    }

    static func endpoint(_ text: String) -> Endpoint? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else { return nil }
        return Endpoint(host: String(text[..<colon]), port: port)
    }

    func runLegs(_ legs: Int) throws {
        let options = LegBench.Options(
            legs: legs, rooms: rooms, codec: MediaCodec(rawValue: codec)!, mode: LegBench.Mode(rawValue: mode)!,
            ports: ServeCommand.portRange(legPorts)!, peer: legPeer.flatMap(Self.endpoint), seconds: seconds,
            opusComplexity: opusComplexity)
        let r: LegBench.Report
        do {
            r = try LegBench.run(options) { line in if !json { FileHandle.standardError.write(Data((line + "\n").utf8)) } }
        } catch {
            throw RunFailure(description: "\(error)")
        }
        if json {
            try printJSON(r)
            return
        }
        print("\(r.legs) \(r.codec) legs in \(r.rooms) room(s), mode \(r.mode), complexity \(r.opus_complexity), \(String(format: "%.1f", r.seconds)) s")
        print("CPU per leg-tick \(String(format: "%.1f", r.cpu_us_per_leg_tick)) µs (media \(String(format: "%.1f", r.media_cpu_percent)) %, clock \(String(format: "%.1f", r.clock_cpu_percent)) % of a core; process \(String(format: "%.1f", r.process_cpu_percent)) %)")
        print("late ticks \(r.late_ticks), late media steps \(r.late_media_steps); packets in/out per leg-second \(String(format: "%.1f", r.packets_in_per_leg_second)) / \(String(format: "%.1f", r.packets_out_per_leg_second))")
    }

    func run() throws {
        if let legs { return try runLegs(legs) }
        let options = Bench.Options(
            participants: participants, talkers: talkers, receivers: receivers, rooms: rooms, seconds: seconds)
        let report: Bench.Report
        do {
            report = try Bench.run(options) { line in
                if !json { FileHandle.standardError.write(Data((line + "\n").utf8)) }
            }
        } catch {
            throw RunFailure(description: "\(error)")
        }
        if let plot {
            do { try Bench.svg(report).write(toFile: plot, atomically: true, encoding: .utf8) } catch {
                throw RunFailure(description: "cannot write \(plot): \(error.localizedDescription)")
            }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            var object = try JSONSerialization.jsonObject(with: encoder.encode(report)) as! [String: Any]
            object.removeValue(forKey: "histogram_us")
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        let r = report
        print("rooms \(r.rooms) × participants \(r.participants) (talking \(r.talkers), receiving \(r.receivers)), \(r.shards) clock threads, \(String(format: "%.1f", r.seconds)) s")
        print("tick time µs: p50 \(fmt(r.tick_us.p50))  p99 \(fmt(r.tick_us.p99))  p99.9 \(fmt(r.tick_us.p999))  max \(fmt(r.tick_us.max))")
        print("ticks \(r.ticks), late \(r.late_ticks), skipped \(r.skipped_ticks)")
        print("CPU per participant-tick \(String(format: "%.2f", r.cpu_us_per_participant_tick)) µs, head-room \(String(format: "%.1f", r.headroom))×")
        print("converter calls per tick \(String(format: "%.2f", r.converter_calls_per_tick)), clock threads' CPU \(r.clock_cpu_percent >= 0 ? String(format: "%.2f %% of a core", r.clock_cpu_percent) : "unknown")")
        print("frames received \(r.frames_received), dropped \(r.frames_dropped)")
        print("allocations per tick in steady state: \(r.allocation_counting ? String(format: "%.3f", r.allocs_per_tick) : "not counted (no malloc counter)")")
    }

    private func fmt(_ v: Double) -> String { String(format: "%.1f", v) }
}

@main
enum Entry {
    static func main() async {
        do {
            var command = try Chamade.parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let failure as RunFailure {
            fail("chamade: \(failure.description)", code: 1)
        } catch {
            let code = Chamade.exitCode(for: error)
            if code == .success {
                print(Chamade.fullMessage(for: error))
                exit(0)
            }
            // Usage errors: ArgumentParser's own code is 64; the contract says 2, with one line.
            let message = Chamade.message(for: error).split(separator: "\n").first.map(String.init) ?? "bad usage"
            fail("chamade: \(message) (see chamade --help)", code: 2)
        }
    }

    static func fail(_ line: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data((line + "\n").utf8))
        exit(code)
    }
}

/// Prints one JSON object with sorted keys (`--json` of the measuring commands).
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
