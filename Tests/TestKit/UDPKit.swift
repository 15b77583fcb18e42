// UDP for the tests: a socket on 127.0.0.1 or [::1] whose receives all time out, and an echo
// service that counts datagrams and distinct senders (the client's per-visitor sockets).
import Glibc

/// A UDP socket bound to 127.0.0.1 or [::1] (kernel-chosen port unless given).
public final class UDPSocket: @unchecked Sendable {  // the fd is used by one thread at a time; `closed` is locked
    public let fd: Int32
    public let ipv6: Bool
    public let port: UInt16
    private let closed = Locked(false)

    public init(ipv6: Bool = false, port: UInt16 = 0) throws {
        self.ipv6 = ipv6
        let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("udp socket: \(errnoText())") }
        var size: Int32 = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var storage = Loopback.address(ipv6: ipv6, port: port)
        guard Loopback.bind(fd, &storage, ipv6: ipv6) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw TestFailure("udp bind \(Loopback.host(ipv6: ipv6)):\(port): \(errnoText(e))")
        }
        self.fd = fd
        self.port = localPort(fd)
    }

    deinit { close() }

    /// Sends one datagram to the loopback address of this socket's family, port `port`.
    public func send(_ bytes: [UInt8], toPort port: UInt16) throws {
        var to = Loopback.address(ipv6: ipv6, port: port)
        try send(bytes, to: &to, length: Loopback.length(ipv6: ipv6))
    }

    public func send(_ bytes: [UInt8], to address: inout sockaddr_in6, length: socklen_t) throws {
        let n = bytes.withUnsafeBytes { raw in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, raw.baseAddress, raw.count, 0, $0, length) }
            }
        }
        guard n == bytes.count else { throw TestFailure("sendto (\(bytes.count) bytes): \(errnoText())") }
    }

    /// One datagram and its sender, or nil after `timeout` seconds.
    public func receiveFrom(timeout: Double) -> (bytes: [UInt8], from: sockaddr_in6, length: socklen_t)? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = monoNow() + timeout
        while true {
            let rc = poll(&p, 1, Int32(max(0, deadline - monoNow()) * 1000))
            if rc == 0 { return nil }
            if rc < 0 {
                if errno == EINTR { continue }
                return nil
            }
            var buf = [UInt8](repeating: 0, count: 65536)
            var from = sockaddr_in6()
            var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
            let n = buf.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT), $0, &len)
                    }
                }
            }
            if n >= 0 { return (Array(buf[0..<n]), from, len) }
            if errno == EAGAIN || errno == EINTR { continue }
            return nil
        }
    }

    public func receive(timeout: Double) -> [UInt8]? { receiveFrom(timeout: timeout)?.bytes }

    /// Sends `payload` to `port` and waits for a datagram back, up to `attempts` times (UDP may
    /// drop, and the tunnel may not be ready yet); returns the first datagram that came back.
    public func roundTrip(_ payload: [UInt8], toPort port: UInt16, attempts: Int = 3, timeout: Double = 3) -> [UInt8]? {
        for _ in 0..<attempts {
            guard (try? send(payload, toPort: port)) != nil else { return nil }
            if let back = receive(timeout: timeout) { return back }
        }
        return nil
    }

    public func close() {
        let first = closed.withLock { c -> Bool in
            defer { c = true }
            return !c
        }
        if first { Glibc.close(fd) }
    }
}

/// A UDP echo service on 127.0.0.1 or [::1]: every datagram goes back to its sender.
public final class UDPEcho: Sendable {
    public let socket: UDPSocket
    public var port: UInt16 { socket.port }
    private let state = Locked<(datagrams: Int, senders: Set<UInt16>, stopped: Bool)>((0, [], false))
    private let done = Latch()

    public init(ipv6: Bool = false) throws {
        socket = try UDPSocket(ipv6: ipv6)
        spawnThread { [self] in loop() }
    }

    public var datagrams: Int { state.get.datagrams }
    public var senders: Set<UInt16> { state.get.senders }

    private func loop() {
        defer { done.open() }
        while !state.get.stopped {
            guard let received = socket.receiveFrom(timeout: 0.2) else { continue }
            var from = received.from
            state.withLock {
                $0.datagrams += 1
                $0.senders.insert(UInt16(bigEndian: from.sin6_port))
            }
            try? socket.send(received.bytes, to: &from, length: received.length)
        }
    }

    public func stop() {
        let first = state.withLock { s -> Bool in
            defer { s.stopped = true }
            return !s.stopped
        }
        if first {
            _ = done.wait(seconds: 10)
            socket.close()
        }
    }
}
