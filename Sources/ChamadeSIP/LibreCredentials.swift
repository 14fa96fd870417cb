import CLibre
#if canImport(Glibc)
import Glibc
#endif

/// Digest credentials in memory libre owns, for its authentication handlers.
///
/// libre keeps an authentication handler and its argument as long as any request of a session or
/// registration may be challenged, which can be after our objects are gone (the BYE of a released
/// dialog, the un-REGISTER at stop). So the argument is not one of our objects: it is a block from
/// `mem_zalloc` holding `user\0password\0`, referenced by libre (`aref`) and freed with its last
/// reference.
enum LibreCredentials {
    /// A block for `credentials`, holding one reference (the caller's: drop it with `mem_deref`
    /// once libre has taken its own).
    static func make(_ credentials: SIPCredentials) -> UnsafeMutableRawPointer? {
        let user = Array(credentials.user.utf8), password = Array(credentials.password.utf8)
        guard let block = mem_zalloc(user.count + password.count + 2, nil) else { return nil }
        block.copyMemory(from: user, byteCount: user.count)
        (block + user.count + 1).copyMemory(from: password, byteCount: password.count)
        return block
    }

    /// libre's `sip_auth_h` over such a block.
    static let handler: @convention(c) (
        UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
        UnsafePointer<CChar>?, UnsafeMutableRawPointer?
    ) -> Int32 = { user, password, _, block in
        guard let block else { return EAUTH }
        let u = block.assumingMemoryBound(to: CChar.self)
        guard str_dup(user, u) == 0, str_dup(password, u + strlen(u) + 1) == 0 else { return ENOMEM }
        return 0
    }
}
