import CRatholeCrypto

/// Progress of `TLSSession.handshake()`.
public enum TLSHandshakeStatus: Sendable, Equatable {
    /// Done: application data may flow (send `pendingOutput` first: it may hold the last flight).
    case complete
    /// Send `pendingOutput`, then receive and `feed` more ciphertext (or `feedEOF`), then call again.
    case wantInput
}

/// Outcome of `TLSSession.read(into:)`.
public enum TLSReadResult: Sendable, Equatable {
    /// This many plaintext bytes were written at the start of the buffer.
    case bytes(Int)
    /// Every buffered record has been consumed: receive and `feed` more ciphertext, then read again.
    case wantInput
    /// The peer will send no more. `cleanly` is true for a TLS close_notify, false when the transport
    /// ended without one (a truncation attack is possible then; most peers simply mean end of stream).
    /// Writing is still possible.
    case closed(cleanly: Bool)
}

/// One TLS connection as a state machine: ciphertext in, plaintext out and the reverse, no I/O.
///
/// The caller owns the socket. Its loop is:
/// - after every call, send what `pendingOutput` holds and `consumeOutput` what was sent (or use
///   `drainOutput(into:)`); the pointer stays valid while more output is appended, until consumed;
/// - when `handshake()` or `read(into:)` says `.wantInput`, receive and hand the bytes over with
///   `feed(_:)` (one copy) or straight into `reserveInput(minimumCapacity:)` + `commitInput(_:)`;
///   when the socket reports end of file, call `feedEOF()`;
/// - after `handshake()` returns `.complete`, call `read(into:)` before waiting for input: the peer's
///   first data may have arrived with its last handshake flight;
/// - to end, `shutdown()` queues a close_notify; send it, then close (or half-close) the socket.
/// After a thrown error, `pendingOutput` may hold an alert worth sending before closing.
///
/// Not thread-safe: use it from one thread at a time (it may move between threads). A reader task and
/// a writer task may interleave on one executor: `write` never touches the input side, and output
/// already handed to a send is never moved by later appends.
public final class TLSSession {
    private let ssl: OpaquePointer
    private let io: TLSByteQueues
    private let isServer: Bool
    /// The host name the client verifies (for error messages).
    private let expectedHost: String?
    private var handshakeDone = false
    private var shutdownSent = false
    private var eofFed = false
    private var failure: TLSError?
    // Keeps the SSL_CTX's owner alive as long as the session (SSL holds its own reference too).
    private let owner: AnyObject

    /// A server-side session on a newly accepted connection.
    public init(context: TLSServerContext) throws(TLSError) {
        guard let ssl = SSL_new(context.ctx) else {
            throw .internalError(reason: TLSOpenSSLErrors.drain().reason(fallback: "SSL_new failed"))
        }
        guard let io = TLSMemoryBIO.attach(to: ssl) else {
            SSL_free(ssl)
            throw .internalError(reason: "cannot allocate the TLS buffers")
        }
        SSL_set_accept_state(ssl)
        self.ssl = ssl
        self.io = io
        self.isServer = true
        self.expectedHost = nil
        self.owner = context
    }

    /// A client-side session on a newly connected socket, verifying `context.hostname`.
    public init(context: TLSClientContext) throws(TLSError) {
        guard let ssl = SSL_new(context.ctx) else {
            throw .internalError(reason: TLSOpenSSLErrors.drain().reason(fallback: "SSL_new failed"))
        }
        ERR_clear_error()
        let param = SSL_get0_param(ssl)
        X509_VERIFY_PARAM_set_hostflags(param, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
        let configured: Bool
        if context.isIPAddress {
            configured = X509_VERIFY_PARAM_set1_ip_asc(param, context.verifyName) == 1
        } else {
            configured =
                SSL_set1_host(ssl, context.verifyName) == 1
                && rc_tls_set_sni(ssl, context.verifyName) == 1
        }
        guard configured else {
            SSL_free(ssl)
            ERR_clear_error()
            throw .invalidHostname(context.hostname)
        }
        guard let io = TLSMemoryBIO.attach(to: ssl) else {
            SSL_free(ssl)
            throw .internalError(reason: "cannot allocate the TLS buffers")
        }
        SSL_set_connect_state(ssl)
        self.ssl = ssl
        self.io = io
        self.isServer = false
        self.expectedHost = context.hostname
        self.owner = context
    }

    deinit { SSL_free(ssl) }

    // MARK: Input

    /// Hands over ciphertext received from the peer (copied).
    public func feed(_ ciphertext: UnsafeRawBufferPointer) throws(TLSError) {
        guard let base = ciphertext.baseAddress, ciphertext.count > 0 else { return }
        guard io.feed(UnsafeRawBufferPointer(start: base, count: ciphertext.count)) else {
            throw .internalError(reason: "cannot allocate \(ciphertext.count) bytes of input buffer")
        }
    }

    /// Hands over ciphertext received from the peer (copied).
    public func feed(_ ciphertext: [UInt8]) throws(TLSError) {
        try ciphertext.withUnsafeBytes { b in Result { () throws(TLSError) in try feed(b) } }.get()
    }

    /// Space for the caller to receive ciphertext into directly (no copy); then `commitInput(n)`.
    /// The buffer stays valid until the next `feed`, `reserveInput`, `handshake` or `read`.
    /// Buffers are released whenever the session has consumed all its input, so an idle connection
    /// holds none, unless a receive into a reserved buffer is pending: for many mostly idle
    /// connections, receive into shared buffers and `feed` instead.
    public func reserveInput(minimumCapacity: Int = 64 * 1024) throws(TLSError) -> UnsafeMutableRawBufferPointer {
        guard let space = io.reserve(max(minimumCapacity, 1)) else {
            throw .internalError(reason: "cannot allocate \(minimumCapacity) bytes of input buffer")
        }
        return space
    }

    /// Marks `count` bytes received into the last `reserveInput` buffer as input.
    public func commitInput(_ count: Int) {
        precondition(count >= 0)
        io.commit(count)
    }

    /// The transport reached end of file: once buffered input is consumed, the session reports it.
    public func feedEOF() {
        eofFed = true
        io.endInput()
    }

    /// Ciphertext received but not yet processed.
    public var pendingInputCount: Int { io.inputPending }

    /// True when `read` may return bytes without new input: ciphertext not yet processed, or
    /// plaintext OpenSSL decrypted but has not handed out yet.
    public var hasBufferedInput: Bool { pendingInputCount > 0 || SSL_has_pending(ssl) == 1 }

    // MARK: Output

    /// Ciphertext waiting to be sent, in total.
    public var pendingOutputCount: Int { io.outputPending }

    /// True when there is ciphertext to send.
    public var hasPendingOutput: Bool { io.outputPending > 0 }

    /// The first contiguous run of ciphertext to send (empty when none). Valid until consumed, even if
    /// more output is appended meanwhile. There may be more after it: check `pendingOutputCount`.
    public var pendingOutput: UnsafeRawBufferPointer { io.firstPendingRun }

    /// Drops `count` bytes from the front of the pending output (they were sent).
    public func consumeOutput(_ count: Int) {
        precondition(count >= 0)
        io.consume(count)
    }

    /// Copies up to `buffer.count` bytes of pending output into `buffer`, consuming them.
    public func drainOutput(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        return io.copyOut(into: base, count: buffer.count)
    }

    /// Takes all pending output as an array (convenient for tests and the handshake, not hot paths).
    public func takeOutput() -> [UInt8] {
        let n = pendingOutputCount
        guard n > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: n) { buf, count in
            count = io.copyOut(into: buf.baseAddress!, count: n)
        }
    }

    // MARK: Handshake

    public var isHandshakeComplete: Bool { handshakeDone }

    /// Advances the handshake with the input fed so far.
    public func handshake() throws(TLSError) -> TLSHandshakeStatus {
        if let failure { throw failure }
        if handshakeDone { return .complete }
        ERR_clear_error()
        let r = SSL_do_handshake(ssl)
        if r == 1 {
            handshakeDone = true
            return .complete
        }
        let code = SSL_get_error(ssl, r)
        if code == SSL_ERROR_WANT_READ && !eofFed { return .wantInput }
        let error = classifyFailure(code: code, inHandshake: true)
        failure = error
        throw error
    }

    /// "TLSv1.3", "TLSv1.2", ... once the handshake is complete.
    public var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// The negotiated cipher suite's name, once the handshake is complete.
    public var cipherName: String {
        guard let c = SSL_get_current_cipher(ssl), let n = SSL_CIPHER_get_name(c) else { return "" }
        return String(cString: n)
    }

    // MARK: Application data

    /// Encrypts all of `plaintext` into the pending output (full-size records).
    public func write(_ plaintext: UnsafeRawBufferPointer) throws(TLSError) {
        if let failure { throw failure }
        guard handshakeDone else { throw .misuse("write before the handshake completed") }
        guard !shutdownSent else { throw .misuse("write after shutdown") }
        guard let base = plaintext.baseAddress, plaintext.count > 0 else { return }
        ERR_clear_error()
        var written = 0
        let r = SSL_write_ex(ssl, base, plaintext.count, &written)
        if r == 1 && written == plaintext.count { return }
        let error = classifyFailure(code: SSL_get_error(ssl, r), inHandshake: false)
        failure = error
        throw error
    }

    /// Encrypts all of `plaintext` into the pending output.
    public func write(_ plaintext: [UInt8]) throws(TLSError) {
        try plaintext.withUnsafeBytes { b in Result { () throws(TLSError) in try write(b) } }.get()
    }

    /// Decrypts as much buffered input as fits into `buffer`. Returns `.bytes` whenever anything was
    /// produced; an error or close found after some bytes is reported by the next call, so authentic
    /// data before a bad record is delivered and nothing after it. Call it until it says `.wantInput`
    /// (cheap when nothing is left). It may queue output (alerts, key update replies): send it.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(TLSError) -> TLSReadResult {
        if let failure { throw failure }
        guard handshakeDone else { throw .misuse("read before the handshake completed") }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return .bytes(0) }
        var total = 0
        while total < buffer.count {
            ERR_clear_error()
            var got = 0
            let r = SSL_read_ex(ssl, base + total, buffer.count - total, &got)
            if r == 1 {
                total += got
                continue
            }
            let code = SSL_get_error(ssl, r)
            if code == SSL_ERROR_WANT_READ && !eofFed {
                return total > 0 ? .bytes(total) : .wantInput
            }
            if code == SSL_ERROR_ZERO_RETURN {
                return total > 0 ? .bytes(total) : .closed(cleanly: true)
            }
            if eofFed && isUnexpectedEOF(code: code) {
                return total > 0 ? .bytes(total) : .closed(cleanly: false)
            }
            let error = classifyFailure(code: code, inHandshake: false)
            if total > 0 {
                failure = error
                return .bytes(total)
            }
            failure = error
            throw error
        }
        return .bytes(total)
    }

    /// Server side: the host name the client asked for with SNI, if any.
    public var serverName: String? {
        SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name).map { String(cString: $0) }
    }

    /// True once the peer's close_notify has been read.
    public var receivedCloseNotify: Bool {
        (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN) != 0
    }

    /// Queues a close_notify (once; nothing before the handshake completed or after an error). The
    /// session can still read until the peer closes its side.
    public func shutdown() {
        guard !shutdownSent, failure == nil, handshakeDone else { return }
        shutdownSent = true
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    // MARK: Errors

    private func isUnexpectedEOF(code: Int32) -> Bool {
        if code == SSL_ERROR_SYSCALL { return true }
        if code == SSL_ERROR_SSL {
            let lib = ERR_GET_LIB(ERR_peek_error())
            let reason = ERR_GET_REASON(ERR_peek_error())
            if lib == ERR_LIB_SSL && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING {
                ERR_clear_error()
                return true
            }
        }
        return false
    }

    private func classifyFailure(code: Int32, inHandshake: Bool) -> TLSError {
        if eofFed && io.inputPending == 0 && (code == SSL_ERROR_WANT_READ || isUnexpectedEOF(code: code)) {
            return inHandshake ? .closedDuringHandshake : .protocolError(reason: "unexpected end of stream")
        }
        let errs = TLSOpenSSLErrors.drain()
        if code == SSL_ERROR_SYSCALL && errs.first == 0 {
            return inHandshake ? .closedDuringHandshake : .protocolError(reason: "unexpected end of stream")
        }
        let reason = errs.sslReason

        // Client: the server's certificate did not verify.
        if !isServer {
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK {
                if verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH {
                    return .hostnameMismatch(expected: expectedHost ?? "")
                }
                let text = X509_verify_cert_error_string(verify).map { String(cString: $0) } ?? "error \(verify)"
                return .untrustedCertificate(reason: text)
            }
        }

        let text = errs.reason(fallback: "OpenSSL error \(code)")
        // Alerts from the peer (reasons are offset by SSL_AD_REASON_OFFSET).
        if reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256 {
            return inHandshake
                ? .handshakeFailed(reason: "the peer rejected it (\(text))")
                : .protocolError(reason: "the peer sent a fatal alert (\(text))")
        }
        if Self.garbageReasons.contains(reason) {
            return .peerSentGarbage(reason: text)
        }
        return inHandshake ? .handshakeFailed(reason: text) : .protocolError(reason: text)
    }

    /// Reasons that mean the bytes received are not (authentic) TLS.
    private static let garbageReasons: Set<Int32> = [
        SSL_R_WRONG_VERSION_NUMBER, SSL_R_HTTP_REQUEST, SSL_R_HTTPS_PROXY_REQUEST,
        SSL_R_PACKET_LENGTH_TOO_LONG, SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC,
        SSL_R_DECRYPTION_FAILED, SSL_R_BAD_RECORD_TYPE, SSL_R_UNEXPECTED_RECORD, SSL_R_UNEXPECTED_MESSAGE,
        SSL_R_LENGTH_MISMATCH, SSL_R_BAD_PACKET_LENGTH, SSL_R_RECORD_LENGTH_MISMATCH,
        SSL_R_DATA_LENGTH_TOO_LONG, SSL_R_ENCRYPTED_LENGTH_TOO_LONG, SSL_R_BAD_LENGTH,
        SSL_R_LENGTH_TOO_SHORT, SSL_R_BLOCK_CIPHER_PAD_IS_WRONG,
    ]
}
