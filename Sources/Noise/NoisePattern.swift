// Handshake patterns (Noise spec rev 34, sections 7.4 and 18.1: the interactive fundamental patterns and the
// deferred ones) and the parsing of protocol names such as "Noise_NK_25519_AESGCM_SHA256".

/// A token of a handshake pattern.
public enum NoiseToken: String, Sendable, Hashable {
    case e, s, ee, es, se, ss
}

/// A handshake pattern: pre-messages and the message sequence. Message i is written by the initiator
/// when i is even and by the responder when i is odd.
public struct NoiseHandshakePattern: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    /// Tokens of the initiator's pre-message ("-> s ...": the responder knows the initiator's key).
    public let initiatorPreMessage: [NoiseToken]
    /// Tokens of the responder's pre-message ("<- s ...": the initiator knows the responder's key).
    public let responderPreMessage: [NoiseToken]
    public let messages: [[NoiseToken]]

    init(_ name: String, initiatorPre: [NoiseToken] = [], responderPre: [NoiseToken] = [], _ messages: [[NoiseToken]]) {
        self.name = name
        self.initiatorPreMessage = initiatorPre
        self.responderPreMessage = responderPre
        self.messages = messages
    }

    public var description: String { name }

    /// Whether the party in `role` needs its own static key pair.
    public func needsLocalStatic(_ role: NoiseRole) -> Bool {
        let pre = role == .initiator ? initiatorPreMessage : responderPreMessage
        if pre.contains(.s) { return true }
        for (i, tokens) in messages.enumerated() where (i % 2 == 0) == (role == .initiator) {
            if tokens.contains(.s) { return true }
        }
        return false
    }

    /// Whether the party in `role` must know the peer's static public key before the handshake.
    public func needsRemoteStaticUpFront(_ role: NoiseRole) -> Bool {
        (role == .initiator ? responderPreMessage : initiatorPreMessage).contains(.s)
    }

    // MARK: The table

    /// Interactive fundamental patterns (spec section 7.4).
    public static let fundamental: [NoiseHandshakePattern] = [
        .init("NN", [[.e], [.e, .ee]]),
        .init("NK", responderPre: [.s], [[.e, .es], [.e, .ee]]),
        .init("NX", [[.e], [.e, .ee, .s, .es]]),
        .init("KN", initiatorPre: [.s], [[.e], [.e, .ee, .se]]),
        .init("KK", initiatorPre: [.s], responderPre: [.s], [[.e, .es, .ss], [.e, .ee, .se]]),
        .init("KX", initiatorPre: [.s], [[.e], [.e, .ee, .se, .s, .es]]),
        .init("XN", [[.e], [.e, .ee], [.s, .se]]),
        .init("XK", responderPre: [.s], [[.e, .es], [.e, .ee], [.s, .se]]),
        .init("XX", [[.e], [.e, .ee, .s, .es], [.s, .se]]),
        .init("IN", [[.e, .s], [.e, .ee, .se]]),
        .init("IK", responderPre: [.s], [[.e, .es, .s, .ss], [.e, .ee, .se]]),
        .init("IX", [[.e, .s], [.e, .ee, .se, .s, .es]]),
    ]

    /// Deferred patterns (spec section 18.1).
    public static let deferred: [NoiseHandshakePattern] = [
        .init("NK1", responderPre: [.s], [[.e], [.e, .ee, .es]]),
        .init("NX1", [[.e], [.e, .ee, .s], [.es]]),
        .init("X1N", [[.e], [.e, .ee], [.s], [.se]]),
        .init("X1K", responderPre: [.s], [[.e, .es], [.e, .ee], [.s], [.se]]),
        .init("XK1", responderPre: [.s], [[.e], [.e, .ee, .es], [.s, .se]]),
        .init("X1K1", responderPre: [.s], [[.e], [.e, .ee, .es], [.s], [.se]]),
        .init("X1X", [[.e], [.e, .ee, .s, .es], [.s], [.se]]),
        .init("XX1", [[.e], [.e, .ee, .s], [.es, .s, .se]]),
        .init("X1X1", [[.e], [.e, .ee, .s], [.es, .s], [.se]]),
        .init("K1N", initiatorPre: [.s], [[.e], [.e, .ee], [.se]]),
        .init("K1K", initiatorPre: [.s], responderPre: [.s], [[.e, .es], [.e, .ee], [.se]]),
        .init("KK1", initiatorPre: [.s], responderPre: [.s], [[.e], [.e, .ee, .se, .es]]),
        .init("K1K1", initiatorPre: [.s], responderPre: [.s], [[.e], [.e, .ee, .es], [.se]]),
        .init("K1X", initiatorPre: [.s], [[.e], [.e, .ee, .s, .es], [.se]]),
        .init("KX1", initiatorPre: [.s], [[.e], [.e, .ee, .se, .s], [.es]]),
        .init("K1X1", initiatorPre: [.s], [[.e], [.e, .ee, .s], [.se, .es]]),
        .init("I1N", [[.e, .s], [.e, .ee], [.se]]),
        .init("I1K", responderPre: [.s], [[.e, .es, .s], [.e, .ee], [.se]]),
        .init("IK1", responderPre: [.s], [[.e, .s], [.e, .ee, .se, .es]]),
        .init("I1K1", responderPre: [.s], [[.e, .s], [.e, .ee, .es], [.se]]),
        .init("I1X", [[.e, .s], [.e, .ee, .s, .es], [.se]]),
        .init("IX1", [[.e, .s], [.e, .ee, .se, .s], [.es]]),
        .init("I1X1", [[.e, .s], [.e, .ee, .s], [.se, .es]]),
    ]

    public static let all: [NoiseHandshakePattern] = fundamental + deferred

    /// The interactive pattern with this name ("NK", "XX", "X1K1", ...), or nil.
    public static func named(_ name: String) -> NoiseHandshakePattern? {
        all.first { $0.name == name }
    }

    public static let nk = named("NK")!
    public static let xx = named("XX")!
    public static let kk = named("KK")!
}

/// A parsed, supported protocol name: "Noise_<pattern>_25519_<cipher>_<hash>", with cipher ChaChaPoly
/// or AESGCM and hash BLAKE2s, BLAKE2b, SHA256 or SHA512: every Curve25519 suite upstream accepts.
public struct NoiseProtocol: Sendable, Hashable, CustomStringConvertible {
    /// rathole's default pattern.
    public static let defaultName = "Noise_NK_25519_ChaChaPoly_BLAKE2s"
    public static let `default` = try! NoiseProtocol(name: defaultName)

    public let name: String
    public let pattern: NoiseHandshakePattern
    public let cipher: NoiseCipher
    public let hash: NoiseHash

    public var description: String { name }

    /// Parses a protocol name. Anything other than an interactive pattern without modifiers with
    /// 25519 and one of the ciphers and hashes above is rejected with an error that names the
    /// unsupported part.
    public init(name: String) throws(NoiseError) {
        func fail(_ reason: String) -> NoiseError { .unsupportedProtocol(name: name, reason: reason) }
        let parts = name.split(separator: "_", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 5, parts[0] == "Noise" else {
            throw fail("expected the form Noise_<pattern>_<dh>_<cipher>_<hash>, e.g. \(Self.defaultName)")
        }
        let (patternPart, dh, cipherPart, hashPart) = (parts[1], parts[2], parts[3], parts[4])
        guard dh == "25519" else {
            throw fail("DH function '\(dh)' is not supported (only 25519)")
        }
        guard let cipher = NoiseCipher(rawValue: cipherPart) else {
            throw fail("cipher '\(cipherPart)' is not supported (ChaChaPoly or AESGCM)")
        }
        guard let hash = NoiseHash(rawValue: hashPart) else {
            throw fail("hash '\(hashPart)' is not supported (BLAKE2s, BLAKE2b, SHA256 or SHA512)")
        }
        // The pattern name is upper-case letters and digits; modifiers (psk0, fallback, ...) follow in
        // lower case, joined by '+'.
        let base = String(patternPart.prefix { $0.isUppercase || $0.isNumber })
        let modifiers = String(patternPart.dropFirst(base.count))
        guard !base.isEmpty else {
            throw fail("missing handshake pattern")
        }
        if ["N", "K", "X"].contains(base) {
            throw fail("one-way pattern '\(base)' is not supported (only interactive patterns)")
        }
        guard let pattern = NoiseHandshakePattern.named(base) else {
            throw fail("unknown handshake pattern '\(base)'")
        }
        guard modifiers.isEmpty else {
            throw fail("pattern modifier '\(modifiers)' is not supported")
        }
        self.name = name
        self.pattern = pattern
        self.cipher = cipher
        self.hash = hash
    }
}
