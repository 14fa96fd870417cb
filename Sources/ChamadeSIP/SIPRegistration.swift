import CLibre
#if canImport(Glibc)
import Glibc
#endif

/// One `--sip-register` address of record (libre's `sipreg`), on the SIP thread only.
///
/// libre does the protocol: the digest answer to a challenge, the refresh before expiry, and on a
/// failure a retry after a back-off that grows with each failure (30 s doubling up to 30 min, with
/// jitter). This keeps the state the API shows. Released (unregistering) at stop.
final class Registration {
    unowned let stack: SIPStack
    let index: Int
    let uri: SIPURI
    private var reg: OpaquePointer?

    init(stack: SIPStack, index: Int, uri: SIPURI) {
        self.stack = stack
        self.index = index
        self.uri = uri
    }

    func start() {
        let registrar = "sip:" + uri.host + (uri.port.map { ":\($0)" } ?? "")
        let arg = Unmanaged.passUnretained(self).toOpaque()
        let secret = stack.credentials(forHost: uri.host).flatMap(LibreCredentials.make)
        defer { if let secret { _ = mem_deref(secret) } }
        let err = clibre_sipreg_register(
            &reg, stack.sipHandle, registrar, uri.description, nil, uri.description, stack.configuration.registrationSeconds,
            uri.user.isEmpty ? "chamade" : uri.user, secret == nil ? nil : LibreCredentials.handler, secret,
            { err, msg, arg in
                let r = Unmanaged<Registration>.fromOpaque(arg!).takeUnretainedValue()
                let status = Int(msg?.pointee.scode ?? 0)
                let state: SIPRegistrationStatus.State = err == 0 && (200..<300).contains(status) ? .registered : .failed
                r.stack.setRegistration(r.index, SIPRegistrationStatus(uri: r.uri.description, state: state, lastStatus: status))
            }, arg)
        if err != 0 {
            stack.setRegistration(index, SIPRegistrationStatus(uri: uri.description, state: .failed, lastStatus: 0))
        }
    }

    func release() {
        if let reg { _ = mem_deref(UnsafeMutableRawPointer(reg)) }
        reg = nil
    }
}
