/// An HTTP/1.1 request head (RFC 9112) checked the way the server insists on, before NIO's parser
/// sees it (SPEC §9): a malformed head gets its status and the JSON error body, never silence.
///
/// Strict where laxness is how requests get smuggled or connections get stuck: CRLF line ends
/// only, no whitespace before a colon, no folded lines, one `Host` in HTTP/1.1, one
/// `Content-Length` of digits and never beside `Transfer-Encoding`, `chunked` the only coding.
/// Pure, so that every byte sequence can be fuzzed without a server.
public struct HTTPRequestHead: Sendable, Equatable {
    public enum Body: Sendable, Equatable {
        case none
        case length(Int)
        case chunked
    }

    public var method: String
    public var body: Body
    /// A WebSocket handshake (`Upgrade: websocket`, checked): after it, the bytes are frames.
    public var isUpgrade: Bool
    /// HTTP/1.0 without `Connection: keep-alive`, or `Connection: close`: the connection closes
    /// after the response.
    public var closesAfterResponse: Bool
    /// The head says `Connection: close` itself.
    public var asksToClose: Bool

    /// Why a head was refused: the status and the contract's error code and words.
    public struct Refusal: Error, Sendable, Equatable {
        public var status: Int
        public var code: String
        public var message: String
        init(_ status: Int, _ code: String, _ message: String) { (self.status, self.code, self.message) = (status, code, message) }

        static func bad(_ message: String) -> Refusal { Refusal(400, "invalid_request", message) }
    }

    /// The methods of HTTP (RFC 9110 and PATCH); any other is 501. Which of them a path takes is the
    /// router's to say (405 with `Allow`).
    public static let methods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]

    /// Checks `head`: the request line and the header lines, each ending in CRLF, then the empty
    /// line (CRLF CRLF included).
    public init(parsing head: UnsafeRawBufferPointer, maxBodyBytes: Int) throws(Refusal) {
        var lines: [Range<Int>] = []
        var start = 0
        var i = 0
        let n = head.count
        while i < n {
            let b = head[i]
            if b == 0x0A { throw .bad("a line ends in a bare LF: HTTP lines end in CRLF") }
            if b == 0x0D {
                guard i + 1 < n, head[i + 1] == 0x0A else { throw .bad("a CR not followed by LF") }
                lines.append(start..<i)
                i += 2
                start = i
                continue
            }
            i += 1
        }
        guard start == n, lines.count >= 2, lines.last?.isEmpty == true else { throw .bad("the head does not end in an empty line") }
        lines.removeLast()
        func text(_ r: Range<Int>) -> Substring {
            Substring(String(decoding: UnsafeRawBufferPointer(rebasing: head[r]), as: UTF8.self))
        }

        // Request line: METHOD SP TARGET SP HTTP/x.y
        let requestLine = lines[0]
        let parts = Array(UnsafeRawBufferPointer(rebasing: head[requestLine]).split(separator: 0x20, omittingEmptySubsequences: false))
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw .bad("the request line must be METHOD, one space, the target, one space, the HTTP version")
        }
        guard parts[0].allSatisfy(Self.isTokenByte) else { throw .bad("the method is not a token") }
        let method = String(decoding: parts[0], as: UTF8.self)
        let version = Array(parts[2])
        let prefix = Array("HTTP/".utf8)
        guard version.count == 8, Array(version[0..<5]) == prefix, Self.isDigit(version[5]), version[6] == 0x2E,
            Self.isDigit(version[7])
        else { throw .bad("the HTTP version must be HTTP/1.1 or HTTP/1.0") }
        guard version[5] == 0x31 else {
            throw Refusal(505, "http_version_not_supported", "this server speaks HTTP/1.1 (and 1.0); HTTP/2 and others are not served here")
        }
        let http10 = version[7] == 0x30
        guard parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw .bad("the request target holds a byte that is not visible ASCII (percent-encode it)")
        }
        guard parts[1].first == 0x2F || (parts[1].count == 1 && parts[1].first == 0x2A) || parts[1].starts(with: "http".utf8)
        else { throw .bad("the request target must be a path beginning with /") }
        guard Self.methods.contains(method) else {
            throw Refusal(501, "method_not_implemented", "method \(method.prefix(32)) is not implemented by this server")
        }

        // Header lines: NAME ":" OWS VALUE OWS
        var hosts = 0
        var contentLength: Int?
        var transferEncodings: [Substring] = []
        var connection: [Substring] = []
        var upgrade = false
        var webSocketKeys: [Substring] = []
        var webSocketVersion: Substring?
        for line in lines.dropFirst() {
            let bytes = UnsafeRawBufferPointer(rebasing: head[line])
            guard let first = bytes.first else { throw .bad("an empty header line") }
            if first == 0x20 || first == 0x09 { throw .bad("folded header lines (obs-fold) are not accepted") }
            guard let colon = bytes.firstIndex(of: 0x3A) else { throw .bad("a header line without a colon") }
            let name = UnsafeRawBufferPointer(rebasing: bytes[0..<colon])
            guard !name.isEmpty, name.allSatisfy(Self.isTokenByte) else {
                throw .bad("a header name is empty or not a token (whitespace before the colon is refused)")
            }
            let valueBytes = UnsafeRawBufferPointer(rebasing: bytes[(colon + 1)...])
            guard valueBytes.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                throw .bad("a header value holds a control character")
            }
            let value = text((line.lowerBound + colon + 1)..<line.upperBound).trimmingWhitespace()
            switch String(decoding: name, as: UTF8.self).lowercased() {
            case "host": hosts += 1
            case "content-length":
                guard contentLength == nil else { throw .bad("more than one Content-Length") }
                guard !value.isEmpty, value.utf8.allSatisfy(Self.isDigit) else {
                    throw .bad("Content-Length must be a non-negative decimal number")
                }
                guard value.utf8.count <= 12, let length = Int(value), length <= maxBodyBytes else {
                    throw Refusal(413, "body_too_large", "the request body exceeds 1 MiB (1,048,576 bytes)")
                }
                contentLength = length
            case "transfer-encoding":
                transferEncodings += value.split(separator: ",").map { $0.trimmingWhitespace() }
            case "connection":
                connection += value.lowercased().split(separator: ",").map { $0.trimmingWhitespace() }
            case "upgrade": upgrade = upgrade || value.lowercased().split(separator: ",").contains { $0.trimmingWhitespace() == "websocket" }
            case "sec-websocket-key": webSocketKeys.append(value)
            case "sec-websocket-version": webSocketVersion = value
            default: break
            }
        }
        if !http10 {
            guard hosts == 1 else { throw .bad(hosts == 0 ? "an HTTP/1.1 request needs a Host header" : "more than one Host header") }
        }
        if upgrade {
            // RFC 6455 §4.2.1: GET, a key of 16 base64-encoded bytes, version 13.
            guard method == "GET", webSocketKeys.count == 1, webSocketKeys[0].utf8.count == 24, webSocketKeys[0].hasSuffix("=="),
                webSocketKeys[0].utf8.dropLast(2).allSatisfy(Self.isBase64Byte), webSocketVersion == "13"
            else {
                throw Refusal(
                    400, "invalid_websocket_handshake",
                    "a WebSocket handshake is a GET with one Sec-WebSocket-Key (16 bytes, base64) and Sec-WebSocket-Version: 13")
            }
        }
        var body = Body.none
        if !transferEncodings.isEmpty {
            guard !http10 else { throw .bad("Transfer-Encoding is not HTTP/1.0") }
            guard contentLength == nil else { throw .bad("Content-Length and Transfer-Encoding together") }
            guard transferEncodings.count == 1, transferEncodings[0].lowercased() == "chunked" else {
                throw Refusal(501, "unsupported_transfer_coding", "chunked is the only transfer coding accepted")
            }
            body = .chunked
        } else if let contentLength, contentLength > 0 {
            body = .length(contentLength)
        }
        self.method = method
        self.body = body
        self.isUpgrade = upgrade
        self.asksToClose = connection.contains("close")
        self.closesAfterResponse = (http10 && !connection.contains("keep-alive")) || asksToClose
    }

    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    static func isBase64Byte(_ b: UInt8) -> Bool {
        (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || isDigit(b) || b == 0x2B || b == 0x2F
    }

    /// RFC 9110 tchar.
    static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default: false
        }
    }
}

extension Substring {
    /// Without the spaces and tabs around it (HTTP's optional whitespace).
    func trimmingWhitespace() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}
