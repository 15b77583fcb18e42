// The cryptographic functions of the suite 25519_ChaChaPoly_BLAKE2s, all from libraries:
// X25519 and ChaCha20-Poly1305 (IETF) from libsodium, BLAKE2s-256 and HMAC from OpenSSL.
// HKDF is the Noise spec's construction over that HMAC.

import CRatholeCrypto

/// Sizes and limits of the Noise suites supported here.
public enum NoiseConstants {
    /// DHLEN for Curve25519: public keys, private keys and DH outputs are 32 bytes.
    public static let dhLength = 32
    /// HASHLEN for BLAKE2s.
    public static let hashLength = 32
    /// Key length of ChaCha20-Poly1305.
    public static let keyLength = 32
    /// Authentication tag appended to every encrypted payload.
    public static let tagLength = 16
    /// The Noise limit on one message (handshake or transport), in bytes.
    public static let maxMessageLength = 65535
    /// Plaintext bytes one transport message can carry: 65535 - 16.
    public static let maxPlaintextLength = 65535 - 16
    /// Length prefix of every message on the wire (u16, little-endian, as rathole frames it).
    public static let frameHeaderLength = 2
}

/// libsodium must be initialised before use: `sodium_init` also picks the fastest ChaCha20 and
/// Poly1305 implementations for this CPU. This is the program's only call: Noise is the only user of
/// libsodium. Swift runs a global's initialiser exactly once, thread-safely.
let noiseSodiumInitialised: Bool = sodium_init() >= 0

@inline(__always)
func noiseEnsureLibraries() {
    precondition(noiseSodiumInitialised, "libsodium failed to initialise")
}

/// BLAKE2s-256 from OpenSSL, fetched once.
nonisolated(unsafe) let noiseBlake2s: OpaquePointer = {
    if let md = EVP_MD_fetch(nil, "BLAKE2S-256", nil) { return md }
    guard let md = EVP_blake2s256() else { fatalError("OpenSSL provides no BLAKE2s-256 digest") }
    return md
}()

enum NoisePrimitives {
    // MARK: BLAKE2s

    /// HASH(a || b) with BLAKE2s-256.
    static func hash(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: NoiseConstants.hashLength) { out, count in
            guard let ctx = EVP_MD_CTX_new() else { fatalError("OpenSSL: EVP_MD_CTX_new failed") }
            defer { EVP_MD_CTX_free(ctx) }
            var ok = EVP_DigestInit_ex(ctx, noiseBlake2s, nil) == 1
            if ok, a.count > 0 { ok = EVP_DigestUpdate(ctx, a.baseAddress, a.count) == 1 }
            if ok, b.count > 0 { ok = EVP_DigestUpdate(ctx, b.baseAddress, b.count) == 1 }
            var len: UInt32 = 0
            if ok { ok = EVP_DigestFinal_ex(ctx, out.baseAddress, &len) == 1 }
            precondition(ok && len == UInt32(NoiseConstants.hashLength), "OpenSSL: BLAKE2s digest failed")
            count = NoiseConstants.hashLength
        }
    }

    static func hash(_ a: [UInt8], _ b: [UInt8] = []) -> [UInt8] {
        a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in hash(pa, pb) } }
    }

    // MARK: HMAC and HKDF

    /// HMAC-BLAKE2s(key, data) via OpenSSL's one-shot HMAC (block length 64, as the spec requires).
    static func hmac(key: [UInt8], data: [UInt8]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: NoiseConstants.hashLength) { out, count in
            var len: UInt32 = 0
            let r = key.withUnsafeBytes { k in
                data.withUnsafeBytes { d in
                    HMAC(noiseBlake2s, k.baseAddress, Int32(k.count),
                         d.baseAddress?.assumingMemoryBound(to: UInt8.self), d.count,
                         out.baseAddress, &len)
                }
            }
            precondition(r != nil && len == UInt32(NoiseConstants.hashLength), "OpenSSL: HMAC-BLAKE2s failed")
            count = NoiseConstants.hashLength
        }
    }

    /// HKDF(chaining_key, input_key_material, num_outputs) from the Noise spec (section 4.3).
    /// Returns 2 or 3 outputs of HASHLEN bytes.
    static func hkdf(chainingKey: [UInt8], inputKeyMaterial: [UInt8], outputs: Int) -> [[UInt8]] {
        precondition(outputs == 2 || outputs == 3)
        var tempKey = hmac(key: chainingKey, data: inputKeyMaterial)
        defer { noiseZero(&tempKey) }
        let out1 = hmac(key: tempKey, data: [0x01])
        var input = out1
        input.append(0x02)
        let out2 = hmac(key: tempKey, data: input)
        noiseZero(&input)
        if outputs == 2 { return [out1, out2] }
        input = out2
        input.append(0x03)
        let out3 = hmac(key: tempKey, data: input)
        noiseZero(&input)
        return [out1, out2, out3]
    }

    // MARK: X25519

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
