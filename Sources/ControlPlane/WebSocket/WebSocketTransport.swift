import DataPlane

/// `type = "websocket"`: the rathole protocol in binary websocket messages, after an HTTP/1.1
/// upgrade on `GET /`, over TCP or (with `[*.transport.websocket] tls = true`) over the TLS
/// transport, whose `[*.transport.tls]` keys then apply. The client's `[client.transport.tcp]`
/// proxy is used as for the other transports.
struct WebSocketTransport: Transport {
    /// What the websocket runs on: TCPTransport or TLSTransport.
    let underlying: any Transport
    /// Client side: the Host header of the upgrade request; nil on the server.
    let host: String?
    static let handshakeTimeout: Duration = .seconds(10)

    static func server(_ config: TransportConfig) throws(StartError) -> WebSocketTransport {
        let underlying: any Transport =
            config.websocket?.tls == true
            ? try TLSTransport.server(config) : TCPTransport(options: config.tcp)
        return WebSocketTransport(underlying: underlying, host: nil)
    }

    static func client(_ config: TransportConfig, remote: HostPort, tcp: TCPTransport) throws(StartError) -> WebSocketTransport {
        let underlying: any Transport =
            config.websocket?.tls == true
            ? try TLSTransport.client(config, hostname: config.tls?.hostname ?? remote.hostString, tcp: tcp) : tcp
        return WebSocketTransport(underlying: underlying, host: WebSocketHandshake.hostHeader(for: remote))
    }

    func connect(to endpoint: Endpoint, on ring: RingExecutor) async throws(TransportError) -> ByteStream {
        let stream = try await underlying.connect(to: endpoint, on: ring)
        let deadline = ContinuousClock.now + Self.handshakeTimeout
        do throws(WebSocketUpgradeFailure) {
            let key = WebSocketHandshake.randomKey()
            try await Self.send(WebSocketHandshake.request(host: host ?? "", key: key), on: stream)
            let (head, rest) = try await Self.readHead(from: stream, startsWith: "HTTP/", deadline: deadline)
            do {
                try WebSocketHandshake.checkResponse(head, key: key)
            } catch {
                throw .handshake(error)
            }
            return WebSocketStream(over: stream, ring: ring, masking: true, received: rest)
        } catch {
            stream.close()
            throw .websocket(error)
        }
    }

    func accept(_ socket: SocketStream, on ring: RingExecutor) async throws(TransportError) -> ByteStream {
        let stream = try await underlying.accept(socket, on: ring)
        do throws(WebSocketUpgradeFailure) {
            // No deadline here: the server bounds the whole accept and greeting.
            let (head, rest) = try await Self.readHead(from: stream, startsWith: "GET ", deadline: nil)
            let key: String
            do {
                key = try WebSocketHandshake.checkRequest(head)
            } catch {
                try? await Self.send(WebSocketHandshake.badRequestResponse, on: stream)
                throw .handshake(error)
            }
            try await Self.send(WebSocketHandshake.response(key: key), on: stream)
            return WebSocketStream(over: stream, ring: ring, masking: false, received: rest)
        } catch {
            stream.close()
            throw .websocket(error)
        }
    }

    // MARK: Handshake I/O

    /// Reads until a whole HTTP head has arrived; returns it and the bytes that came after it.
    private static func readHead(
        from stream: ByteStream, startsWith prefix: String,
        deadline: ContinuousClock.Instant?
    ) async throws(WebSocketUpgradeFailure) -> ([UInt8], ArraySlice<UInt8>) {
        var received: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 8)
        defer { chunk.deallocate() }
        while true {
            var timeout: Duration?
            if let deadline {
                timeout = deadline - .now
                guard timeout! > .zero else { throw .io(.timedOut(operation: "websocket handshake")) }
            }
            let n: Int
            do {
                n = try await stream.read(into: chunk, timeout: timeout)
            } catch {
                throw .io(error)
            }
            if n == 0 { throw .io(.endOfStream) }
            received += UnsafeRawBufferPointer(rebasing: chunk[..<n])
            let scan = received.withUnsafeBytes { b in
                Result { () throws(WebSocketHandshakeError) -> Int? in try WebSocketHandshake.headLength(b, startsWith: prefix) }
            }
            let length: Int?
            switch scan {
            case .success(let l): length = l
            case .failure(let e): throw .handshake(e)
            }
            if let length { return (Array(received[..<length]), received[length...]) }
        }
    }

    private static func send(_ bytes: [UInt8], on stream: ByteStream) async throws(WebSocketUpgradeFailure) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: bytes)
        do {
            try await stream.write(UnsafeRawBufferPointer(buffer))
        } catch {
            throw .io(error)
        }
    }
}

/// Why a websocket upgrade failed: the connection, or what the peer said.
enum WebSocketUpgradeFailure: Error, CustomStringConvertible {
    case io(IOError)
    case handshake(WebSocketHandshakeError)

    var description: String {
        switch self {
        case .io(let e): return e.description
        case .handshake(let e): return e.description
        }
    }
}
