import CRatholeRing
import Glibc

/// Fills `buffer` with cryptographically secure random bytes (nonces, websocket keys and masks)
/// straight from the kernel's generator: no library state, safe from every thread.
public func fillSecureRandom(_ buffer: UnsafeMutableRawBufferPointer) {
    var filled = 0
    while filled < buffer.count {
        let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[filled...])
        do {
            filled += try systemCall("getrandom") { getrandom(rest.baseAddress, rest.count, 0) }
        } catch {
            preconditionFailure("the kernel's random generator failed: \(error)")
        }
    }
}
