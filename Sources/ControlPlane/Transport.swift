import DataPlane

/// How connections between client and server are made: plain TCP, or an encrypted or framed
/// stream on top. The rathole protocol runs unchanged inside whatever stream the transport returns.
protocol Transport: Sendable {
    /// Client side: a connected stream to the server, handshake done.
    func connect(to endpoint: Endpoint, on ring: RingExecutor) async throws(TransportError) -> ByteStream
    /// Server side: the handshake on a freshly accepted socket, which the returned stream owns
    /// (on failure the socket is closed).
    func accept(_ socket: SocketStream, on ring: RingExecutor) async throws(TransportError) -> ByteStream
    /// True when `accept` does no I/O, so that a deadline on the reads that follow bounds the
    /// whole handshake.
    var acceptIsImmediate: Bool { get }
}

extension Transport {
    var acceptIsImmediate: Bool { false }
}

/// Where the client connects: an address it resolved, or a name a proxy resolves.
enum Endpoint: Sendable, CustomStringConvertible {
    case address(SocketAddress)
    case name(HostPort)

    var description: String {
        switch self {
        case .address(let a): return a.description
        case .name(let n): return n.description
        }
    }
}

/// Plain TCP: the stream is the socket itself, so data channels can be spliced. With
/// `[client.transport.tcp] proxy`, connections go through a SOCKS5 or HTTP CONNECT proxy first.
struct TCPTransport: Transport {
    let options: TcpConfig
    static let connectTimeout: Duration = .seconds(10)

    init(options: TcpConfig) { self.options = options }

    func connect(to endpoint: Endpoint, on ring: RingExecutor) async throws(TransportError) -> ByteStream {
        try await connectSocket(to: endpoint, on: ring)
    }

    /// The connected socket, with the configured options, for a stream to be layered on.
    func connectSocket(to endpoint: Endpoint, on ring: RingExecutor) async throws(TransportError) -> SocketStream {
        let socket: SocketStream
        if let proxy = options.proxy {
            guard case .name(let target) = endpoint else { preconditionFailure("a proxied connection names its target") }
            socket = try await ProxyConnector(proxy).connect(to: target, on: ring, timeout: Self.connectTimeout)
        } else {
            guard case .address(let address) = endpoint else { preconditionFailure("a direct connection needs an address") }
            do {
                socket = try await Socket.connect(to: address, on: ring, timeout: Self.connectTimeout, speaksFirst: true)
            } catch {
                throw .connect(error)
            }
        }
        do {
            try configure(socket)
        } catch {
            socket.close()
            throw .connect(error)
        }
        return socket
    }

    /// Gives a connected socket the configured nodelay and keepalive.
    func configure(_ socket: SocketStream) throws(IOError) {
        try socket.setNoDelay(options.nodelay)
        try socket.setKeepAlive(idle: Int(options.keepaliveSecs), interval: Int(options.keepaliveInterval))
    }

    /// The server's address when a data channel can be a plain socket set up on the ring without a
    /// task (`DirectDataChannel`): no proxy between.
    func directAddress(of endpoint: Endpoint) -> SocketAddress? {
        guard options.proxy == nil, case .address(let address) = endpoint else { return nil }
        return address
    }

    /// The socket has its options already: accepted sockets inherit them from the listener.
    func accept(_ socket: SocketStream, on ring: RingExecutor) async throws(TransportError) -> ByteStream {
        socket
    }

    var acceptIsImmediate: Bool { true }
}
