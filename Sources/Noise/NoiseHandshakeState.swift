// HandshakeState from the Noise spec (rev 34, section 5.3), driven by the pattern table.

/// Which side of the handshake this party is.
public enum NoiseRole: Sendable, Hashable {
    case initiator, responder
}

public final class NoiseHandshakeState {
    public let noiseProtocol: NoiseProtocol
    public let role: NoiseRole
    private let symmetric: NoiseSymmetricState
    private let s: NoiseKeyPair?
    private var e: NoiseKeyPair?
    private var rs: [UInt8]?
    private var re: [UInt8]?
    /// Ephemeral key to use instead of a generated one (test vectors only).
    private var fixedEphemeral: NoiseKeyPair?
    private var messageIndex = 0
    private var failed = false
    private var transport: (NoiseCipherState, NoiseCipherState)?

    /// Initialize(handshake_pattern, initiator, prologue, s, e, rs, re).
    ///
    /// - Parameters:
    ///   - localStatic: this party's static key pair; required when the pattern sends it or has it
    ///     in a pre-message. Ignored otherwise.
    ///   - remoteStatic: the peer's static public key (32 bytes); required when the pattern has it
    ///     in a pre-message (e.g. NK for the initiator, KK for both). Ignored otherwise: patterns that
    ///     transmit the peer's key learn it from the handshake (see `remoteStaticKey`).
    ///   - fixedEphemeral: an ephemeral key pair to use instead of a fresh random one. Only for test
    ///     vectors: reusing an ephemeral key destroys the security of the handshake.
    public init(
        protocol noiseProtocol: NoiseProtocol, role: NoiseRole, prologue: [UInt8] = [],
        localStatic: NoiseKeyPair? = nil, remoteStatic: [UInt8]? = nil,
        fixedEphemeral: NoiseKeyPair? = nil
    ) throws(NoiseError) {
        let pattern = noiseProtocol.pattern
        let side = role == .initiator ? "initiator" : "responder"
        if pattern.needsLocalStatic(role) && localStatic == nil {
            throw .missingKey("pattern \(pattern.name) needs the \(side)'s local private key")
        }
        let needsRemote = pattern.needsRemoteStaticUpFront(role)
        if needsRemote {
            guard let remoteStatic else {
                throw .missingKey("pattern \(pattern.name) needs the \(side) to know the remote public key")
            }
            guard remoteStatic.count == NoiseConstants.dhLength else {
                throw .invalidKey("remote public key must be \(NoiseConstants.dhLength) bytes, got \(remoteStatic.count)")
            }
        }
        self.noiseProtocol = noiseProtocol
        self.role = role
        self.symmetric = NoiseSymmetricState(
            protocolName: noiseProtocol.name, cipher: noiseProtocol.cipher,
            hash: noiseProtocol.hash)
        self.s = pattern.needsLocalStatic(role) ? localStatic : nil
        self.rs = needsRemote ? remoteStatic : nil
        self.fixedEphemeral = fixedEphemeral

        symmetric.mixHash(prologue)
        // Pre-messages: the initiator's first, then the responder's. Only "s" occurs in them here.
        for token in pattern.initiatorPreMessage where token == .s {
            symmetric.mixHash(role == .initiator ? s!.publicKey : rs!)
        }
        for token in pattern.responderPreMessage where token == .s {
            symmetric.mixHash(role == .responder ? s!.publicKey : rs!)
        }
    }

    /// Whether every handshake message has been written or read.
    public var isComplete: Bool { messageIndex >= noiseProtocol.pattern.messages.count }

    /// Whether the next handshake message is ours to write (false once complete).
    public var isMyTurnToWrite: Bool {
        !isComplete && (messageIndex % 2 == 0) == (role == .initiator)
    }

    /// The handshake hash h; after completion it identifies the session (channel binding).
    public var handshakeHash: [UInt8] { symmetric.handshakeHash }

    /// The peer's static public key, when the pattern provides one (pre-message or transmitted).
    public var remoteStaticKey: [UInt8]? { rs }

    /// The ephemeral public key this party sent, once sent.
    public var localEphemeralPublicKey: [UInt8]? { e?.publicKey }

    private func checkUsable(writing: Bool) throws(NoiseError) {
        if failed { throw .invalidState("the handshake failed earlier") }
        if isComplete { throw .invalidState("the handshake is already complete") }
        if writing != isMyTurnToWrite {
            throw .invalidState(
                writing
                    ? "it is the peer's turn to send a handshake message"
                    : "it is our turn to send a handshake message")
        }
    }

    private func dhToken(_ token: NoiseToken) throws(NoiseError) {
        // es: initiator's e with responder's s; se: initiator's s with responder's e.
        let local: NoiseKeyPair?
        let remote: [UInt8]?
        switch token {
        case .ee: (local, remote) = (e, re)
        case .ss: (local, remote) = (s, rs)
        case .es: (local, remote) = role == .initiator ? (e, rs) : (s, re)
        case .se: (local, remote) = role == .initiator ? (s, re) : (e, rs)
        case .e, .s: return
        }
        guard let local, let remote else {
            throw .invalidState("token \(token.rawValue) needs a key that is not available")
        }
        var shared = try local.dh(remote)
        symmetric.mixKey(shared)
        noiseZero(&shared)
    }

    /// WriteMessage(payload): the next handshake message (without any framing).
    public func writeMessage(payload: [UInt8] = []) throws(NoiseError) -> [UInt8] {
        try checkUsable(writing: true)
        failed = true  // until this message is complete
        var message: [UInt8] = []
        message.reserveCapacity(96 + payload.count)
        for token in noiseProtocol.pattern.messages[messageIndex] {
            switch token {
            case .e:
                let ephemeral = fixedEphemeral ?? NoiseKeyPair.generate()
                fixedEphemeral = nil
                e = ephemeral
                message += ephemeral.publicKey
                symmetric.mixHash(ephemeral.publicKey)
            case .s:
                guard let s else { throw .invalidState("token s needs the local static key") }
                message += try symmetric.encryptAndHash(s.publicKey)
            case .ee, .es, .se, .ss:
                try dhToken(token)
            }
        }
        message += try symmetric.encryptAndHash(payload)
        guard message.count <= NoiseConstants.maxMessageLength else { throw .messageTooLarge(message.count) }
        messageIndex += 1
        failed = false
        return message
    }

    /// ReadMessage(message): processes the peer's next handshake message and returns its payload.
    /// On any error the handshake is dead.
    public func readMessage(_ message: [UInt8]) throws(NoiseError) -> [UInt8] {
        try checkUsable(writing: false)
        guard message.count <= NoiseConstants.maxMessageLength else { throw .messageTooLarge(message.count) }
        failed = true  // until this message is accepted
        var offset = 0
        func take(_ n: Int, _ what: String) throws(NoiseError) -> [UInt8] {
            guard message.count - offset >= n else {
                throw .malformedMessage("handshake message of \(message.count) bytes is too short for \(what)")
            }
            defer { offset += n }
            return Array(message[offset..<offset + n])
        }
        for token in noiseProtocol.pattern.messages[messageIndex] {
            switch token {
            case .e:
                let key = try take(NoiseConstants.dhLength, "the ephemeral key")
                re = key
                symmetric.mixHash(key)
            case .s:
                let len = NoiseConstants.dhLength + (symmetric.hasKey ? NoiseConstants.tagLength : 0)
                let sealed = try take(len, "the static key")
                rs = try symmetric.decryptAndHash(sealed)
            case .ee, .es, .se, .ss:
                try dhToken(token)
            }
        }
        let payload = try symmetric.decryptAndHash(Array(message[offset...]))
        messageIndex += 1
        failed = false
        return payload
    }

    /// The transport CipherStates after the last handshake message, as (send, receive) for this
    /// party's role. Split() is run once; later calls return the same objects.
    public func transportCiphers() throws(NoiseError) -> (send: NoiseCipherState, receive: NoiseCipherState) {
        guard isComplete, !failed else { throw .handshakeNotComplete }
        if transport == nil { transport = symmetric.split() }
        let (c1, c2) = transport!
        return role == .initiator ? (c1, c2) : (c2, c1)
    }
}
