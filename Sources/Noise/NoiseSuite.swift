// The Curve25519 suites upstream rathole accepts: cipher ChaChaPoly or AESGCM, hash BLAKE2s, BLAKE2b,
// SHA256 or SHA512 (Noise spec rev 34, sections 12.2 to 12.5), and the sizes they share.

import CRatholeCrypto

/// Sizes and limits common to every suite supported here.
public enum NoiseConstants {
    /// DHLEN for Curve25519: public keys, private keys and DH outputs are 32 bytes.
    public static let dhLength = 32
    /// Key length of both ciphers (ChaCha20-Poly1305 and AES-256-GCM).
    public static let keyLength = 32
    /// Authentication tag appended to every encrypted payload (both ciphers).
    public static let tagLength = 16
    /// The Noise limit on one message (handshake or transport), in bytes.
    public static let maxMessageLength = 65535
    /// Plaintext bytes one transport message can carry: 65535 - 16.
    public static let maxPlaintextLength = 65535 - 16
    /// Length prefix of every message on the wire (u16, little-endian, as rathole frames it).
    public static let frameHeaderLength = 2
}

/// The cipher functions of the suites.
public enum NoiseCipher: String, Sendable, Hashable, CaseIterable {
    /// ChaCha20-Poly1305 (IETF) from OpenSSL; the nonce is 32 zero bits then n little-endian.
    case chaChaPoly = "ChaChaPoly"
    /// AES-256-GCM from OpenSSL (AES-NI); the nonce is 32 zero bits then n big-endian.
    case aesGCM = "AESGCM"
}

/// The hash functions of the suites, each through OpenSSL.
public enum NoiseHash: String, Sendable, Hashable, CaseIterable {
    case blake2s = "BLAKE2s"
    case blake2b = "BLAKE2b"
    case sha256 = "SHA256"
    case sha512 = "SHA512"

    /// HASHLEN: the size of h, ck and every HMAC output.
    public var hashLength: Int {
        switch self {
        case .blake2s, .sha256: return 32
        case .blake2b, .sha512: return 64
        }
    }

    /// BLOCKLEN: what HMAC pads its key to (OpenSSL's HMAC takes it from the digest).
    public var blockLength: Int {
        switch self {
        case .blake2s, .sha256: return 64
        case .blake2b, .sha512: return 128
        }
    }

    /// The OpenSSL digest, fetched once per process.
    var digest: OpaquePointer {
        switch self {
        case .blake2s: return noiseDigestBLAKE2s
        case .blake2b: return noiseDigestBLAKE2b
        case .sha256: return noiseDigestSHA256
        case .sha512: return noiseDigestSHA512
        }
    }
}

private func fetchDigest(_ name: String) -> OpaquePointer {
    guard let md = EVP_MD_fetch(nil, name, nil) else { fatalError("OpenSSL provides no \(name) digest") }
    return md
}

// Fetched digests are immutable and may be shared by every thread (OpenSSL's rule for EVP_MD).
nonisolated(unsafe) private let noiseDigestBLAKE2s = fetchDigest("BLAKE2S-256")
nonisolated(unsafe) private let noiseDigestBLAKE2b = fetchDigest("BLAKE2B-512")
nonisolated(unsafe) private let noiseDigestSHA256 = fetchDigest("SHA256")
nonisolated(unsafe) private let noiseDigestSHA512 = fetchDigest("SHA512")

/// libsodium (X25519, the key generator, base64) must be initialised before use: `sodium_init` also
/// picks the fastest X25519 implementation for this CPU. This is the program's only call: the protocol's
/// SHA-256 (`Digest.sha256`) is the other user of libsodium and needs no set-up. Swift runs a global's
/// initialiser exactly once, thread-safely.
let noiseSodiumInitialised: Bool = sodium_init() >= 0

@inline(__always)
func noiseEnsureLibraries() {
    precondition(noiseSodiumInitialised, "libsodium failed to initialise")
}
