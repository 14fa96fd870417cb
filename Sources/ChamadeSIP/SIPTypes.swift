#if canImport(Glibc)
import Glibc
#endif

public import ChamadeMedia

/// What the SIP stack needs to know (SPEC §6 "SIP", §2 flags).
public struct SIPConfiguration: Sendable {
    /// The UDP address to listen on (an IPv4 literal; port 0 picks a free one).
    public var host: String
    public var port: UInt16
    /// An inbound call not accepted or refused within this is refused with 480; an outbound INVITE
    /// with no final answer within it is cancelled (`failed` with 408).
    public var ringTimeoutSeconds: Double
    /// Digest credentials by host (`--sip-auth HOST=USER:PASSWORD`): the host of the request URI
    /// (a dialled URI or a registrar).
    public var credentials: [String: SIPCredentials]
    /// Addresses of record to register (`--sip-register sip:USER@REGISTRAR[:PORT]`).
    public var registrations: [SIPURI]
    /// How long a registration asks to last; libre refreshes it before it runs out.
    public var registrationSeconds: UInt32
    /// Whether an INVITE for this request-URI user has somewhere to go (the routes); asked on the
    /// SIP thread, so it must be quick and must not block. No: 404.
    public var accepts: @Sendable (String) -> Bool

    public init(
        host: String = "127.0.0.1", port: UInt16 = 5060, ringTimeoutSeconds: Double = 30,
        credentials: [String: SIPCredentials] = [:], registrations: [SIPURI] = [], registrationSeconds: UInt32 = 600,
        accepts: @escaping @Sendable (String) -> Bool
    ) {
        self.host = host
        self.port = port
        self.ringTimeoutSeconds = ringTimeoutSeconds
        self.credentials = credentials
        self.registrations = registrations
        self.registrationSeconds = registrationSeconds
        self.accepts = accepts
    }
}

public struct SIPCredentials: Sendable, Equatable {
    public var user: String
    public var password: String
    public init(user: String, password: String) { (self.user, self.password) = (user, password) }
}

/// A dialog of the stack: an inbound call (from its INVITE) or an outbound one (from `dial`).
public struct SIPDialogID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "dialog \(rawValue)" }
}

/// The media a dialog negotiated (SDP offer/answer, RFC 3264), in the leg's terms.
public struct SIPMedia: Sendable, Equatable {
    public var codec: MediaCodec
    /// The far end's payload type for the codec (we send with it, too).
    public var payloadType: UInt8
    /// The far end's telephone-event payload type (at the codec's clock if it offers one, else the
    /// one it has) and that clock rate, if it has telephone-event at all.
    public var telephoneEventPayloadType: UInt8?
    public var telephoneEventClockRate: Int?
    /// Where the far end receives RTP (`c=` of the media, else of the session, and the `m=` port).
    public var remote: Endpoint
    /// Whether the far end sends (`sendrecv`/`sendonly`) and receives (`sendrecv`/`recvonly`);
    /// both false is `inactive`. A far end on hold receives nothing from us.
    public var peerSends: Bool
    public var peerReceives: Bool
    /// The far end's `a=ptime`, if given.
    public var packetMilliseconds: Int?

    public init(
        codec: MediaCodec, payloadType: UInt8, telephoneEventPayloadType: UInt8?, telephoneEventClockRate: Int? = nil,
        remote: Endpoint, peerSends: Bool = true, peerReceives: Bool = true, packetMilliseconds: Int? = nil
    ) {
        self.codec = codec
        self.payloadType = payloadType
        self.telephoneEventPayloadType = telephoneEventPayloadType
        self.telephoneEventClockRate = telephoneEventClockRate
        self.remote = remote
        self.peerSends = peerSends
        self.peerReceives = peerReceives
        self.packetMilliseconds = packetMilliseconds
    }
}

/// An INVITE that was routed and has a codec in common with us: 100 and 180 have been sent; the
/// owner answers with `SIPStack.answer` or `reject` (or the ring timeout does, with 480).
public struct SIPIncomingCall: Sendable, Equatable {
    public var id: SIPDialogID
    /// The SIP Call-ID.
    public var callID: String
    /// The From display name, else its user part.
    public var caller: String
    /// The From URI.
    public var fromURI: String
    /// The request URI's user: what the routes match.
    public var user: String
    public var media: SIPMedia
}

/// Why a dialog ended.
public enum SIPEnd: Sendable, Equatable {
    /// The far end sent BYE.
    case remoteHangUp
    /// The caller cancelled before an answer (487 sent).
    case cancelled
    /// An inbound call rang out (480 sent).
    case ringTimeout
    /// The transport gave up (no ACK for our 2xx, no answer to a request); libre's errno.
    case lost(code: Int32)
}

/// What the stack reports, on the SIP thread: the owner must not block in it.
public enum SIPEvent: Sendable, Equatable {
    case incoming(SIPIncomingCall)
    /// A provisional answer (180, 183) to our INVITE.
    case progress(SIPDialogID, status: Int)
    /// A 2xx to our INVITE (ACK sent); the media the answer negotiated.
    case answered(SIPDialogID, callID: String, media: SIPMedia)
    /// Our INVITE failed: its final status (486, 603, 401 without credentials…), 408 when nothing
    /// final came within the ring timeout, 488 when the answer had no codec in common, 503 when
    /// the request could not be sent at all.
    case failed(SIPDialogID, status: Int)
    /// A re-INVITE changed the media (hold, resume, a new address).
    case mediaChanged(SIPDialogID, SIPMedia)
    /// An established or ringing dialog ended from the far end or the network.
    case ended(SIPDialogID, SIPEnd)
    /// A registration's state changed.
    case registration(SIPRegistrationStatus)
}

/// One `--sip-register` address of record and how it stands.
public struct SIPRegistrationStatus: Sendable, Equatable {
    public enum State: String, Sendable, CaseIterable {
        case registering, registered, failed
    }
    public var uri: String
    public var state: State
    /// The last final status from the registrar (0: none yet, or no answer at all).
    public var lastStatus: Int
    public init(uri: String, state: State, lastStatus: Int) { (self.uri, self.state, self.lastStatus) = (uri, state, lastStatus) }
}

/// Counters of SIP traffic (`/metrics`): responses by class (1 to 6) each way, requests each way.
public struct SIPStatistics: Sendable, Equatable {
    public var responsesSent = [Int](repeating: 0, count: 7)
    public var responsesReceived = [Int](repeating: 0, count: 7)
    public var requestsSent = 0
    public var requestsReceived = 0
    public init() {}
}

/// An error of the SIP stack. libre's errno-style codes are kept as `Int32`; no C type.
public enum SIPError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The listen address is not an IPv4 literal.
    case invalidAddress(String)
    /// A libre call failed; `code` is the errno it returned (98 is EADDRINUSE).
    case libre(operation: String, code: Int32)
    /// The stack is not running (never started, or stopped).
    case notRunning

    public var description: String {
        switch self {
        case .invalidAddress(let a): "\(a) is not an IPv4 address"
        case .libre(let op, let code): "\(op) failed: \(String(cString: strerror(code)))"
        case .notRunning: "the SIP stack is not running"
        }
    }
}

