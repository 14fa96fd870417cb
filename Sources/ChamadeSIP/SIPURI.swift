/// A `sip:` meeting URL (SPEC §6): `sip:USER@HOST[:PORT]`, USER optional, parameters after `;`
/// kept. Checked before any room exists; libre parses it again when it sends.
public struct SIPURI: Sendable, Equatable, CustomStringConvertible {
    public var user: String
    public var host: String
    public var port: Int?
    /// `;…` parameters and `?…` headers, as written.
    public var rest: String

    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    public init(parsing text: String) throws(Invalid) {
        func fail(_ why: String) -> Invalid { Invalid(description: why) }
        guard text.utf8.count <= 1024 else { throw fail("a sip meeting_url is at most 1024 bytes") }
        guard text.lowercased().hasPrefix("sip:") else { throw fail("a sip meeting_url is sip:USER@HOST[:PORT]") }
        var body = Substring(text.dropFirst(4))
        guard !body.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" || $0 == "\t" || $0 == "<" || $0 == ">" || $0 == "\"" })
        else { throw fail("a sip meeting_url has no spaces, quotes or angle brackets") }
        let end = body.firstIndex { $0 == ";" || $0 == "?" } ?? body.endIndex
        rest = String(body[end...])
        body = body[..<end]
        if let at = body.lastIndex(of: "@") {
            user = String(body[..<at])
            guard !user.isEmpty else { throw fail("the user before @ is empty") }
            body = body[body.index(after: at)...]
        } else {
            user = ""
        }
        if body.hasPrefix("[") { throw fail("IPv6 addresses are not supported") }
        if let colon = body.lastIndex(of: ":") {
            guard let p = Int(body[body.index(after: colon)...]), (1...65535).contains(p) else {
                throw fail("the port must be 1-65535")
            }
            port = p
            body = body[..<colon]
        } else {
            port = nil
        }
        guard !body.isEmpty, body.utf8.allSatisfy({ Self.hostByte($0) }) else {
            throw fail("the host must be a name or an IPv4 address")
        }
        host = String(body)
    }

    private static func hostByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || b == 0x2D || b == 0x2E
    }

    public var description: String {
        "sip:" + (user.isEmpty ? "" : user + "@") + host + (port.map { ":\($0)" } ?? "") + rest
    }
}
