// X25519 key pairs and the key helpers rathole's configuration and `--genkey` need: keys are the raw
// 32-byte X25519 keys in standard, padded base64.

import CRatholeCrypto

/// An X25519 key pair. The private key lives in its own allocation, zeroed when the pair is freed.
public final class NoiseKeyPair: @unchecked Sendable {
    // Immutable after init (only deinit writes), hence @unchecked Sendable.
    private let secret: UnsafeMutablePointer<UInt8>
    /// The 32-byte X25519 public key.
    public let publicKey: [UInt8]

    /// A key pair from a raw 32-byte private key; the public key is derived from it.
    public init(privateKey: [UInt8]) throws(NoiseError) {
        guard privateKey.count == NoiseConstants.dhLength else {
            throw .invalidKey("private key must be \(NoiseConstants.dhLength) bytes, got \(privateKey.count)")
        }
        let secret = UnsafeMutablePointer<UInt8>.allocate(capacity: NoiseConstants.dhLength)
        privateKey.withUnsafeBufferPointer { src in
            secret.initialize(from: src.baseAddress!, count: NoiseConstants.dhLength)
        }
        self.secret = secret
        publicKey = NoiseX25519.publicKey(privateKey: secret)
    }

    /// A key pair from a private key in standard base64 (as in rathole's `local_private_key`).
    public convenience init(base64PrivateKey: String) throws(NoiseError) {
        var raw = try NoiseKeys.decodeKey(base64PrivateKey, what: "private key")
        defer { noiseZero(&raw) }
        try self.init(privateKey: raw)
    }

    private init(generatingWith fill: (UnsafeMutablePointer<UInt8>) -> Void) {
        let secret = UnsafeMutablePointer<UInt8>.allocate(capacity: NoiseConstants.dhLength)
        fill(secret)
        self.secret = secret
        publicKey = NoiseX25519.publicKey(privateKey: secret)
    }

    /// A fresh key pair: 32 random bytes from libsodium's CSPRNG as the private key.
    public static func generate() -> NoiseKeyPair {
        noiseEnsureLibraries()
        return NoiseKeyPair { randombytes_buf($0, NoiseConstants.dhLength) }
    }

    /// A copy of the raw 32-byte private key (for printing it with `--genkey`; avoid elsewhere).
    public var privateKey: [UInt8] {
        Array(UnsafeBufferPointer(start: secret, count: NoiseConstants.dhLength))
    }

    /// The public key in standard padded base64.
    public var publicKeyBase64: String { NoiseKeys.base64Encode(publicKey) }

    /// DH(self.private, publicKey).
    func dh(_ remotePublicKey: [UInt8]) throws(NoiseError) -> [UInt8] {
        try NoiseX25519.dh(privateKey: secret, publicKey: remotePublicKey)
    }

    deinit {
        sodium_memzero(secret, NoiseConstants.dhLength)
        secret.deallocate()
    }
}

/// Base64 coding of keys, public-key derivation and the `--genkey` text.
public enum NoiseKeys {
    /// Standard (RFC 4648, `+/`) padded base64, as rathole writes keys.
    public static func base64Encode(_ bytes: [UInt8]) -> String {
        let variant = Int32(sodium_base64_VARIANT_ORIGINAL)
        let size = sodium_base64_encoded_len(bytes.count, variant)  // includes the NUL terminator
        var text = [CChar](repeating: 0, count: size)
        bytes.withUnsafeBufferPointer { src in
            text.withUnsafeMutableBufferPointer { dst in
                _ = sodium_bin2base64(dst.baseAddress!, size, src.baseAddress, src.count, variant)
            }
        }
        return String(decoding: text.prefix(size - 1).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Decodes standard base64; padding is optional (accepted when correct), surrounding whitespace
    /// is ignored, anything else invalid gives nil.
    public static func base64Decode(_ text: String) -> [UInt8]? {
        var utf8 = Array(text.utf8)
        while let last = utf8.last, last == 0x20 || last == 0x0A || last == 0x0D || last == 0x09 { utf8.removeLast() }
        var start = 0
        while start < utf8.count, utf8[start] == 0x20 || utf8[start] == 0x0A || utf8[start] == 0x0D || utf8[start] == 0x09 { start += 1 }
        let trimmed = utf8[start...]
        if trimmed.isEmpty { return [] }
        let variant = Int32(
            trimmed.contains(UInt8(ascii: "="))
                ? sodium_base64_VARIANT_ORIGINAL
                : sodium_base64_VARIANT_ORIGINAL_NO_PADDING)
        let capacity = trimmed.count / 4 * 3 + 3
        var out = [UInt8](repeating: 0, count: capacity)
        var binLen = 0
        var endPtr: UnsafePointer<CChar>? = nil
        let ok: Bool =
            trimmed.withContiguousStorageIfAvailable { src -> Bool in
                src.withMemoryRebound(to: CChar.self) { chars -> Bool in
                    let r = out.withUnsafeMutableBufferPointer { dst in
                        sodium_base642bin(
                            dst.baseAddress!, capacity, chars.baseAddress!, chars.count,
                            nil, &binLen, &endPtr, variant)
                    }
                    // The whole text must have been consumed.
                    return r == 0 && endPtr == chars.baseAddress! + chars.count
                }
            } ?? false
        guard ok else { return nil }
        out.removeSubrange(binLen...)
        return out
    }

    /// Decodes a 32-byte X25519 key from base64, with an error that names the key (`what`).
    public static func decodeKey(_ text: String, what: String = "key") throws(NoiseError) -> [UInt8] {
        guard let raw = base64Decode(text) else {
            throw .invalidKey("\(what) is not valid base64")
        }
        guard raw.count == NoiseConstants.dhLength else {
            throw .invalidKey("\(what) must decode to \(NoiseConstants.dhLength) bytes, got \(raw.count)")
        }
        return raw
    }

    /// A fresh X25519 key pair.
    public static func generateKeyPair() -> NoiseKeyPair { NoiseKeyPair.generate() }

    /// The X25519 public key of a raw 32-byte private key.
    public static func derivePublicKey(privateKey: [UInt8]) throws(NoiseError) -> [UInt8] {
        try NoiseKeyPair(privateKey: privateKey).publicKey
    }

    /// The text upstream `rathole --genkey` prints (on stdout):
    /// "Private Key:\n<base64>\n\nPublic Key:\n<base64>\n".
    public static func genkeyOutput(keyPair: NoiseKeyPair = .generate()) -> String {
        "Private Key:\n\(base64Encode(keyPair.privateKey))\n\nPublic Key:\n\(base64Encode(keyPair.publicKey))\n"
    }
}
