// ENCRYPT(k, n, ad, plaintext) and DECRYPT(k, n, ad, ciphertext) of the two cipher functions (Noise
// spec rev 34, sections 12.3 and 12.4) under one key, on raw buffers: ChaCha20-Poly1305 (IETF) from
// libsodium with the nonce 32 zero bits then n little-endian; AES-256-GCM from OpenSSL (AES-NI and
// carry-less multiplication where the CPU has them) with the nonce 32 zero bits then n BIG-endian.

import CRatholeCrypto

/// AES-256-GCM, fetched once per process (a fetched EVP_CIPHER may be shared by every thread).
nonisolated(unsafe) private let noiseAES256GCM: OpaquePointer = {
    guard let cipher = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil) else { fatalError("OpenSSL provides no AES-256-GCM") }
    return cipher
}()

/// One cipher keyed once. Not thread-safe: it belongs to one CipherState.
final class NoiseAEAD {
    let cipher: NoiseCipher
    /// The 12-byte nonce, then (ChaChaPoly) the 32-byte key. AES-GCM keeps its key, expanded, in `ctx`.
    private let storage: UnsafeMutableRawPointer
    private static let storageSize = 12 + NoiseConstants.keyLength
    /// AESGCM: an EVP_CIPHER_CTX keyed once; each message only sets the nonce and the direction.
    private let ctx: OpaquePointer?

    /// `key` holds 32 bytes.
    init(cipher: NoiseCipher, key: UnsafeRawPointer) {
        noiseEnsureLibraries()
        self.cipher = cipher
        storage = .allocate(byteCount: Self.storageSize, alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: Self.storageSize)
        switch cipher {
        case .chaChaPoly:
            (storage + 12).copyMemory(from: key, byteCount: NoiseConstants.keyLength)
            ctx = nil
        case .aesGCM:
            guard let ctx = EVP_CIPHER_CTX_new() else { fatalError("OpenSSL: EVP_CIPHER_CTX_new failed") }
            let ok = EVP_CipherInit_ex(ctx, noiseAES256GCM, nil, key.assumingMemoryBound(to: UInt8.self), nil, 1) == 1
            precondition(ok, "OpenSSL: AES-256-GCM key setup failed")
            self.ctx = ctx
        }
    }

    deinit {
        sodium_memzero(storage, Self.storageSize)
        storage.deallocate()
        EVP_CIPHER_CTX_free(ctx)  // cleanses the expanded key
    }

    /// The 12-byte AEAD nonce for counter `n`, in this cipher's byte order.
    @inline(__always)
    private func nonce(_ n: UInt64) -> UnsafeMutablePointer<UInt8> {
        let value = cipher == .chaChaPoly ? n.littleEndian : n.bigEndian
        storage.storeBytes(of: value, toByteOffset: 4, as: UInt64.self)
        return storage.assumingMemoryBound(to: UInt8.self)
    }

    @inline(__always)
    private var chaChaKey: UnsafePointer<UInt8> {
        UnsafePointer((storage + 12).assumingMemoryBound(to: UInt8.self))
    }

    /// Writes plaintext.count + 16 bytes to `out` (which may be the plaintext's own memory) and
    /// returns that count.
    @inline(__always)
    func encrypt(nonce n: UInt64, ad: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
                 into out: UnsafeMutableRawPointer) -> Int {
        let output = out.assumingMemoryBound(to: UInt8.self)
        let input = plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let adBytes = ad.baseAddress?.assumingMemoryBound(to: UInt8.self)
        switch cipher {
        case .chaChaPoly:
            var written: UInt64 = 0
            let r = crypto_aead_chacha20poly1305_ietf_encrypt(
                output, &written, input, UInt64(plaintext.count), adBytes, UInt64(ad.count), nil, nonce(n), chaChaKey)
            precondition(r == 0, "ChaCha20-Poly1305 encryption failed")
            return Int(written)
        case .aesGCM:
            var ok = EVP_CipherInit_ex(ctx, nil, nil, nil, nonce(n), 1) == 1
            var length: Int32 = 0
            if ok, ad.count > 0 { ok = EVP_CipherUpdate(ctx, nil, &length, adBytes, Int32(ad.count)) == 1 }
            if ok, plaintext.count > 0 { ok = EVP_CipherUpdate(ctx, output, &length, input, Int32(plaintext.count)) == 1 }
            if ok { ok = EVP_CipherFinal_ex(ctx, output + plaintext.count, &length) == 1 }
            if ok {
                ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(NoiseConstants.tagLength),
                                         output + plaintext.count) == 1
            }
            precondition(ok, "OpenSSL: AES-256-GCM encryption failed")
            return plaintext.count + NoiseConstants.tagLength
        }
    }

    /// Writes ciphertext.count - 16 bytes of plaintext to `out` (which may be the ciphertext's own
    /// memory) and returns that count; nil when the tag does not verify (then nothing of the
    /// plaintext is left in `out`). `ciphertext` holds at least the 16-byte tag.
    @inline(__always)
    func decrypt(nonce n: UInt64, ad: UnsafeRawBufferPointer, ciphertext: UnsafeRawBufferPointer,
                 into out: UnsafeMutableRawPointer) -> Int? {
        let output = out.assumingMemoryBound(to: UInt8.self)
        let input = ciphertext.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let adBytes = ad.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let count = ciphertext.count - NoiseConstants.tagLength
        switch cipher {
        case .chaChaPoly:
            var written: UInt64 = 0
            let r = crypto_aead_chacha20poly1305_ietf_decrypt(
                output, &written, nil, input, UInt64(ciphertext.count), adBytes, UInt64(ad.count), nonce(n), chaChaKey)
            return r == 0 ? Int(written) : nil
        case .aesGCM:
            // GCM writes plaintext before the tag is checked: the tag is read (it lies past the
            // plaintext even in place) and handed over first, and a failure wipes what was written.
            var ok = EVP_CipherInit_ex(ctx, nil, nil, nil, nonce(n), 0) == 1
            var length: Int32 = 0
            if ok, ad.count > 0 { ok = EVP_CipherUpdate(ctx, nil, &length, adBytes, Int32(ad.count)) == 1 }
            if ok {
                ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(NoiseConstants.tagLength),
                                         UnsafeMutableRawPointer(mutating: input + count)) == 1
            }
            if ok, count > 0 { ok = EVP_CipherUpdate(ctx, output, &length, input, Int32(count)) == 1 }
            if ok { ok = EVP_CipherFinal_ex(ctx, output + count, &length) == 1 }
            guard ok else {
                if count > 0 { sodium_memzero(output, count) }
                return nil
            }
            return count
        }
    }
}
