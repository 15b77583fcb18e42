// SymmetricState from the Noise spec (rev 34, section 5.2) with BLAKE2s (HASHLEN 32).

public final class NoiseSymmetricState {
    /// The chaining key ck.
    private var ck: [UInt8]
    /// The handshake hash h.
    private var h: [UInt8]
    /// The CipherState used during the handshake.
    public let cipherState = NoiseCipherState()

    /// InitializeSymmetric(protocol_name).
    public init(protocolName: String) {
        let name = Array(protocolName.utf8)
        if name.count <= NoiseConstants.hashLength {
            h = name + [UInt8](repeating: 0, count: NoiseConstants.hashLength - name.count)
        } else {
            h = NoisePrimitives.hash(name)
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

    /// MixKey(input_key_material).
    public func mixKey(_ inputKeyMaterial: [UInt8]) {
        var out = NoisePrimitives.hkdf(chainingKey: ck, inputKeyMaterial: inputKeyMaterial, outputs: 2)
        noiseZero(&ck)
        ck = out[0]
        // HASHLEN is 32, so temp_k needs no truncation.
        cipherState.initializeKey(out[1])
        noiseZero(&out[1])
    }

    /// MixHash(data).
    public func mixHash(_ data: [UInt8]) {
        h = NoisePrimitives.hash(h, data)
    }

    /// MixKeyAndHash(input_key_material) (used by psk modes of the spec).
    public func mixKeyAndHash(_ inputKeyMaterial: [UInt8]) {
        var out = NoisePrimitives.hkdf(chainingKey: ck, inputKeyMaterial: inputKeyMaterial, outputs: 3)
        noiseZero(&ck)
        ck = out[0]
        mixHash(out[1])
        cipherState.initializeKey(out[2])
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
        var out = NoisePrimitives.hkdf(chainingKey: ck, inputKeyMaterial: [], outputs: 2)
        defer { noiseZero(&out[0]); noiseZero(&out[1]) }
        return (NoiseCipherState(key: out[0]), NoiseCipherState(key: out[1]))
    }
}
