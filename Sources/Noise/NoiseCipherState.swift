// CipherState from the Noise spec (rev 34, section 5.1) with ChaChaPoly: ChaCha20-Poly1305 IETF from
// libsodium, the 96-bit nonce being 32 zero bits followed by the little-endian 64-bit counter n.

import CRatholeCrypto

public final class NoiseCipherState {
    // One allocation: the 32-byte key k, then the 12-byte AEAD nonce (4 zero bytes + n little-endian).
    private let storage: UnsafeMutableRawPointer
    private static let nonceOffset = NoiseConstants.keyLength
    private static let storageSize = NoiseConstants.keyLength + 12

    /// Whether a key has been set (HasKey()).
    public private(set) var hasKey = false
    /// The counter n: the nonce of the next message.
    public private(set) var nonce: UInt64 = 0

    /// An empty CipherState (no key).
    public init() {
        noiseEnsureLibraries()
        storage = .allocate(byteCount: Self.storageSize, alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: Self.storageSize)
    }

    /// A CipherState with key `key` (32 bytes) and n = 0.
    public convenience init(key: [UInt8]) {
        self.init()
        initializeKey(key)
    }

    deinit {
        sodium_memzero(storage, Self.storageSize)
        storage.deallocate()
    }

    /// InitializeKey(key): sets k = key (32 bytes) and n = 0; `nil` empties the key.
    public func initializeKey(_ key: [UInt8]?) {
        nonce = 0
        guard let key else {
            sodium_memzero(storage, NoiseConstants.keyLength)
            hasKey = false
            return
        }
        precondition(key.count == NoiseConstants.keyLength, "a ChaChaPoly key is 32 bytes")
        key.withUnsafeBytes { storage.copyMemory(from: $0.baseAddress!, byteCount: NoiseConstants.keyLength) }
        hasKey = true
    }

    /// SetNonce(nonce).
    public func setNonce(_ n: UInt64) { nonce = n }

    @inline(__always)
    private var keyPointer: UnsafePointer<UInt8> {
        UnsafePointer(storage.assumingMemoryBound(to: UInt8.self))
    }

    /// Writes n into the nonce bytes and checks that n is not the reserved 2^64-1.
    @inline(__always)
    private func prepareNonce() throws(NoiseError) -> UnsafePointer<UInt8> {
        guard nonce != UInt64.max else { throw .nonceExhausted }
        storage.storeBytes(of: nonce.littleEndian, toByteOffset: Self.nonceOffset + 4, as: UInt64.self)
        return UnsafePointer((storage + Self.nonceOffset).assumingMemoryBound(to: UInt8.self))
    }

    // MARK: Hot path: raw buffers

    /// EncryptWithAd(ad, plaintext) into `out`, which must have room for plaintext.count + 16 bytes
    /// (or plaintext.count when there is no key: then the plaintext is copied as is). `out` may be
    /// the plaintext's own memory. Returns the number of bytes written.
    @inline(__always)
    public func encrypt(ad: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
                        into out: UnsafeMutableRawPointer) throws(NoiseError) -> Int {
        guard hasKey else {
            if let src = plaintext.baseAddress, plaintext.count > 0 { out.copyMemory(from: src, byteCount: plaintext.count) }
            return plaintext.count
        }
        let npub = try prepareNonce()
        var written: UInt64 = 0
        let r = crypto_aead_chacha20poly1305_ietf_encrypt(
            out.assumingMemoryBound(to: UInt8.self), &written,
            plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(plaintext.count),
            ad.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(ad.count),
            nil, npub, keyPointer)
        precondition(r == 0, "ChaCha20-Poly1305 encryption failed")
        nonce &+= 1
        return Int(written)
    }

    /// DecryptWithAd(ad, ciphertext) into `out`, which must have room for ciphertext.count - 16 bytes
    /// (ciphertext.count without a key). `out` may be the ciphertext's own memory. On a bad tag throws
    /// `.decryptFailed` and leaves n unchanged. Returns the number of plaintext bytes.
    @inline(__always)
    public func decrypt(ad: UnsafeRawBufferPointer, ciphertext: UnsafeRawBufferPointer,
                        into out: UnsafeMutableRawPointer) throws(NoiseError) -> Int {
        guard hasKey else {
            if let src = ciphertext.baseAddress, ciphertext.count > 0 { out.copyMemory(from: src, byteCount: ciphertext.count) }
            return ciphertext.count
        }
        guard ciphertext.count >= NoiseConstants.tagLength else {
            throw .malformedMessage("ciphertext of \(ciphertext.count) bytes is shorter than the 16-byte tag")
        }
        let npub = try prepareNonce()
        var written: UInt64 = 0
        let r = crypto_aead_chacha20poly1305_ietf_decrypt(
            out.assumingMemoryBound(to: UInt8.self), &written, nil,
            ciphertext.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(ciphertext.count),
            ad.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(ad.count),
            npub, keyPointer)
        guard r == 0 else { throw .decryptFailed }
        nonce &+= 1
        return Int(written)
    }

    // MARK: Arrays

    /// EncryptWithAd(ad, plaintext).
    public func encryptWithAd(_ ad: [UInt8], _ plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let capacity = plaintext.count + (hasKey ? NoiseConstants.tagLength : 0)
        return try noiseWithBytes(ad) { (a) throws(NoiseError) -> [UInt8] in
            try noiseWithBytes(plaintext) { (p) throws(NoiseError) -> [UInt8] in
                try noiseMakeArray(capacity: capacity) { (out) throws(NoiseError) -> Int in
                    try encrypt(ad: a, plaintext: p, into: out.baseAddress!)
                }
            }
        }
    }

    /// DecryptWithAd(ad, ciphertext).
    public func decryptWithAd(_ ad: [UInt8], _ ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        if hasKey && ciphertext.count < NoiseConstants.tagLength {
            throw .malformedMessage("ciphertext of \(ciphertext.count) bytes is shorter than the 16-byte tag")
        }
        let capacity = ciphertext.count - (hasKey ? NoiseConstants.tagLength : 0)
        return try noiseWithBytes(ad) { (a) throws(NoiseError) -> [UInt8] in
            try noiseWithBytes(ciphertext) { (c) throws(NoiseError) -> [UInt8] in
                try noiseMakeArray(capacity: capacity) { (out) throws(NoiseError) -> Int in
                    try decrypt(ad: a, ciphertext: c, into: out.baseAddress!)
                }
            }
        }
    }

    /// Rekey(): k = the first 32 bytes of ENCRYPT(k, 2^64-1, empty ad, 32 zero bytes) (spec section
    /// 11.3, the default REKEY). n is unchanged.
    public func rekey() {
        guard hasKey else { return }
        var block = [UInt8](repeating: 0, count: NoiseConstants.keyLength + NoiseConstants.tagLength)
        storage.storeBytes(of: UInt64.max.littleEndian, toByteOffset: Self.nonceOffset + 4, as: UInt64.self)
        let npub = UnsafePointer((storage + Self.nonceOffset).assumingMemoryBound(to: UInt8.self))
        block.withUnsafeMutableBufferPointer { b in
            var written: UInt64 = 0
            let r = crypto_aead_chacha20poly1305_ietf_encrypt(
                b.baseAddress!, &written, b.baseAddress, UInt64(NoiseConstants.keyLength),
                nil, 0, nil, npub, keyPointer)
            precondition(r == 0, "ChaCha20-Poly1305 encryption failed")
            storage.copyMemory(from: b.baseAddress!, byteCount: NoiseConstants.keyLength)
        }
        noiseZero(&block)
    }
}
