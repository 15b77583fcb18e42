import CRatholeCrypto

/// Everything that can go wrong in the TLS transport, each described in one line that says what
/// and where. Setup errors name the config key and the file; session errors carry OpenSSL's reason.
public enum TLSError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A configured file does not exist. `key` is the config key (`pkcs12`, `trusted_root`).
    case fileNotFound(key: String, path: String)
    /// A configured file exists but cannot be read.
    case fileUnreadable(key: String, path: String)
    /// The `pkcs12` file is not a PKCS#12 archive, or holds no certificate and key.
    case invalidPKCS12(path: String, reason: String)
    /// `pkcs12_password` does not open the archive.
    case wrongPKCS12Password(path: String)
    /// No CA certificate could be loaded from the `trusted_root` file.
    case invalidTrustedRoot(path: String, reason: String)
    /// The host name to verify is empty or unusable.
    case invalidHostname(String)
    /// The server's certificate chain does not verify (OpenSSL's verify error string).
    case untrustedCertificate(reason: String)
    /// The server's certificate is valid but not for the expected host name or IP address.
    case hostnameMismatch(expected: String)
    /// The handshake failed for another reason (including the peer rejecting it with an alert).
    case handshakeFailed(reason: String)
    /// The peer's bytes are not TLS, or a record failed authentication (tampering, corruption).
    case peerSentGarbage(reason: String)
    /// The transport ended before the handshake completed.
    case closedDuringHandshake
    /// A TLS-level failure after the handshake (e.g. the peer sent a fatal alert).
    case protocolError(reason: String)
    /// The session was used out of order (e.g. write before the handshake completed).
    case misuse(String)
    /// Memory allocation or an OpenSSL setup call failed.
    case internalError(reason: String)

    public var description: String {
        switch self {
        case .fileNotFound(let key, let path):
            return "TLS: \(key) file '\(path)' does not exist"
        case .fileUnreadable(let key, let path):
            return "TLS: cannot read \(key) file '\(path)'"
        case .invalidPKCS12(let path, let reason):
            return "TLS: pkcs12 file '\(path)' is not a usable PKCS#12 archive: \(reason)"
        case .wrongPKCS12Password(let path):
            return "TLS: wrong pkcs12_password for '\(path)' (the archive's MAC does not verify)"
        case .invalidTrustedRoot(let path, let reason):
            return "TLS: no CA certificate could be loaded from trusted_root '\(path)': \(reason)"
        case .invalidHostname(let name):
            return "TLS: invalid hostname '\(name)' for certificate verification"
        case .untrustedCertificate(let reason):
            return "TLS: the server's certificate is not trusted: \(reason)"
        case .hostnameMismatch(let expected):
            return "TLS: the server's certificate does not match hostname '\(expected)'"
        case .handshakeFailed(let reason):
            return "TLS handshake failed: \(reason)"
        case .peerSentGarbage(let reason):
            return "TLS: the peer sent invalid TLS data (\(reason))"
        case .closedDuringHandshake:
            return "TLS: the peer closed the connection during the handshake"
        case .protocolError(let reason):
            return "TLS: connection failed: \(reason)"
        case .misuse(let what):
            return "TLS: session misuse: \(what)"
        case .internalError(let reason):
            return "TLS: internal error: \(reason)"
        }
    }
}

/// Reads (and empties) this thread's OpenSSL error queue.
struct TLSOpenSSLErrors {
    /// The first error code queued, and the first from the SSL library (0 when none).
    var first: UInt = 0
    var firstSSL: UInt = 0

    static func drain() -> TLSOpenSSLErrors {
        var e = TLSOpenSSLErrors()
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            if e.first == 0 { e.first = code }
            if e.firstSSL == 0 && ERR_GET_LIB(code) == ERR_LIB_SSL { e.firstSSL = code }
        }
        return e
    }

    /// The most telling error: the SSL library's if any.
    var primary: UInt { firstSSL != 0 ? firstSSL : first }

    var sslReason: Int32 { firstSSL != 0 ? ERR_GET_REASON(firstSSL) : 0 }

    /// Human-readable reason for the primary error, or `fallback` when the queue was empty.
    func reason(fallback: String) -> String {
        Self.string(for: primary) ?? fallback
    }

    static func string(for code: UInt) -> String? {
        guard code != 0 else { return nil }
        if let p = ERR_reason_error_string(code) {
            return String(cString: p)
        }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { buf in
            ERR_error_string_n(code, buf.baseAddress, buf.count)
            return String(cString: buf.baseAddress!)
        }
    }
}
