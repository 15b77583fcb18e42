import DataPlane
import TLS

/// `type = "tls"`: OpenSSL over the socket. Server: `pkcs12` + `pkcs12_password`; client:
/// `trusted_root` + `hostname` (default: the host of remote_addr); chain and name are verified.
struct TLSTransport: Transport {
    let tcp: TCPTransport
    let server: TLSServerContext?
    let client: TLSClientContext?

    static func server(_ config: TransportConfig) throws(StartError) -> TLSTransport {
        guard let tls = config.tls, let path = tls.pkcs12, let password = tls.pkcs12Password else {
            throw StartError("server.transport.tls: pkcs12 and pkcs12_password are required for type = \"tls\"")
        }
        do {
            return TLSTransport(
                tcp: TCPTransport(options: config.tcp),
                server: try TLSServerContext(pkcs12Path: path, password: password.value), client: nil)
        } catch {
            throw StartError("server.transport.tls: \(error)")
        }
    }

    static func client(_ config: TransportConfig, hostname: String, tcp: TCPTransport) throws(StartError) -> TLSTransport {
        do {
            return TLSTransport(
                tcp: tcp, server: nil,
                client: try TLSClientContext(trustedRootPath: config.tls?.trustedRoot, hostname: hostname))
        } catch {
            throw StartError("client.transport.tls: \(error)")
        }
    }

    func connect(to endpoint: Endpoint, on ring: RingExecutor) async throws(TransportError) -> ByteStream {
        try await tcp.connectSecured(to: endpoint, on: ring, layer: "tls", makeSession: makeSession)
    }

    func accept(_ socket: SocketStream, on ring: RingExecutor) async throws(TransportError) -> ByteStream {
        try await tcp.acceptSecured(socket, on: ring, layer: "tls", makeSession: makeSession)
    }

    private func makeSession() throws(TLSError) -> TLSSecureSession {
        if let server { return TLSSecureSession(try TLSSession(context: server)) }
        return TLSSecureSession(try TLSSession(context: client!))
    }
}

/// TLSSession seen as a SecureSession.
final class TLSSecureSession: SecureSession {
    let tls: TLSSession
    init(_ tls: TLSSession) { self.tls = tls }

    func advanceHandshake() throws(TLSError) -> Bool {
        try tls.handshake() == .complete
    }

    func inputSpace() throws(TLSError) -> UnsafeMutableRawBufferPointer {
        try tls.reserveInput(minimumCapacity: 64 * 1024)
    }

    func commitInput(_ count: Int) throws(TLSError) { tls.commitInput(count) }

    func inputEnded() { tls.feedEOF() }

    func readPlaintext(into buffer: UnsafeMutableRawBufferPointer) throws(TLSError) -> SecureRead {
        switch try tls.read(into: buffer) {
        case .bytes(let n): return .bytes(n)
        case .wantInput: return .wantInput
        case .closed: return .closed
        }
    }

    var hasBufferedInput: Bool { tls.hasBufferedInput }

    func writePlaintext(_ buffer: UnsafeRawBufferPointer) throws(TLSError) {
        try tls.write(buffer)
    }

    var pendingOutput: UnsafeRawBufferPointer { tls.pendingOutput }
    func consumeOutput(_ count: Int) { tls.consumeOutput(count) }
    func finishWriting() { tls.shutdown() }
}
