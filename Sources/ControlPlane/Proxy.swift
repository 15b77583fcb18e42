import DataPlane
import Noise

/// Opens a TCP connection to a target through `[client.transport.tcp] proxy`: SOCKS5 (RFC 1928,
/// with RFC 1929 username/password) or HTTP CONNECT (with Basic auth). The proxy resolves the
/// target's name. Afterwards the socket is an ordinary stream to the target.
struct ProxyConnector {
    let proxy: ProxyConfig

    init(_ proxy: ProxyConfig) { self.proxy = proxy }

    func connect(to target: HostPort, on ring: RingExecutor, timeout: Duration) async throws(TransportError) -> SocketStream {
        let socket: SocketStream
        do {
            let address = try await proxy.address.resolve(preferIPv6: false)
            socket = try await Socket.connect(to: address, on: ring, timeout: timeout, speaksFirst: true)
        } catch {
            throw .proxy(proxy, .io(error))
        }
        do {
            switch proxy.scheme {
            case .socks5: try await socks5(socket, target: target, timeout: timeout)
            case .http: try await httpConnect(socket, target: target, timeout: timeout)
            }
        } catch {
            socket.close()
            throw .proxy(proxy, error)
        }
        return socket
    }

    private typealias Failure = ProxyFailure

    private func send(_ socket: SocketStream, _ bytes: [UInt8], timeout: Duration) async throws(Failure) {
        do { try await socket.write(bytes: bytes, timeout: timeout) } catch { throw .io(error) }
    }

    private func receive(_ socket: SocketStream, _ count: Int, timeout: Duration) async throws(Failure) -> [UInt8] {
        do {
            return try await socket.readExact(count: count, timeout: timeout)
        } catch .endOfStream {
            throw .refused("the proxy closed the connection")
        } catch {
            throw .io(error)
        }
    }

    // MARK: SOCKS5

    private func socks5(_ socket: SocketStream, target: HostPort, timeout: Duration) async throws(Failure) {
        let credentials = proxy.username.map { ($0, proxy.password?.value ?? "") }
        try await send(socket, credentials == nil ? [5, 1, 0] : [5, 2, 0, 2], timeout: timeout)
        let choice = try await receive(socket, 2, timeout: timeout)
        if try checked(target, { () throws(ProxyReplyError) in try Socks5Reply.methodChoice(choice, offeredPassword: credentials != nil) }),
            let (user, password) = credentials
        {
            let u = Array(user.utf8), p = Array(password.utf8)
            guard u.count < 256, p.count < 256 else { throw .refused("username or password longer than 255 bytes") }
            try await send(socket, [1, UInt8(u.count)] + u + [UInt8(p.count)] + p, timeout: timeout)
            let status = try await receive(socket, 2, timeout: timeout)
            try checked(target) { () throws(ProxyReplyError) in try Socks5Reply.checkPasswordStatus(status) }
        }

        var request: [UInt8] = [5, 1, 0]
        switch target.host {
        case .ipv4(let a):
            request += [1] + withUnsafeBytes(of: a.networkOrder) { Array($0) }
        case .ipv6(let a):
            request += [4] + a.bytes
        case .name(let name):
            let bytes = Array(name.utf8)
            guard bytes.count < 256 else { throw .refused("host name longer than 255 bytes") }
            request += [3, UInt8(bytes.count)] + bytes
        }
        request += [UInt8(target.port >> 8), UInt8(target.port & 0xFF)]
        try await send(socket, request, timeout: timeout)

        // Exactly the reply, however long its address: what follows is the target's.
        var reply: [UInt8] = []
        while true {
            let needed = try checked(target) { () throws(ProxyReplyError) in try Socks5Reply.bytesNeeded(reply) }
            if needed == 0 { return }
            reply += try await receive(socket, needed, timeout: timeout)
        }
    }

    /// Runs a reply check; its error becomes the proxy's refusal, naming the target.
    @discardableResult
    private func checked<R>(_ target: HostPort, _ body: () throws(ProxyReplyError) -> R) throws(Failure) -> R {
        do { return try body() } catch { throw .refused(error.message(target: target)) }
    }

    // MARK: HTTP CONNECT

    private func httpConnect(_ socket: SocketStream, target: HostPort, timeout: Duration) async throws(Failure) {
        var request = "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n"
        if let user = proxy.username {
            let token = NoiseKeys.base64Encode(Array("\(user):\(proxy.password?.value ?? "")".utf8))
            request += "Proxy-Authorization: Basic \(token)\r\n"
        }
        request += "\r\n"
        try await send(socket, Array(request.utf8), timeout: timeout)

        // Read the response head byte by byte: nothing past it belongs to the proxy.
        var head: [UInt8] = []
        while try !checked(target, { () throws(ProxyReplyError) in try HTTPConnectReply.isComplete(head) }) {
            head += try await receive(socket, 1, timeout: timeout)
        }
        try checked(target) { () throws(ProxyReplyError) in try HTTPConnectReply.check(head) }
    }
}

/// Why a proxy did not give us a connection to the server.
enum ProxyFailure: Error, CustomStringConvertible {
    case io(IOError)
    /// The proxy answered, and not with a connection (its reason, in words).
    case refused(String)

    var description: String {
        switch self {
        case .io(let e): return e.description
        case .refused(let why): return why
        }
    }
}
