#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 address and UDP port: where a leg listens and where it sends.
///
/// IPv4 only: the plain-RTP and SIP peers this bridge serves (PBXs, media gateways, loopback test
/// peers) speak it, and one address family keeps the socket code to one `sockaddr_in`.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    /// The address in host byte order (127.0.0.1 is 0x7F000001).
    public var address: UInt32
    public var port: UInt16

    public init(address: UInt32, port: UInt16) { (self.address, self.port) = (address, port) }

    /// `a.b.c.d` and a port; nil when `host` is not a dotted IPv4 literal.
    public init?(host: String, port: Int) {
        guard (0...65535).contains(port) else { return nil }
        var a = in_addr()
        guard inet_pton(AF_INET, host, &a) == 1 else { return nil }
        self.init(address: UInt32(bigEndian: a.s_addr), port: UInt16(port))
    }

    /// `host` resolved (an IPv4 literal, or a name through the system resolver: blocking, so never
    /// on a media or clock thread) and a port.
    public static func resolve(host: String, port: Int) -> Endpoint? {
        if let literal = Endpoint(host: host, port: port) { return literal }
        guard (0...65535).contains(port) else { return nil }
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        guard let sa = first.pointee.ai_addr else { return nil }
        let address = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) }
        return Endpoint(address: address, port: UInt16(port))
    }

    public var host: String {
        "\(address >> 24).\((address >> 16) & 0xFF).\((address >> 8) & 0xFF).\(address & 0xFF)"
    }

    public var description: String { "\(host):\(port)" }

    /// The same address with another port (RTCP is RTP's port + 1).
    public func with(port: UInt16) -> Endpoint { Endpoint(address: address, port: port) }

    var sockaddr: sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = address.bigEndian
        return sa
    }

    init(_ sa: sockaddr_in) {
        self.init(address: UInt32(bigEndian: sa.sin_addr.s_addr), port: UInt16(bigEndian: sa.sin_port))
    }
}
