import ChamadeEngine
import ChamadeMedia
import NIOConcurrencyHelpers

/// The server's media plane for platform legs: the `MediaRuntime` is started with the first leg and
/// shut down with the last, so a server without legs runs no media thread, and one whose legs have
/// all closed returns to its idle threads and descriptors (SPEC §9).
final class ServerMedia: Sendable {
    private let configuration: ServerConfiguration
    private struct State {
        var runtime: MediaRuntime?
        var legs = 0
    }
    private let state = NIOLockedValueBox(State())

    init(configuration: ServerConfiguration) { self.configuration = configuration }

    /// Opens a leg on `room`, starting the runtime if no leg is open. `ports`, reserved earlier
    /// (and counted then), are consumed.
    func openLeg(
        room: Room, configuration leg: RTPLegConfiguration, ports: RTPPortReservation? = nil,
        onEvent: @escaping @Sendable (RTPLegEvent) -> Void
    ) throws(RTPLegError) -> RTPLeg {
        try state.withTypedLock { (s: inout State) throws(RTPLegError) -> RTPLeg in
            let runtime: MediaRuntime
            if let running = s.runtime { runtime = running } else { runtime = try makeRuntime() }
            s.runtime = runtime
            do throws(RTPLegError) {
                let opened = try runtime.openLeg(room: room, configuration: leg, ports: ports, onEvent: onEvent)
                if ports == nil { s.legs += 1 }
                return opened
            } catch {
                if s.legs == 0 { stop(&s) }
                throw error
            }
        }
    }

    /// Reserves a port pair for a leg to come (a SIP offer); it counts as a leg until it is opened
    /// (then closed with `close`) or given back with `cancel`.
    func reservePorts() throws(RTPLegError) -> RTPPortReservation {
        try state.withTypedLock { (s: inout State) throws(RTPLegError) -> RTPPortReservation in
            let runtime: MediaRuntime
            if let running = s.runtime { runtime = running } else { runtime = try makeRuntime() }
            s.runtime = runtime
            do throws(RTPLegError) {
                let ports = try runtime.reservePorts()
                s.legs += 1
                return ports
            } catch {
                if s.legs == 0 { stop(&s) }
                throw error
            }
        }
    }

    /// Gives back ports reserved and not used by a leg.
    func cancel(_ ports: RTPPortReservation) {
        state.withLockedValue { s in
            s.legs -= 1
            if s.legs == 0 { stop(&s) }
        }
    }

    /// Closes `leg` (RTCP BYE, port back); the last one stops the runtime, which waits for its
    /// workers to finish closing.
    func close(_ leg: RTPLeg) {
        leg.close()
        state.withLockedValue { s in
            s.legs -= 1
            if s.legs == 0 { stop(&s) }
        }
    }

    /// Stops the runtime whatever is open (server shutdown).
    func shutdown() { state.withLockedValue { stop(&$0) } }

    private func stop(_ s: inout State) {
        s.runtime?.shutdown()
        s.runtime = nil
        s.legs = 0
    }

    /// Legs bind the server's address when it is an IPv4 literal (`localhost` is 127.0.0.1), else all
    /// addresses; all addresses, too, when SIP listens on another address than HTTP (a SIP leg's
    /// SDP then names the SIP address).
    private func makeRuntime() throws(RTPLegError) -> MediaRuntime {
        let host = configuration.host == "localhost" ? "127.0.0.1" : configuration.host
        let sipElsewhere = configuration.sip.map { $0.host != host } ?? false
        let bind = Endpoint(host: host, port: 0) != nil && !sipElsewhere ? host : "0.0.0.0"
        return try MediaRuntime(configuration: .init(bindAddress: bind, ports: configuration.rtpPorts))
    }
}
