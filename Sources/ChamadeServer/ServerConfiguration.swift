public import ChamadeCluster
public import ChamadeSIP

/// Everything `chamade serve` can be told (SPEC §2, §9). Each field has a flag and an environment
/// variable in the executable; a gateway that embeds the server sets them here.
public struct ServerConfiguration: Sendable {
    /// Address and port to listen on (port 0: any free port, reported to `onListening`).
    public var host: String
    public var port: Int
    /// The API keys; a call belongs to the key that created it.
    public var apiKeys: [String]
    /// The URL clients reach this server at, used for `text_ws_url` (never the request's `Host`).
    /// Default: the listening address, `http://` or `https://`.
    public var advertisedURL: String?
    /// PEM certificate chain and private key: with both, the server speaks HTTPS and WSS only.
    public var tls: TLSFiles?
    /// Seconds an ended call stays readable before it is forgotten (404).
    public var endedRetentionSeconds: Double
    /// Calls not ended a key may hold at once (429 `too_many_calls` beyond).
    public var maxCallsPerKey: Int
    /// WebSockets one call may have open at once (409 `too_many_streams` beyond).
    public var maxStreamsPerCall: Int
    /// Participants per room.
    public var roomCapacity: Int
    /// Seconds an HTTP connection may stay idle before it is closed.
    public var idleTimeoutSeconds: Int
    /// Local ports of platform legs (`--rtp-ports`): RTP on even ports, RTCP on the next.
    public var rtpPorts: ClosedRange<Int>
    /// Seconds without RTP or RTCP after which a leg is lost (`--rtp-timeout`).
    public var rtpTimeoutSeconds: Double
    /// The built-in TTS (SPEC §7, espeak-ng): `--tts espeak` (the command's default) or `none`.
    public var tts: Bool
    /// The built-in STT (SPEC §7, PocketSphinx): `--stt pocketsphinx` (the command's default) or
    /// `none`; and its recognizer threads (`--stt-workers`).
    public var stt: Bool
    public var sttWorkers: Int
    /// Decoders at most: talkers recognized at once (`--stt-recognizers`).
    public var sttRecognizers: Int
    /// SIP (SPEC §6): nil is off (`--sip off`), and every `sip` call is refused with
    /// `sip_unavailable`.
    public var sip: SIPSettings?
    /// Several nodes on one Redis (SPEC §10, `--cluster`, `--node-id`): nil is a node of its own.
    public var cluster: ClusterConfiguration?

    /// The SIP user agent's settings (`--sip`, `--sip-route`, `--sip-register`, `--sip-auth`,
    /// `--sip-ring-timeout`).
    public struct SIPSettings: Sendable {
        /// UDP address to listen on (an IPv4 literal; port 0 picks a free one).
        public var host: String
        public var port: Int
        /// Inbound routes: request-URI user → API key; `*` matches any user.
        public var routes: [String: String]
        /// Addresses of record to register.
        public var registrations: [SIPURI]
        /// Digest credentials by host.
        public var credentials: [String: SIPCredentials]
        /// Seconds an inbound call rings before 480, and an outbound INVITE waits for a final answer.
        public var ringTimeoutSeconds: Double

        public init(
            host: String = "127.0.0.1", port: Int = 5060, routes: [String: String] = [:], registrations: [SIPURI] = [],
            credentials: [String: SIPCredentials] = [:], ringTimeoutSeconds: Double = 30
        ) {
            self.host = host
            self.port = port
            self.routes = routes
            self.registrations = registrations
            self.credentials = credentials
            self.ringTimeoutSeconds = ringTimeoutSeconds
        }

        /// The key an INVITE for `user` belongs to, if any route names one.
        public func key(forUser user: String) -> String? { routes[user] ?? routes["*"] }
    }

    public struct TLSFiles: Sendable {
        public var certificatePath: String
        public var privateKeyPath: String
        public init(certificatePath: String, privateKeyPath: String) {
            self.certificatePath = certificatePath
            self.privateKeyPath = privateKeyPath
        }
    }

    public init(
        host: String = "127.0.0.1", port: Int = 8787, apiKeys: [String], advertisedURL: String? = nil,
        tls: TLSFiles? = nil, endedRetentionSeconds: Double = 3600, maxCallsPerKey: Int = 1000,
        maxStreamsPerCall: Int = 8, roomCapacity: Int = 256, idleTimeoutSeconds: Int = 60,
        rtpPorts: ClosedRange<Int> = 20000...29999, rtpTimeoutSeconds: Double = 10, sip: SIPSettings? = nil,
        tts: Bool = false, stt: Bool = false, sttWorkers: Int = 2, sttRecognizers: Int = 8
    ) {
        self.sttRecognizers = sttRecognizers
        self.sip = sip
        self.tts = tts
        self.stt = stt
        self.sttWorkers = sttWorkers
        self.rtpPorts = rtpPorts
        self.rtpTimeoutSeconds = rtpTimeoutSeconds
        self.host = host
        self.port = port
        self.apiKeys = apiKeys
        self.advertisedURL = advertisedURL
        self.tls = tls
        self.endedRetentionSeconds = endedRetentionSeconds
        self.maxCallsPerKey = maxCallsPerKey
        self.maxStreamsPerCall = maxStreamsPerCall
        self.roomCapacity = roomCapacity
        self.idleTimeoutSeconds = idleTimeoutSeconds
    }

    /// Largest HTTP request body (413 beyond).
    public static let maxBodyBytes = 1 << 20
    /// Largest request head: request line plus headers (431 beyond).
    public static let maxHeaderBytes = 16 << 10
    /// A request head must be complete this long after the connection opened or after its first
    /// byte (408 and close beyond): slow-loris connections cannot hold the server's sockets.
    public static let headTimeoutSeconds: Int64 = 10
    /// Largest WebSocket message; beyond it the connection is closed (1009).
    public static let maxMessageBytes = 16 << 20
    /// Unread text replies a WebSocket client may leave queued before it is closed (1008).
    public static let maxQueuedTextBytes = 1 << 20
    /// Marks waiting per call (`too_many_marks` beyond).
    public static let maxPendingMarks = 4096
}
