// A Noise session framed as rathole frames it: every Noise message, handshake or transport, is
// preceded by its length as a u16 LITTLE-endian. Handshake payloads are empty. Pure: bytes in, bytes out.
//
// Use:
//   let session = try NoiseSession(protocolName: ..., role: .initiator, remoteStaticKey: serverKey)
//   while !session.isHandshakeComplete {
//       if session.isMyTurnToWrite { send(try session.nextHandshakeMessage()) }
//       else { try session.readHandshakeMessage(receiveSomeBytes()) }
//   }
//   send(try session.seal(plaintext))           // or seal(_:into:) on the hot path
//   let plaintext = try session.open(received)  // or open(_:into:) on the hot path
//
// Bytes that arrive after the last handshake message (the peer may send transport data at once) are
// kept and come out of the next `open` call: after the handshake, call `open` once even with no new
// bytes when `bufferedInputCount > 0`.
//
// Any failure caused by the peer (bad tag, malformed message) ends the session: every later call throws
// the same error, and the caller closes the connection. Not thread-safe: one connection, one task.

public final class NoiseSession {
    public let role: NoiseRole
    private var handshake: NoiseHandshakeState?
    private var sender: NoiseCipherState?
    private var receiver: NoiseCipherState?
    private var failure: NoiseError?
    private var remoteStatic: [UInt8]?
    private var finalHandshakeHash: [UInt8]?

    // Received bytes not yet processed: [pendingStart, pendingEnd) of `pending`. Holds at most one
    // partial frame during the transport phase (plus whatever followed the last handshake message).
    private var pending: UnsafeMutableRawPointer?
    private var pendingCapacity = 0
    private var pendingStart = 0
    private var pendingEnd = 0

    /// - Parameters:
    ///   - protocolName: e.g. "Noise_NK_25519_ChaChaPoly_BLAKE2s" (rathole's default).
    ///   - localStaticKey: this side's key pair (rathole's `local_private_key`), when the pattern needs it.
    ///   - remoteStaticKey: the peer's public key (rathole's `remote_public_key`), when the pattern needs it.
    ///   - prologue: rathole uses none.
    public convenience init(
        protocolName: String = NoiseProtocol.defaultName, role: NoiseRole,
        localStaticKey: NoiseKeyPair? = nil, remoteStaticKey: [UInt8]? = nil,
        prologue: [UInt8] = []
    ) throws(NoiseError) {
        try self.init(
            protocol: NoiseProtocol(name: protocolName), role: role, localStaticKey: localStaticKey,
            remoteStaticKey: remoteStaticKey, prologue: prologue)
    }

    /// As above, with a parsed protocol. `fixedEphemeral` replaces the random ephemeral key: for test
    /// vectors only (a reused ephemeral key breaks the handshake's security).
    public init(
        protocol noiseProtocol: NoiseProtocol, role: NoiseRole, localStaticKey: NoiseKeyPair? = nil,
        remoteStaticKey: [UInt8]? = nil, prologue: [UInt8] = [],
        fixedEphemeral: NoiseKeyPair? = nil
    ) throws(NoiseError) {
        self.role = role
        self.handshake = try NoiseHandshakeState(
            protocol: noiseProtocol, role: role, prologue: prologue,
            localStatic: localStaticKey, remoteStatic: remoteStaticKey,
            fixedEphemeral: fixedEphemeral)
    }

    deinit {
        pending?.deallocate()  // ciphertext only: nothing secret to wipe
    }

    // MARK: Handshake

    public var isHandshakeComplete: Bool { sender != nil }

    /// Whether the next step of the handshake is ours to write (`nextHandshakeMessage`); when false
    /// and the handshake is not complete, we are waiting for the peer's message.
    public var isMyTurnToWrite: Bool { handshake?.isMyTurnToWrite ?? false }

    /// The peer's static public key, once known (from configuration or learnt in the handshake).
    public var remoteStaticKey: [UInt8]? { handshake?.remoteStaticKey ?? remoteStatic }

    /// The handshake hash; final once the handshake is complete.
    public var handshakeHash: [UInt8]? { finalHandshakeHash ?? handshake?.handshakeHash }

    /// Received bytes kept for later (a partial frame, or data that followed the handshake).
    public var bufferedInputCount: Int { pendingEnd - pendingStart }

    private func checkAlive() throws(NoiseError) {
        if let failure { throw failure }
    }

    private func fail(_ error: NoiseError) -> NoiseError {
        failure = error
        return error
    }

    private func finishHandshakeIfComplete() throws(NoiseError) {
        guard let hs = handshake, hs.isComplete else { return }
        let (send, receive) = try hs.transportCiphers()
        sender = send
        receiver = receive
        remoteStatic = hs.remoteStaticKey
        finalHandshakeHash = hs.handshakeHash
        handshake = nil  // frees the ephemeral and static keys it held
    }

    /// Our next handshake message, framed (u16 LE length + message), with an empty payload.
    public func nextHandshakeMessage() throws(NoiseError) -> [UInt8] {
        try checkAlive()
        guard let hs = handshake else { throw .invalidState("the handshake is already complete") }
        // A call out of turn is the caller's mistake, not the peer's: it does not end the session.
        guard hs.isMyTurnToWrite else { throw .invalidState("it is the peer's turn to send a handshake message") }
        let message: [UInt8]
        do { message = try hs.writeMessage(payload: []) } catch { throw fail(error) }
        try finishHandshakeIfComplete()
        return Self.frameHeader(message.count) + message
    }

    /// Feeds received bytes (any chunk: a partial message, one, several, or a message followed by
    /// transport data) and processes every complete handshake message that is the peer's turn to send.
    /// Returns how many handshake messages were processed. Handshake payloads are read and ignored.
    @discardableResult
    public func readHandshakeMessage(_ bytes: [UInt8]) throws(NoiseError) -> Int {
        try noiseWithBytes(bytes) { (b) throws(NoiseError) -> Int in try readHandshakeMessage(b) }
    }

    @discardableResult
    public func readHandshakeMessage(_ bytes: UnsafeRawBufferPointer) throws(NoiseError) -> Int {
        try checkAlive()
        guard let hs = handshake else { throw .invalidState("the handshake is already complete") }
        appendPending(bytes)
        var processed = 0
        while !hs.isComplete, !hs.isMyTurnToWrite, let (start, length) = completePendingFrame() {
            let message = Array(UnsafeRawBufferPointer(start: pending! + start, count: length))
            consumePending(upTo: start + length)
            do { _ = try hs.readMessage(message) } catch { throw fail(error) }
            processed += 1
        }
        try finishHandshakeIfComplete()
        return processed
    }

    // MARK: Transport: seal

    /// Bytes `seal` produces for `plaintextCount` bytes of plaintext: one frame (2 + n + 16 bytes) per
    /// 65519 bytes or part thereof; 0 for no plaintext.
    @inline(__always)
    public static func sealedSize(plaintextCount: Int) -> Int {
        let frames = (plaintextCount + NoiseConstants.maxPlaintextLength - 1) / NoiseConstants.maxPlaintextLength
        return plaintextCount + frames * (NoiseConstants.frameHeaderLength + NoiseConstants.tagLength)
    }

    /// Encrypts `plaintext` into frames (split every 65519 bytes) written to `out`, which must hold
    /// `sealedSize(plaintextCount:)` bytes. Returns the number of bytes written. No allocation.
    public func seal(_ plaintext: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws(NoiseError) -> Int {
        try checkAlive()
        guard let sender else { throw .handshakeNotComplete }
        let needed = Self.sealedSize(plaintextCount: plaintext.count)
        guard out.count >= needed else { throw .outputBufferTooSmall(needed: needed, available: out.count) }
        guard needed > 0, let outBase = out.baseAddress, let inBase = plaintext.baseAddress else { return 0 }
        let noAD = UnsafeRawBufferPointer(start: nil, count: 0)
        var read = 0
        var written = 0
        while read < plaintext.count {
            let chunk = min(NoiseConstants.maxPlaintextLength, plaintext.count - read)
            let messageLength = chunk + NoiseConstants.tagLength
            outBase.storeBytes(of: UInt8(truncatingIfNeeded: messageLength), toByteOffset: written, as: UInt8.self)
            outBase.storeBytes(of: UInt8(truncatingIfNeeded: messageLength >> 8), toByteOffset: written + 1, as: UInt8.self)
            do {
                _ = try sender.encrypt(
                    ad: noAD, plaintext: UnsafeRawBufferPointer(start: inBase + read, count: chunk),
                    into: outBase + written + NoiseConstants.frameHeaderLength)
            } catch { throw fail(error) }
            read += chunk
            written += NoiseConstants.frameHeaderLength + messageLength
        }
        return written
    }

    /// Encrypts `plaintext` into frames (split every 65519 bytes).
    public func seal(_ plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        try noiseWithBytes(plaintext) { (p) throws(NoiseError) -> [UInt8] in try seal(p) }
    }

    public func seal(_ plaintext: UnsafeRawBufferPointer) throws(NoiseError) -> [UInt8] {
        try noiseMakeArray(capacity: Self.sealedSize(plaintextCount: plaintext.count)) { (out) throws(NoiseError) -> Int in
            try seal(plaintext, into: out)
        }
    }

    // MARK: Transport: open

    /// Decodes and decrypts frames from `input` (any chunk of the received stream) into `out`.
    ///
    /// Frames are decrypted straight from `input` when whole; a frame cut by the end of `input` is
    /// kept internally and completed by the next call. Stops before a frame whose plaintext does not
    /// fit in the space left in `out`: then `consumed < input.count`, and the caller passes
    /// `input[consumed...]` again later. With `out.count >= NoiseConstants.maxPlaintextLength` every
    /// call makes progress. A frame whose tag fails throws `.decryptFailed` (kill the connection).
    public func open(
        _ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer
    ) throws(NoiseError) -> (consumed: Int, written: Int) {
        try checkAlive()
        guard let receiver else { throw .handshakeNotComplete }
        var consumed = 0
        var written = 0
        let inputCount = input.count
        let noAD = UnsafeRawBufferPointer(start: nil, count: 0)

        @inline(__always)
        func decryptFrame(_ base: UnsafeRawPointer, _ length: Int) throws(NoiseError) -> Bool {
            // A frame whose plaintext does not fit must wait for more space in `out`.
            guard length - NoiseConstants.tagLength <= out.count - written else { return false }
            do {
                written += try receiver.decrypt(
                    ad: noAD, ciphertext: UnsafeRawBufferPointer(start: base, count: length),
                    into: out.baseAddress! + written)
            } catch { throw fail(error) }
            return true
        }

        // 1. Frames already buffered (a partial frame from the last call, or post-handshake data).
        while pendingEnd > pendingStart {
            if let (start, length) = completePendingFrame() {
                guard length >= NoiseConstants.tagLength else { throw fail(.malformedMessage("transport message shorter than its tag")) }
                guard try decryptFrame(pending! + start, length) else { return (consumed, written) }
                consumePending(upTo: start + length)
                continue
            }
            // The buffered frame is incomplete: complete it from the input, as far as the input goes.
            let have = pendingEnd - pendingStart
            let need: Int
            if have < NoiseConstants.frameHeaderLength {
                need = NoiseConstants.frameHeaderLength - have
            } else {
                let length = Self.readLength(pending! + pendingStart)
                // Refused as soon as the length is known, as in step 2, whatever the split.
                guard length >= NoiseConstants.tagLength else { throw fail(.malformedMessage("transport message shorter than its tag")) }
                need = NoiseConstants.frameHeaderLength + length - have
            }
            let take = min(need, inputCount - consumed)
            if take == 0 { return (consumed, written) }
            appendPending(UnsafeRawBufferPointer(start: input.baseAddress! + consumed, count: take))
            consumed += take
        }

        // 2. Whole frames straight from the input.
        guard let inBase = input.baseAddress else { return (consumed, written) }
        while inputCount - consumed >= NoiseConstants.frameHeaderLength {
            let length = Self.readLength(inBase + consumed)
            guard length >= NoiseConstants.tagLength else { throw fail(.malformedMessage("transport message shorter than its tag")) }
            guard inputCount - consumed - NoiseConstants.frameHeaderLength >= length else { break }
            guard try decryptFrame(inBase + consumed + NoiseConstants.frameHeaderLength, length) else {
                return (consumed, written)
            }
            consumed += NoiseConstants.frameHeaderLength + length
        }

        // 3. Keep a trailing partial frame.
        if consumed < inputCount {
            appendPending(UnsafeRawBufferPointer(start: inBase + consumed, count: inputCount - consumed))
            consumed = inputCount
        }
        return (consumed, written)
    }

    /// Decodes and decrypts all complete frames in the buffered bytes plus `input`; returns the
    /// plaintext. A trailing partial frame is kept for the next call.
    public func open(_ input: UnsafeRawBufferPointer) throws(NoiseError) -> [UInt8] {
        // Plaintext is never longer than the ciphertext it comes from.
        try noiseMakeArray(capacity: pendingEnd - pendingStart + input.count) { (out) throws(NoiseError) -> Int in
            try open(input, into: out).written
        }
    }

    public func open(_ input: [UInt8]) throws(NoiseError) -> [UInt8] {
        try noiseWithBytes(input) { (p) throws(NoiseError) -> [UInt8] in try open(p) }
    }

    /// Frees the internal receive buffer if it holds nothing (for idle connections).
    public func releaseIdleBuffers() {
        guard pendingEnd == pendingStart, let p = pending else { return }
        p.deallocate()
        pending = nil
        pendingCapacity = 0
        pendingStart = 0
        pendingEnd = 0
    }

    // MARK: Framing helpers

    @inline(__always)
    private static func readLength(_ p: UnsafeRawPointer) -> Int {
        Int(p.load(as: UInt8.self)) | Int(p.load(fromByteOffset: 1, as: UInt8.self)) << 8
    }

    @inline(__always)
    private static func frameHeader(_ length: Int) -> [UInt8] {
        [UInt8(truncatingIfNeeded: length), UInt8(truncatingIfNeeded: length >> 8)]
    }

    /// The (offset, length) of the Noise message of the first buffered frame, if it is complete.
    private func completePendingFrame() -> (Int, Int)? {
        let have = pendingEnd - pendingStart
        guard have >= NoiseConstants.frameHeaderLength, let p = pending else { return nil }
        let length = Self.readLength(p + pendingStart)
        guard have - NoiseConstants.frameHeaderLength >= length else { return nil }
        return (pendingStart + NoiseConstants.frameHeaderLength, length)
    }

    private func consumePending(upTo offset: Int) {
        pendingStart = offset
        if pendingStart == pendingEnd {
            pendingStart = 0
            pendingEnd = 0
        }
    }

    private func appendPending(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0, let src = bytes.baseAddress else { return }
        if pendingEnd + bytes.count > pendingCapacity {
            let live = pendingEnd - pendingStart
            let needed = live + bytes.count
            if needed <= pendingCapacity, let p = pending {
                // Enough room once the consumed prefix is dropped.
                p.copyMemory(from: p + pendingStart, byteCount: live)
            } else {
                let capacity = max(
                    needed, min(2 * pendingCapacity, NoiseConstants.frameHeaderLength + NoiseConstants.maxMessageLength), 4096)
                let fresh = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
                if let p = pending {
                    fresh.copyMemory(from: p + pendingStart, byteCount: live)
                    p.deallocate()
                }
                pending = fresh
                pendingCapacity = capacity
            }
            pendingStart = 0
            pendingEnd = live
        }
        (pending! + pendingEnd).copyMemory(from: src, byteCount: bytes.count)
        pendingEnd += bytes.count
    }
}
