// Cryptographically secure random bytes (the server's nonces, websocket keys and masks) from
// OpenSSL's generator: seeded by the kernel, safe to call from every thread, no setup.

import CRatholeCrypto

/// Fills `buffer` with cryptographically secure random bytes.
func fillSecureRandom(_ buffer: UnsafeMutableRawBufferPointer) {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    let ok = RAND_bytes(base.assumingMemoryBound(to: UInt8.self), Int32(buffer.count)) == 1
    precondition(ok, "OpenSSL's random generator failed")
}
