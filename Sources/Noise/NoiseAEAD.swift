// ENCRYPT(k, n, ad, plaintext) and DECRYPT(k, n, ad, ciphertext) of the two cipher functions (Noise
// spec rev 34, sections 12.3 and 12.4) under one key, on raw buffers, both from OpenSSL's EVP: its
// ChaCha20 and Poly1305 use AVX2/AVX-512 and its AES-GCM AES-NI and carry-less multiplication where
// the CPU has them (libsodium's ChaCha20-Poly1305 ran at a third of OpenSSL's speed here). The 96-bit
// nonce is 32 zero bits then n: little-endian for ChaChaPoly, BIG-endian for AESGCM.

import CRatholeCrypto
import Glibc

/// The two ciphers, fetched once per process (a fetched EVP_CIPHER may be shared by every thread).
nonisolated(unsafe) private let noiseChaCha20Poly1305 = noiseFetchCipher("ChaCha20-Poly1305")
nonisolated(unsafe) private let noiseAES256GCM = noiseFetchCipher("AES-256-GCM")

private func noiseFetchCipher(_ name: String) -> OpaquePointer {
    guard let cipher = EVP_CIPHER_fetch(nil, name, nil) else { fatalError("OpenSSL provides no \(name)") }
    return cipher
}

/// Each thread's two EVP contexts, keyed again for every message: that costs 90 ns (ChaChaPoly) or
/// 200 ns (AES-256-GCM) here, under 1% of a 64 KiB frame, and spares every connection the 1.1 KiB
/// a keyed context takes for each direction. The last key used stays in them until the next message
/// or the thread's end.
private final class NoiseThreadContexts {
    let chaChaPoly = NoiseThreadContexts.make(noiseChaCha20Poly1305)
    let aesGCM = NoiseThreadContexts.make(noiseAES256GCM)

    private static func make(_ cipher: OpaquePointer) -> OpaquePointer {
        guard let ctx = EVP_CIPHER_CTX_new(), EVP_CipherInit_ex(ctx, cipher, nil, nil, nil, 1) == 1 else {
            fatalError("OpenSSL: cannot set up a cipher context")
        }
        return ctx
    }

    deinit {
        EVP_CIPHER_CTX_free(chaChaPoly)  // cleanses the last key
        EVP_CIPHER_CTX_free(aesGCM)
    }

    /// This thread's contexts, made on first use and freed when the thread ends.
    @inline(__always)
    static var current: NoiseThreadContexts {
        if let p = pthread_getspecific(noiseThreadContextsKey) {
            return Unmanaged<NoiseThreadContexts>.fromOpaque(p).takeUnretainedValue()
        }
        let contexts = NoiseThreadContexts()
        pthread_setspecific(noiseThreadContextsKey, Unmanaged.passRetained(contexts).toOpaque())
        return contexts
    }
}

private let noiseThreadContextsKey: pthread_key_t = {
    var key = pthread_key_t()
    let r = pthread_key_create(&key) { p in
        if let p { Unmanaged<NoiseThreadContexts>.fromOpaque(p).release() }
    }
    precondition(r == 0, "pthread_key_create failed")
    return key
}()

/// One cipher under one key (32 bytes, wiped when freed). Not thread-safe: it belongs to one
/// CipherState; each call runs on this thread's EVP context.
final class NoiseAEAD {
    let cipher: NoiseCipher
    /// The 12-byte nonce (4 zero bytes, then n), then the 32-byte key.
    private let storage: UnsafeMutableRawPointer
    private static let storageSize = 12 + NoiseConstants.keyLength

    /// `key` holds 32 bytes.
    init(cipher: NoiseCipher, key: UnsafeRawPointer) {
        self.cipher = cipher
        storage = .allocate(byteCount: Self.storageSize, alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: 12)
        (storage + 12).copyMemory(from: key, byteCount: NoiseConstants.keyLength)
    }

    deinit {
        sodium_memzero(storage, Self.storageSize)
        storage.deallocate()
    }

    /// Starts a message on this thread's context: the key, the nonce for counter `n`, the direction.
    /// Nil when OpenSSL fails.
    @inline(__always)
    private func start(_ n: UInt64, encrypting: Bool) -> OpaquePointer? {
        let contexts = NoiseThreadContexts.current
        let ctx = cipher == .chaChaPoly ? contexts.chaChaPoly : contexts.aesGCM
        storage.storeBytes(of: cipher == .chaChaPoly ? n.littleEndian : n.bigEndian, toByteOffset: 4, as: UInt64.self)
        let bytes = storage.assumingMemoryBound(to: UInt8.self)
        return EVP_CipherInit_ex(ctx, nil, nil, bytes + 12, bytes, encrypting ? 1 : 0) == 1 ? ctx : nil
    }

    /// Feeds the associated data.
    @inline(__always)
    private static func authenticate(_ ctx: OpaquePointer, _ ad: UnsafeRawBufferPointer) -> Bool {
        guard ad.count > 0 else { return true }
        var length: Int32 = 0
        return EVP_CipherUpdate(ctx, nil, &length, ad.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(ad.count)) == 1
    }

    /// Writes plaintext.count + 16 bytes to `out` (which may be the plaintext's own memory) and
    /// returns that count.
    @inline(__always)
    func encrypt(
        nonce n: UInt64, ad: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
        into out: UnsafeMutableRawPointer
    ) -> Int {
        let output = out.assumingMemoryBound(to: UInt8.self)
        let count = plaintext.count
        var length: Int32 = 0
        var ok = false
        if let ctx = start(n, encrypting: true), Self.authenticate(ctx, ad) {
            ok =
                count == 0
                || EVP_CipherUpdate(ctx, output, &length, plaintext.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(count)) == 1
            ok = ok && EVP_CipherFinal_ex(ctx, output + count, &length) == 1
            ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(NoiseConstants.tagLength), output + count) == 1
        }
        precondition(ok, "OpenSSL: \(cipher.rawValue) encryption failed")
        return count + NoiseConstants.tagLength
    }

    /// Writes ciphertext.count - 16 bytes of plaintext to `out` (which may be the ciphertext's own
    /// memory) and returns that count; nil when the tag does not verify, and then nothing of the
    /// plaintext is left in `out`. `ciphertext` holds at least the 16-byte tag.
    @inline(__always)
    func decrypt(
        nonce n: UInt64, ad: UnsafeRawBufferPointer, ciphertext: UnsafeRawBufferPointer,
        into out: UnsafeMutableRawPointer
    ) -> Int? {
        let output = out.assumingMemoryBound(to: UInt8.self)
        let input = ciphertext.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let count = ciphertext.count - NoiseConstants.tagLength
        var length: Int32 = 0
        var ok = false
        if let ctx = start(n, encrypting: false), Self.authenticate(ctx, ad) {
            // The tag lies past the plaintext even in place; OpenSSL takes it before decrypting.
            ok =
                EVP_CIPHER_CTX_ctrl(
                    ctx, EVP_CTRL_AEAD_SET_TAG, Int32(NoiseConstants.tagLength),
                    UnsafeMutableRawPointer(mutating: input + count)) == 1
            ok = ok && (count == 0 || EVP_CipherUpdate(ctx, output, &length, input, Int32(count)) == 1)
            ok = ok && EVP_CipherFinal_ex(ctx, output + count, &length) == 1
        }
        guard ok else {
            // Both ciphers write the plaintext before the tag is checked: wipe it.
            if count > 0 { sodium_memzero(output, count) }
            return nil
        }
        return count
    }
}
