/// A plain RTP leg's `meeting_url` (SPEC §6):
/// `rtp://HOST:PORT?codec=opus|pcmu|pcma[&pt=N][&dtmf_pt=N][&name=Speaker]`.
public struct RTPURL: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var codec: MediaCodec
    public var payloadType: UInt8
    public var telephoneEventPayloadType: UInt8
    /// The leg's speaker name (transcripts), default `Meeting`.
    public var name: String

    /// Why a URL was refused, in words for the `invalid_meeting_url` error.
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    public init(parsing text: String) throws(Invalid) {
        func fail(_ why: String) -> Invalid { Invalid(description: why) }
        guard text.lowercased().hasPrefix("rtp://") else { throw fail("an rtp meeting_url starts with rtp://") }
        let rest = text.dropFirst(6)
        let (authority, query) = rest.firstIndex(of: "?").map { (rest[..<$0], rest[rest.index(after: $0)...]) } ?? (rest, "")
        guard let colon = authority.lastIndex(of: ":"), !authority[..<colon].isEmpty else {
            throw fail("rtp://HOST:PORT needs a host and a port")
        }
        var host = String(authority[..<colon])
        if host.hasPrefix("[") { throw fail("IPv6 addresses are not supported for RTP legs") }
        host = host.removingPercentEncoding() ?? host
        guard let port = Int(authority[authority.index(after: colon)...]), (1...65535).contains(port) else {
            throw fail("the port must be 1-65535")
        }
        var codec: MediaCodec?
        var pt: Int?
        var dtmf = 101
        var name = "Meeting"
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(kv[0])
            let value = kv.count > 1 ? (String(kv[1]).removingPercentEncoding() ?? String(kv[1])) : ""
            switch key {
            case "codec":
                guard let c = MediaCodec(rawValue: value.lowercased()) else { throw fail("codec must be opus, pcmu or pcma") }
                codec = c
            case "pt":
                guard let n = Int(value), (0...127).contains(n) else { throw fail("pt must be 0-127") }
                pt = n
            case "dtmf_pt":
                guard let n = Int(value), (0...127).contains(n) else { throw fail("dtmf_pt must be 0-127") }
                dtmf = n
            case "name":
                guard !value.isEmpty, value.unicodeScalars.count <= 100 else { throw fail("name must be 1-100 characters") }
                name = value
            default:
                break
            }
        }
        guard let codec else { throw fail("codec is required: opus, pcmu or pcma") }
        let payload = pt ?? Int(codec.defaultPayloadType)
        guard payload != dtmf else { throw fail("pt and dtmf_pt must differ") }
        (self.host, self.port, self.codec, self.payloadType, self.telephoneEventPayloadType, self.name) =
            (host, port, codec, UInt8(payload), UInt8(dtmf), name)
    }
}

extension String {
    /// `%XX` escapes decoded (UTF-8); nil when an escape is malformed.
    fileprivate func removingPercentEncoding() -> String? {
        var bytes: [UInt8] = []
        var it = utf8.makeIterator()
        while let b = it.next() {
            if b == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(), let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16)
                else { return nil }
                bytes.append(v)
            } else if b == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else {
                bytes.append(b)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
