import Foundation
import HTTPTypes

/// The server's API keys and how a request presents one (SPEC §3, §4).
///
/// Comparison takes the same time whichever key matches and however much of it matches: every
/// configured key is compared over its whole length, so the response time says nothing about a
/// guessed key's prefix.
struct APIKeys: Sendable {
    private let keys: [[UInt8]]

    init(_ keys: [String]) { self.keys = keys.map { Array($0.utf8) } }

    /// The configured key equal to `candidate`, compared in constant time, or nil.
    func match(_ candidate: String?) -> String? {
        guard let candidate else { return nil }
        let given = Array(candidate.utf8)
        var found: [UInt8]?
        for key in keys where Self.constantTimeEqual(key, given) { found = key }
        return found.map { String(decoding: $0, as: UTF8.self) }
    }

    /// Equal bytes, in a time that depends only on the lengths.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        let n = max(a.count, b.count)
        for i in 0..<n {
            let x = i < a.count ? a[i] : 0
            let y = i < b.count ? b[i] : 0
            difference |= x ^ y
        }
        return difference == 0 && a.count == b.count
    }

    static let apiKeyHeader = HTTPField.Name("X-API-Key")!

    /// The key a request presents: `X-API-Key`, else `Authorization: Bearer`, else (WebSockets only,
    /// where browsers cannot set headers) the `api_key` query parameter.
    static func presented(in head: HTTPRequest, allowQuery: Bool) -> String? {
        if let key = head.headerFields[apiKeyHeader] { return key }
        if let auth = head.headerFields[.authorization] {
            let parts = auth.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                return parts[1].trimmingCharacters(in: .whitespaces)
            }
        }
        guard allowQuery, let path = head.path, let q = path.firstIndex(of: "?") else { return nil }
        return URLComponents(string: String(path[q...]))?.queryItems?.first { $0.name == "api_key" }?.value
    }
}
