// A listening TCP socket on loopback (port 0: the kernel's choice): accepts blocking `Conn`s for
// local services and fake peers, and makes connected pairs for the DataPlane tests.
import DataPlane
import Glibc
import Synchronization

public final class Listener: Sendable {
    public let fd: Int32
    public let port: UInt16
    public let ipv6: Bool
    private let stopped = Atomic<Bool>(false)
    private let isClosed = Atomic<Bool>(false)

    /// Non-blocking, so that accept never blocks while holding `spawnGuard` (accepted sockets do
    /// not inherit O_NONBLOCK on Linux).
    public init(ipv6: Bool = false, port: UInt16 = 0, backlog: Int32 = 4096) throws {
        let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errnoText())") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = Loopback.address(ipv6: ipv6, port: port)
        let rc = Loopback.bind(fd, &addr, ipv6: ipv6)
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        guard rc == 0, listen(fd, backlog) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw TestFailure("bind/listen \(Loopback.host(ipv6: ipv6)):\(port): \(errnoText(e))")
        }
        self.fd = fd
        self.ipv6 = ipv6
        self.port = localPort(fd)
    }

    deinit { close() }

    public var address: SocketAddress { .loopback(port: port, ipv6: ipv6) }

    /// The next connection within `timeout` seconds, or nil.
    public func accept(timeout: Double) -> Conn? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = monoNow() + timeout
        while true {
            let rc = poll(&p, 1, Int32(max(0, deadline - monoNow()) * 1000))
            if rc == 0 { return nil }
            if rc < 0 {
                if errno == EINTR { continue }
                return nil
            }
            let c = acceptCloexec(fd)
            if c >= 0 { return Conn(fd: c) }
            if errno == EINTR || errno == ECONNABORTED || errno == EAGAIN { continue }
            return nil
        }
    }

    /// Waits for the next connection; nil once the listener is shut down.
    public func acceptBlocking() -> Int32? {
        while true {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let rc = poll(&p, 1, 200)
            if stopped.load(ordering: .acquiring) { return nil }
            if rc < 0 && errno != EINTR { return nil }
            if rc <= 0 { continue }
            let c = acceptCloexec(fd)
            if c >= 0 { return c }
            if errno == EINTR || errno == ECONNABORTED || errno == EAGAIN { continue }
            return nil
        }
    }

    /// A connected TCP pair made through this listener. `outer` is a blocking socket for test
    /// threads (ring ops work on it too); `inner` was accepted non-blocking, as relays require.
    public func pair() throws -> (outer: Int32, inner: Int32) {
        let outer = try blockingConnect(to: address)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&pfd, 1, 5000) == 1 else {
            Glibc.close(outer)
            throw TestFailure("no connection to accept")
        }
        let inner = acceptCloexec(fd)
        guard inner >= 0 else {
            let e = errno
            Glibc.close(outer)
            throw TestFailure("accept: \(errnoText(e))")
        }
        _ = fcntl(inner, F_SETFL, fcntl(inner, F_GETFL) | O_NONBLOCK)
        // Only one connection is ever pending, but make sure the two ends really belong together.
        guard peerPort(inner) == localPort(outer) else {
            Glibc.close(outer)
            Glibc.close(inner)
            throw TestFailure("accepted a connection that is not ours")
        }
        return (outer, inner)
    }

    /// Stops `acceptBlocking` and wakes it.
    public func shutdown() {
        stopped.store(true, ordering: .releasing)
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    public func close() {
        if !isClosed.exchange(true, ordering: .acquiringAndReleasing) { Glibc.close(fd) }
    }
}

/// A blocking TCP socket connected with connect(2) to a loopback address; send and recv time out
/// after 20 s so that a broken relay fails a test instead of hanging it.
public func blockingConnect(to address: SocketAddress) throws -> Int32 {
    let fd = socket(address.family, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(errnoText())") }
    var addr = Loopback.address(ipv6: address.isIPv6, port: address.port)
    guard Loopback.connect(fd, &addr, ipv6: address.isIPv6) == 0 else {
        let e = errno
        Glibc.close(fd)
        throw TestFailure("connect to \(address): \(errnoText(e))")
    }
    setIOTimeout(fd, seconds: 20)
    return fd
}

public func setIOTimeout(_ fd: Int32, seconds: Int) {
    var tv = timeval(tv_sec: seconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
}

/// Closes with SO_LINGER 0, so the peer gets a RST instead of a FIN.
public func resetClose(_ fd: Int32) {
    var lin = linger(l_onoff: 1, l_linger: 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, socklen_t(MemoryLayout<linger>.size))
    Glibc.close(fd)
}

/// Waits until something accepts connections on 127.0.0.1:port. Only for ports where a probe
/// connection is harmless (never a rathole port: a probe there is a visitor or a stranger).
public func waitForPortOpen(_ port: UInt16, timeout: Double) -> Bool {
    waitUntil(timeout: timeout) { (try? Conn.connect(port: port)) != nil }
}
