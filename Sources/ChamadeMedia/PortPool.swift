import ChamadeEngine

/// The local RTP ports legs may use (`--rtp-ports`): even ports for RTP, the odd one above for RTCP
/// (RFC 3550 §11). Hands out pairs round-robin, so a port just released is the last to be reused
/// (late packets of a closed leg do not land in a new one).
final class PortPool: Sendable {
    let range: ClosedRange<Int>
    private let state: Locked<(next: Int, used: Set<Int>)>

    init(range: ClosedRange<Int>) {
        self.range = range
        let first = range.lowerBound % 2 == 0 ? range.lowerBound : range.lowerBound + 1
        state = Locked((first, []))
    }

    /// Pairs in the range.
    var capacity: Int { max(0, (range.upperBound - (range.lowerBound + range.lowerBound % 2)) / 2 + (range.upperBound % 2 == 1 ? 1 : 0)) }

    /// Tries `body` on free RTP ports in turn (it binds the pair and returns nil when the port is
    /// taken by another process) until one works; the port stays reserved until `release`.
    func acquire<T>(_ body: (Int) -> T?) -> T? {
        let first = range.lowerBound + range.lowerBound % 2
        var tried = 0
        while tried < capacity {
            let port: Int? = state.withLock { s in
                var p = s.next
                for _ in 0..<capacity {
                    if p + 1 > range.upperBound { p = first }
                    if !s.used.contains(p) {
                        s.used.insert(p)
                        s.next = p + 2
                        return p
                    }
                    p += 2
                }
                return nil
            }
            guard let port else { return nil }
            if let made = body(port) { return made }
            release(port)
            tried += 1
        }
        return nil
    }

    func release(_ port: Int) { _ = state.withLock { $0.used.remove(port) } }
}
