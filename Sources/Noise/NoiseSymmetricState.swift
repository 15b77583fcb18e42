// SymmetricState from the Noise spec (rev 34, section 5.2), for any hash of the suites (HASHLEN 32 or
// 64: with 64, cipher keys are the first 32 bytes of their HKDF output).

public final class NoiseSymmetricState {
    public let hash: NoiseHash
    /// The chaining key ck.
    private var ck: [UInt8]
    /// The handshake hash h.
    private var h: [UInt8]
    /// The CipherState used during the handshake.
    public let cipherState: NoiseCipherState

    /// InitializeSymmetric(protocol_name).
    public init(protocolName: String, cipher: NoiseCipher = .chaChaPoly, hash: NoiseHash = .blake2s) {
        self.hash = hash
        cipherState = NoiseCipherState(cipher: cipher)
        let name = Array(protocolName.utf8)
        if name.count <= hash.hashLength {
            h = name + [UInt8](repeating: 0, count: hash.hashLength - name.count)
        } else {
            h = hash.hash(name)
        }
        ck = h
    }

    deinit {
        noiseZero(&ck)
        noiseZero(&h)
    }

    /// The handshake hash h (GetHandshakeHash()).
    public var handshakeHash: [UInt8] { h }

    /// Whether the CipherState has a key.
    public var hasKey: Bool { cipherState.hasKey }

    /// The first 32 bytes of an HKDF output: a cipher key (truncated when HASHLEN is 64).
    private static func cipherKey(_ output: [UInt8]) -> [UInt8] {
        Array(output.prefix(NoiseConstants.keyLength))
    }

    /// MixKey(input_key_material).
    public func mixKey(_ inputKeyMaterial: [UInt8]) {
        var out = hash.hkdf(chainingKey: ck, inputKeyMaterial: inputKeyMaterial, outputs: 2)
        noiseZero(&ck)
        ck = out[0]
        var key = Self.cipherKey(out[1])
        cipherState.initializeKey(key)
        noiseZero(&key)
        noiseZero(&out[1])
    }

    /// MixHash(data).
    public func mixHash(_ data: [UInt8]) {
        h = hash.hash(h, data)
    }

    /// MixKeyAndHash(input_key_material) (used by psk modes of the spec).
    public func mixKeyAndHash(_ inputKeyMaterial: [UInt8]) {
        var out = hash.hkdf(chainingKey: ck, inputKeyMaterial: inputKeyMaterial, outputs: 3)
        noiseZero(&ck)
        ck = out[0]
        mixHash(out[1])
        var key = Self.cipherKey(out[2])
        cipherState.initializeKey(key)
        noiseZero(&key)
        noiseZero(&out[2])
    }

    /// EncryptAndHash(plaintext).
    public func encryptAndHash(_ plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let ciphertext = try cipherState.encryptWithAd(h, plaintext)
        mixHash(ciphertext)
        return ciphertext
    }

    /// DecryptAndHash(ciphertext).
    public func decryptAndHash(_ ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let plaintext = try cipherState.decryptWithAd(h, ciphertext)
        mixHash(ciphertext)
        return plaintext
    }

    /// Split(): the two transport CipherStates (c1 for initiator-to-responder, c2 for the reverse).
    public func split() -> (NoiseCipherState, NoiseCipherState) {
        var out = hash.hkdf(chainingKey: ck, inputKeyMaterial: [], outputs: 2)
        var k1 = Self.cipherKey(out[0])
        var k2 = Self.cipherKey(out[1])
        defer {
            noiseZero(&out[0])
            noiseZero(&out[1])
            noiseZero(&k1)
            noiseZero(&k2)
        }
        return (NoiseCipherState(cipher: cipherState.cipher, key: k1), NoiseCipherState(cipher: cipherState.cipher, key: k2))
    }
}
