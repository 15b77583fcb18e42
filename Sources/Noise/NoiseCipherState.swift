// CipherState from the Noise spec (rev 34, section 5.1): a key (or none) and the counter n, for the
// suite's cipher (NoiseAEAD does the encryption).

import CRatholeCrypto

public final class NoiseCipherState {
    public let cipher: NoiseCipher
    /// The keyed cipher; nil while there is no key.
    private var aead: NoiseAEAD?

    /// Whether a key has been set (HasKey()).
    public var hasKey: Bool { aead != nil }
    /// The counter n: the nonce of the next message.
    public private(set) var nonce: UInt64 = 0

    /// An empty CipherState (no key).
    public init(cipher: NoiseCipher = .chaChaPoly) {
        self.cipher = cipher
    }

    /// A CipherState with key `key` (32 bytes) and n = 0.
    public convenience init(cipher: NoiseCipher = .chaChaPoly, key: [UInt8]) {
        self.init(cipher: cipher)
        initializeKey(key)
    }

    /// InitializeKey(key): sets k = key (32 bytes) and n = 0; `nil` empties the key.
    public func initializeKey(_ key: [UInt8]?) {
        nonce = 0
        guard let key else {
            aead = nil
            return
        }
        precondition(key.count == NoiseConstants.keyLength, "a Noise cipher key is 32 bytes")
        aead = key.withUnsafeBytes { NoiseAEAD(cipher: cipher, key: $0.baseAddress!) }
    }

    /// SetNonce(nonce).
    public func setNonce(_ n: UInt64) { nonce = n }

    // MARK: Hot path: raw buffers

    /// EncryptWithAd(ad, plaintext) into `out`, which must have room for plaintext.count + 16 bytes
    /// (or plaintext.count when there is no key: then the plaintext is copied as is). `out` may be
    /// the plaintext's own memory. Returns the number of bytes written.
    @inline(__always)
    public func encrypt(
        ad: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
        into out: UnsafeMutableRawPointer
    ) throws(NoiseError) -> Int {
        guard let aead else {
            if let src = plaintext.baseAddress, plaintext.count > 0 { out.copyMemory(from: src, byteCount: plaintext.count) }
            return plaintext.count
        }
        // 2^64-1 is reserved (section 5.1).
        guard nonce != UInt64.max else { throw .nonceExhausted }
        let written = aead.encrypt(nonce: nonce, ad: ad, plaintext: plaintext, into: out)
        nonce &+= 1
        return written
    }

    /// DecryptWithAd(ad, ciphertext) into `out`, which must have room for ciphertext.count - 16 bytes
    /// (ciphertext.count without a key). `out` may be the ciphertext's own memory. On a bad tag throws
    /// `.decryptFailed` and leaves n unchanged. Returns the number of plaintext bytes.
    @inline(__always)
    public func decrypt(
        ad: UnsafeRawBufferPointer, ciphertext: UnsafeRawBufferPointer,
        into out: UnsafeMutableRawPointer
    ) throws(NoiseError) -> Int {
        guard let aead else {
            if let src = ciphertext.baseAddress, ciphertext.count > 0 { out.copyMemory(from: src, byteCount: ciphertext.count) }
            return ciphertext.count
        }
        guard ciphertext.count >= NoiseConstants.tagLength else {
            throw .malformedMessage("ciphertext of \(ciphertext.count) bytes is shorter than the 16-byte tag")
        }
        guard nonce != UInt64.max else { throw .nonceExhausted }
        guard let written = aead.decrypt(nonce: nonce, ad: ad, ciphertext: ciphertext, into: out) else {
            throw .decryptFailed
        }
        nonce &+= 1
        return written
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
        guard let aead else { return }
        var block = [UInt8](repeating: 0, count: NoiseConstants.keyLength + NoiseConstants.tagLength)
        block.withUnsafeMutableBytes { b in
            let zeros = UnsafeRawBufferPointer(start: b.baseAddress, count: NoiseConstants.keyLength)
            _ = aead.encrypt(
                nonce: UInt64.max, ad: UnsafeRawBufferPointer(start: nil, count: 0),
                plaintext: zeros, into: b.baseAddress!)
            self.aead = NoiseAEAD(cipher: cipher, key: b.baseAddress!)
        }
        noiseZero(&block)
    }
}
