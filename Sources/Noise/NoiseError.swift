// Errors of the Noise protocol framework (the Noise_*_25519_* suites).

/// Everything that can go wrong in the Noise layer. Every case reads as a one-line message through
/// `description`.
public enum NoiseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The protocol name is malformed or asks for something this implementation does not provide
    /// (another DH function, cipher or hash, a one-way pattern, a pattern modifier, an unknown pattern).
    case unsupportedProtocol(name: String, reason: String)
    /// The pattern needs a key for this role that was not given (e.g. NK responder without a private key).
    case missingKey(String)
    /// A key is malformed (wrong length, bad base64) or a DH with it gave an all-zero result.
    case invalidKey(String)
    /// An AEAD tag did not verify: the message was tampered with, or the keys do not match. The
    /// session is unusable afterwards.
    case decryptFailed
    /// The 64-bit nonce has reached its reserved maximum (2^64-1); no more messages can be sent or
    /// received with this key.
    case nonceExhausted
    /// A call was made in the wrong phase of the handshake (not our turn, already complete, ...).
    case invalidState(String)
    /// Transport data was sealed or opened before the handshake completed.
    case handshakeNotComplete
    /// A handshake or transport message is too short, too long or otherwise malformed.
    case malformedMessage(String)
    /// A message would exceed the Noise limit of 65535 bytes.
    case messageTooLarge(Int)
    /// A caller-supplied output buffer cannot hold the result.
    case outputBufferTooSmall(needed: Int, available: Int)

    public var description: String {
        switch self {
        case let .unsupportedProtocol(name, reason):
            return "unsupported Noise protocol \"\(name)\": \(reason)"
        case let .missingKey(what):
            return "missing Noise key: \(what)"
        case let .invalidKey(what):
            return "invalid Noise key: \(what)"
        case .decryptFailed:
            return "Noise decryption failed: authentication tag mismatch (tampered data or wrong keys)"
        case .nonceExhausted:
            return "Noise nonce exhausted: the cipher key cannot be used for more messages"
        case let .invalidState(what):
            return "invalid Noise state: \(what)"
        case .handshakeNotComplete:
            return "Noise handshake not complete"
        case let .malformedMessage(what):
            return "malformed Noise message: \(what)"
        case let .messageTooLarge(size):
            return "Noise message of \(size) bytes exceeds the maximum of \(NoiseConstants.maxMessageLength) bytes"
        case let .outputBufferTooSmall(needed, available):
            return "output buffer too small for Noise data: need \(needed) bytes, have \(available)"
        }
    }
}
