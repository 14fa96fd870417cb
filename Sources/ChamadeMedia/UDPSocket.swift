import CChamadeShims
#if canImport(Glibc)
import Glibc
#endif

/// Why a socket operation failed: the `errno` and what was being done.
public struct SocketError: Error, Sendable, Hashable, CustomStringConvertible {
    public var operation: String
    public var code: Int32
    public var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// One non-blocking UDP socket bound to a local endpoint, owning its file descriptor (closed in
/// `deinit`).
///
/// Datagrams are read with the kernel's receive timestamp (`SO_TIMESTAMPNS`), so a media thread
/// that drains its sockets once per 20 ms still knows when each packet arrived to the microsecond:
/// the jitter measurement and the jitter buffer see true arrival times, and no thread has to wake
/// for each packet. `receive` and `send` never block; neither allocates.
package struct UDPSocket: ~Copyable {
    package let descriptor: Int32
    /// The address it is bound to (the port the kernel chose when asked for port 0).
    package let local: Endpoint

    package init(binding local: Endpoint) throws(SocketError) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(operation: "socket", code: errno) }
        var on: Int32 = 1
        // A leg's receive buffer holds well over a second of packets between two drains.
        var bufferBytes: Int32 = 256 * 1024
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufferBytes, socklen_t(MemoryLayout<Int32>.size))
        var sa = local.sockaddr
        let bound = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            let code = errno
            close(fd)
            throw SocketError(operation: "bind \(local)", code: code)
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.descriptor = fd
        self.local = Endpoint(actual)
    }

    deinit { close(descriptor) }

    /// One received datagram: its length (possibly truncated to the buffer), source, and kernel
    /// arrival time in ns of CLOCK_REALTIME (0 when the kernel gave none).
    package struct Datagram {
        package var byteCount: Int
        package var truncated: Bool
        package var source: Endpoint
        package var arrivalRealtime: Int64
    }

    /// Reads one datagram into `buffer`; nil when none is waiting (or on an error, which for UDP is
    /// only ever transient: an ICMP report of an earlier send).
    package func receive(into buffer: UnsafeMutableRawBufferPointer) -> Datagram? {
        var source = sockaddr_in()
        var control = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        return withUnsafeMutablePointer(to: &source) { sourcePointer in
            withUnsafeMutableBytes(of: &control) { controlBytes in
                withUnsafeMutablePointer(to: &iov) { iovPointer in
                    var message = msghdr()
                    message.msg_name = UnsafeMutableRawPointer(sourcePointer)
                    message.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
                    message.msg_iov = iovPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    let n = recvmsg(descriptor, &message, Int32(MSG_DONTWAIT))
                    guard n >= 0 else { return nil }
                    var arrival: Int64 = 0
                    var header = cchamade_cmsg_firsthdr(&message)
                    while let h = header {
                        if h.pointee.cmsg_level == SOL_SOCKET && h.pointee.cmsg_type == SO_TIMESTAMPNS {
                            let ts = UnsafeRawPointer(cchamade_cmsg_data(h)!).loadUnaligned(as: timespec.self)
                            arrival = Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
                        }
                        header = cchamade_cmsg_nxthdr(&message, h)
                    }
                    return Datagram(
                        byteCount: n, truncated: message.msg_flags & Int32(MSG_TRUNC) != 0,
                        source: Endpoint(sourcePointer.pointee), arrivalRealtime: arrival)
                }
            }
        }
    }

    /// Sends one datagram; false when the kernel refused it (buffer full, ICMP error pending).
    @discardableResult
    package func send(_ bytes: UnsafeRawBufferPointer, to destination: Endpoint) -> Bool {
        var sa = destination.sockaddr
        let n = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(descriptor, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return n == bytes.count
    }
}
