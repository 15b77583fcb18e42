import DataPlane
import Noise

/// Opens a TCP connection to a target through `[client.transport.tcp] proxy`: SOCKS5 (RFC 1928,
/// with RFC 1929 username/password) or HTTP CONNECT (with Basic auth). The proxy resolves the
/// target's name. Afterwards the socket is an ordinary stream to the target.
struct ProxyConnector {
    let proxy: ProxyConfig

    init(_ proxy: ProxyConfig) { self.proxy = proxy }

    func connect(to target: HostPort, on ring: RingExecutor, timeout: Duration) async throws(TransportError) -> Int32 {
        let fd: Int32
        do {
            let address = try await proxy.address.resolve(preferIPv6: false)
            fd = try await Socket.connect(to: address, on: ring, timeout: timeout)
        } catch {
            throw TransportError("proxy \(proxy): \(error)")
        }
        do {
            switch proxy.scheme {
            case .socks5: try await socks5(fd, target: target, ring: ring, timeout: timeout)
            case .http: try await httpConnect(fd, target: target, ring: ring, timeout: timeout)
            }
        } catch {
            Socket.close(fd)
            throw TransportError("proxy \(proxy): \(error.message)")
        }
        return fd
    }

    private struct Failure: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }

    private func send(_ fd: Int32, _ bytes: [UInt8], ring: RingExecutor, timeout: Duration) async throws(Failure) {
        do { try await ring.sendAll(fd, bytes: bytes, timeout: timeout) } catch { throw Failure("\(error)") }
    }

    private func receive(_ fd: Int32, _ count: Int, ring: RingExecutor, timeout: Duration) async throws(Failure) -> [UInt8] {
        do {
            return try await ring.recvExact(fd, count: count, timeout: timeout)
        } catch .endOfStream {
            throw Failure("the proxy closed the connection")
        } catch {
            throw Failure("\(error)")
        }
    }

    // MARK: SOCKS5

    private func socks5(_ fd: Int32, target: HostPort, ring: RingExecutor, timeout: Duration) async throws(Failure) {
        let credentials = proxy.username.map { ($0, proxy.password?.value ?? "") }
        try await send(fd, credentials == nil ? [5, 1, 0] : [5, 2, 0, 2], ring: ring, timeout: timeout)
        let choice = try await receive(fd, 2, ring: ring, timeout: timeout)
        guard choice[0] == 5 else { throw Failure("not a SOCKS5 proxy") }
        switch choice[1] {
        case 0:
            break
        case 2:
            guard let (user, password) = credentials else { throw Failure("the proxy wants a username and password") }
            let u = Array(user.utf8), p = Array(password.utf8)
            guard u.count < 256, p.count < 256 else { throw Failure("username or password longer than 255 bytes") }
            try await send(fd, [1, UInt8(u.count)] + u + [UInt8(p.count)] + p, ring: ring, timeout: timeout)
            let status = try await receive(fd, 2, ring: ring, timeout: timeout)
            guard status[1] == 0 else { throw Failure("the proxy rejected the username/password") }
        default:
            throw Failure("the proxy accepts none of our authentication methods")
        }

        var request: [UInt8] = [5, 1, 0]
        switch target.host {
        case .ipv4(let a):
            request += [1] + withUnsafeBytes(of: a.networkOrder) { Array($0) }
        case .ipv6(let a):
            request += [4] + a.bytes
        case .name(let name):
            let bytes = Array(name.utf8)
            guard bytes.count < 256 else { throw Failure("host name longer than 255 bytes") }
            request += [3, UInt8(bytes.count)] + bytes
        }
        request += [UInt8(target.port >> 8), UInt8(target.port & 0xFF)]
        try await send(fd, request, ring: ring, timeout: timeout)

        let head = try await receive(fd, 4, ring: ring, timeout: timeout)
        guard head[0] == 5 else { throw Failure("malformed SOCKS5 reply") }
        guard head[1] == 0 else { throw Failure("the proxy could not connect to \(target): \(Self.socksReply(head[1]))") }
        let addressLength: Int
        switch head[3] {
        case 1: addressLength = 4
        case 4: addressLength = 16
        case 3: addressLength = Int(try await receive(fd, 1, ring: ring, timeout: timeout)[0])
        default: throw Failure("malformed SOCKS5 reply (address type \(head[3]))")
        }
        _ = try await receive(fd, addressLength + 2, ring: ring, timeout: timeout)
    }

    private static func socksReply(_ code: UInt8) -> String {
        switch code {
        case 1: return "general failure"
        case 2: return "not allowed by the proxy's rules"
        case 3: return "network unreachable"
        case 4: return "host unreachable"
        case 5: return "connection refused"
        case 6: return "TTL expired"
        case 7: return "command not supported"
        case 8: return "address type not supported"
        default: return "error \(code)"
        }
    }

    // MARK: HTTP CONNECT

    private func httpConnect(_ fd: Int32, target: HostPort, ring: RingExecutor, timeout: Duration) async throws(Failure) {
        var request = "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n"
        if let user = proxy.username {
            let token = NoiseKeys.base64Encode(Array("\(user):\(proxy.password?.value ?? "")".utf8))
            request += "Proxy-Authorization: Basic \(token)\r\n"
        }
        request += "\r\n"
        try await send(fd, Array(request.utf8), ring: ring, timeout: timeout)

        // Read the response head byte by byte: nothing past it belongs to the proxy.
        var head: [UInt8] = []
        while !(head.count >= 4 && head.suffix(4).elementsEqual([13, 10, 13, 10])) {
            guard head.count < 16 * 1024 else { throw Failure("response head longer than 16 KiB") }
            head += try await receive(fd, 1, ring: ring, timeout: timeout)
        }
        let statusLine = String(decoding: head.prefix { $0 != 13 }, as: UTF8.self)
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let code = Int(parts[1]) else {
            throw Failure("not an HTTP proxy (answered \"\(statusLine)\")")
        }
        guard (200..<300).contains(code) else { throw Failure("CONNECT \(target) refused: \(statusLine)") }
    }
}
