import DataPlane
import Noise

/// `type = "noise"`: Noise_<pattern>_25519_<ChaChaPoly|AESGCM>_<BLAKE2s|BLAKE2b|SHA256|SHA512> framed
/// as rathole frames it.
/// `local_private_key` and `remote_public_key` are standard base64 of raw X25519 keys.
struct NoiseTransport: Transport {
    let tcp: TCPTransport
    let noiseProtocol: NoiseProtocol
    let localKey: NoiseKeyPair?
    let remoteKey: [UInt8]?
    let role: NoiseRole

    /// Reads and checks `[server|client].transport.noise`; `section` names it in errors.
    init(_ config: TransportConfig, role: NoiseRole, section: String, tcp: TCPTransport) throws(StartError) {
        let noise = config.noise ?? NoiseConfig()
        do {
            noiseProtocol = try NoiseProtocol(name: noise.pattern)
        } catch {
            throw StartError("\(section).noise.pattern: \(error)")
        }
        let pattern = noiseProtocol.pattern
        if let key = noise.localPrivateKey {
            do {
                localKey = try NoiseKeyPair(base64PrivateKey: key.value)
            } catch {
                throw StartError("\(section).noise.local_private_key: \(error)")
            }
        } else if pattern.needsLocalStatic(role) {
            // As upstream: a pattern that needs a static key gets a fresh one when none is set.
            localKey = NoiseKeyPair.generate()
        } else {
            localKey = nil
        }
        if let key = noise.remotePublicKey {
            do {
                remoteKey = try NoiseKeys.decodeKey(key, what: "remote_public_key")
            } catch {
                throw StartError("\(section).noise.remote_public_key: \(error)")
            }
        } else if pattern.needsRemoteStaticUpFront(role) {
            throw StartError("\(section).noise.remote_public_key: required by \(noise.pattern)")
        } else {
            remoteKey = nil
        }
        self.role = role
        self.tcp = tcp
    }

    func connect(to endpoint: Endpoint, on ring: RingExecutor) async throws(TransportError) -> ByteStream {
        try await tcp.connectSecured(to: endpoint, on: ring, layer: "noise", makeSession: makeSession)
    }

    func accept(_ socket: SocketStream, on ring: RingExecutor) async throws(TransportError) -> ByteStream {
        try await tcp.acceptSecured(socket, on: ring, layer: "noise", makeSession: makeSession)
    }

    private func makeSession() throws(NoiseError) -> NoiseSecureSession {
        NoiseSecureSession(
            try NoiseSession(
                protocol: noiseProtocol, role: role, localStaticKey: localKey,
                remoteStaticKey: remoteKey))
    }
}

/// NoiseSession seen as a SecureSession: it keeps the received ciphertext and the sealed frames
/// waiting to be sent, in buffers that are released when empty.
final class NoiseSecureSession: SecureSession {
    let noise: NoiseSession
    private let input = ByteBuffer()
    private let output = ByteBuffer()
    /// Plaintext decrypted for a reader whose buffer was smaller than a frame.
    private let plain = ByteBuffer()
    private var ended = false

    init(_ noise: NoiseSession) { self.noise = noise }

    func advanceHandshake() throws(NoiseError) -> Bool {
        while !noise.isHandshakeComplete {
            if noise.isMyTurnToWrite {
                output.append(try noise.nextHandshakeMessage())
                continue
            }
            let processed = try input.withReadable { bytes throws(NoiseError) -> (Int, Int) in
                (bytes.count, try noise.readHandshakeMessage(bytes))
            }
            if processed == 0 { return false }
        }
        return true
    }

    func inputSpace() throws(NoiseError) -> UnsafeMutableRawBufferPointer {
        input.reserve(64 * 1024 + 2)
    }

    func commitInput(_ count: Int) throws(NoiseError) { input.commit(count) }

    func inputEnded() { ended = true }

    func readPlaintext(into buffer: UnsafeMutableRawBufferPointer) throws(NoiseError) -> SecureRead {
        if !plain.isEmpty { return .bytes(copyPlain(into: buffer)) }
        // A frame only decrypts into space that holds all of it: small reads go through `plain`.
        let direct = buffer.count >= NoiseConstants.maxPlaintextLength
        let target = direct ? buffer : plain.reserve(NoiseConstants.maxPlaintextLength)
        // The session buffers partial frames itself; hand it everything received so far.
        let written = try input.withReadable { bytes throws(NoiseError) -> (Int, Int) in
            try noise.open(bytes, into: target)
        }
        if written > 0 {
            if direct { return .bytes(written) }
            plain.commit(written)
            return .bytes(copyPlain(into: buffer))
        }
        if ended { return .closed }
        if noise.bufferedInputCount == 0 { noise.releaseIdleBuffers() }
        return .wantInput
    }

    var hasBufferedInput: Bool { !plain.isEmpty || !input.isEmpty || noise.bufferedInputCount > 0 }

    private func copyPlain(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(buffer.count, plain.readable.count)
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: plain.readable[..<n]))
        plain.consume(n)
        return n
    }

    func writePlaintext(_ buffer: UnsafeRawBufferPointer) throws(NoiseError) {
        let space = output.reserve(NoiseSession.sealedSize(plaintextCount: buffer.count))
        output.commit(try noise.seal(buffer, into: space))
    }

    var pendingOutput: UnsafeRawBufferPointer { output.readable }
    func consumeOutput(_ count: Int) { output.consume(count) }
    func finishWriting() {}
}
