// X25519 from libsodium (the Noise spec's DH functions for Curve25519, rev 34 section 12.1), and the
// byte helpers the Noise types share.

import CRatholeCrypto

enum NoiseX25519 {
    /// DH(private, public): the X25519 shared secret. libsodium refuses (and this throws) when the
    /// result is all zeros, i.e. the public key is a low-order point.
    static func dh(privateKey: UnsafePointer<UInt8>, publicKey: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard publicKey.count == NoiseConstants.dhLength else {
            throw .invalidKey("public key must be \(NoiseConstants.dhLength) bytes, got \(publicKey.count)")
        }
        var result: Int32 = 0
        let shared = [UInt8](unsafeUninitializedCapacity: NoiseConstants.dhLength) { out, count in
            result = publicKey.withUnsafeBufferPointer { pub in
                crypto_scalarmult_curve25519(out.baseAddress!, privateKey, pub.baseAddress!)
            }
            count = NoiseConstants.dhLength
        }
        guard result == 0 else {
            throw .invalidKey("remote public key is a low-order point (all-zero shared secret)")
        }
        return shared
    }

    /// The X25519 public key of a private key (the scalar is clamped by libsodium, as X25519 specifies).
    static func publicKey(privateKey: UnsafePointer<UInt8>) -> [UInt8] {
        noiseEnsureLibraries()
        return [UInt8](unsafeUninitializedCapacity: NoiseConstants.dhLength) { out, count in
            let r = crypto_scalarmult_curve25519_base(out.baseAddress!, privateKey)
            precondition(r == 0, "X25519 base-point multiplication failed")
            count = NoiseConstants.dhLength
        }
    }
}

/// Overwrites a byte array in place with zeros (libsodium's sodium_memzero, which the compiler
/// cannot optimise away).
@inline(__always)
func noiseZero(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { p in
        if let base = p.baseAddress { sodium_memzero(base, p.count) }
    }
}

/// Runs `body` over the bytes of `bytes`, keeping the typed error (the standard library's
/// `withUnsafeBytes` rethrows untyped).
@inline(__always)
func noiseWithBytes<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(NoiseError) -> R) throws(NoiseError) -> R {
    var result: Result<R, NoiseError>?
    bytes.withUnsafeBytes { p in result = Result { () throws(NoiseError) -> R in try body(p) } }
    return try result!.get()
}

/// Builds an array of at most `capacity` bytes in place, keeping the typed error; `body` returns the
/// number of bytes it initialised.
@inline(__always)
func noiseMakeArray(capacity: Int, _ body: (UnsafeMutableRawBufferPointer) throws(NoiseError) -> Int) throws(NoiseError) -> [UInt8] {
    var failure: NoiseError?
    let array = [UInt8](unsafeUninitializedCapacity: max(capacity, 1)) { out, count in
        do throws(NoiseError) {
            count = try body(UnsafeMutableRawBufferPointer(start: out.baseAddress, count: capacity))
        } catch {
            failure = error
            count = 0
        }
    }
    if let failure { throw failure }
    return array
}
