// Computing digests: SHA-256 of names and tokens (libsodium's, which needs no set-up: OpenSSL's
// one-shot SHA256 would load its provider tables, 2 MB of resident pages in a process that may
// never use OpenSSL otherwise), and random nonces. Kept apart from the pure codec, which only moves
// the 32 bytes around.

import CRatholeCrypto
import DataPlane

extension Digest {
    /// SHA-256 of raw bytes.
    public static func sha256(_ raw: UnsafeRawBufferPointer) -> Digest {
        var s: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        Swift.withUnsafeMutableBytes(of: &s) { out in
            _ = crypto_hash_sha256(
                out.baseAddress!.assumingMemoryBound(to: UInt8.self),
                raw.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(raw.count))
        }
        return Digest(storage: s)
    }

    /// SHA-256 of a byte collection.
    public static func sha256(_ bytes: some Collection<UInt8>) -> Digest {
        withContiguousBytes(bytes) { sha256($0) }
    }

    /// The digest that names a service on the wire: sha256(service name as UTF-8).
    public static func service(named name: String) -> Digest {
        sha256(Array(name.utf8))
    }

    /// What a client proves it knows the token with: sha256(token bytes || 32 nonce bytes). The same
    /// value is the session key that the client's data channels present.
    public static func auth(token: some Collection<UInt8>, nonce: Digest) -> Digest {
        var buf: [UInt8] = []
        buf.reserveCapacity(token.count + Digest.size)
        buf.append(contentsOf: token)
        nonce.withUnsafeBytes { buf.append(contentsOf: $0) }
        return sha256(buf)
    }

    /// `auth(token:nonce:)` with the token's UTF-8 bytes.
    public static func auth(token: String, nonce: Digest) -> Digest {
        auth(token: Array(token.utf8), nonce: nonce)
    }

    /// 32 cryptographically secure random bytes (the server's nonce).
    public static func random() -> Digest {
        var s: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        Swift.withUnsafeMutableBytes(of: &s) { fillSecureRandom($0) }
        return Digest(storage: s)
    }
}
