import CRatholeRing
import Glibc

/// Synchronous socket set-up calls (cheap, never blocking) and the async connect that uses the ring.
public enum Socket {
    /// Poll events meaning "a read would not block": data, end of stream or an error.
    public static let readableEvents = Int32(POLLIN) | RR_POLLRDHUP

    /// A new non-blocking, close-on-exec TCP socket for `family`.
    public static func tcp(family: Int32) throws(IOError) -> Int32 {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        return try IOError.checkLibc(fd, "socket")
    }

    /// The listen backlog asked for: the kernel caps it at `net.core.somaxconn`, so this means "as
    /// many as the system allows". Visitors wait there while the server is not accepting.
    public static let maxBacklog: Int32 = 65535

    /// A listening TCP socket. Without `reusePort` the port is this process's alone (another
    /// process binding it gets "address in use"); the workers share the one listener.
    public static func listen(_ address: SocketAddress, backlog: Int32 = maxBacklog, reusePort: Bool = false) throws(IOError) -> Int32 {
        let fd = try tcp(family: address.family)
        do {
            try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR")
            if reusePort { try setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT") }
            if address.isIPv6 { try? setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 0, "IPV6_V6ONLY") }
            _ = try IOError.checkLibc(address.withSockAddr { bind(fd, $0, $1) }, "bind \(address)")
            _ = try IOError.checkLibc(Glibc.listen(fd, backlog), "listen \(address)")
        } catch {
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// Creates a socket and connects it to `address` on `ring`; the socket is closed on failure.
    public static func connect(to address: SocketAddress, on ring: RingExecutor, timeout: Duration? = nil) async throws(IOError) -> Int32 {
        let fd = try tcp(family: address.family)
        do {
            try await ring.connect(fd, to: address, timeout: timeout)
        } catch {
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// Completes accepts only once the peer has sent its first bytes (or after `seconds`), so a
    /// connection that would open with silence costs no accept and no task. Only for protocols
    /// where the client speaks first.
    public static func setDeferAccept(_ fd: Int32, seconds: Int32) {
        try? setOption(fd, Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT, seconds, "TCP_DEFER_ACCEPT")
    }

    /// Sends what the socket buffer takes now, without waiting; for the few bytes a fresh or idle
    /// connection can always take. Returns how many bytes were sent.
    public static func sendNow(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(IOError) -> Int {
        while true {
            let n = Glibc.send(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            if n >= 0 { return n }
            if errno != EINTR { throw .system(.current, operation: "send") }
        }
    }

    /// Receives what has arrived, without waiting: nil when nothing has (yet), 0 at end of stream.
    public static func receiveNow(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(IOError) -> Int? {
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
            if n >= 0 { return n }
            if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
            if errno != EINTR { throw .system(.current, operation: "recv") }
        }
    }

    public static func setNoDelay(_ fd: Int32, _ on: Bool) {
        try? setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, on ? 1 : 0, "TCP_NODELAY")
    }

    /// TCP keepalive: first probe after `idle` seconds of silence, then every `interval` seconds.
    public static func setKeepAlive(_ fd: Int32, idle: Int, interval: Int) {
        guard idle > 0 else { return }
        try? setOption(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE")
        try? setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, Int32(idle), "TCP_KEEPIDLE")
        if interval > 0 { try? setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, Int32(interval), "TCP_KEEPINTVL") }
    }

    public static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, _ what: String) throws(IOError) {
        var v = value
        _ = try IOError.checkLibc(setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)), "setsockopt \(what)")
    }

    public static func close(_ fd: Int32) { Glibc.close(fd) }

    public static func shutdownWrite(_ fd: Int32) { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Shuts a socket down both ways, waking any poll or accept the ring has on it.
    public static func shutdownBoth(_ fd: Int32) { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    /// Closes a listening socket and wakes an accept waiting on it in the ring (a plain close
    /// would not: the ring holds its own reference to the file).
    public static func closeListener(_ fd: Int32) {
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }

    public static func localAddress(_ fd: Int32) -> SocketAddress? {
        var s = sockaddr_in6()
        var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let rc = withUnsafeMutableBytes(of: &s) { getsockname(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len) }
        return rc == 0 ? SocketAddress(storage: s) : nil
    }

    public static func peerAddress(_ fd: Int32) -> SocketAddress? {
        var s = sockaddr_in6()
        var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let rc = withUnsafeMutableBytes(of: &s) { getpeername(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len) }
        return rc == 0 ? SocketAddress(storage: s) : nil
    }

    /// True when the connection still looks usable: no EOF and no error pending. Does not consume data.
    public static func isAlive(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        if n > 0 { return true }
        if n == 0 { return false }
        return errno == EAGAIN || errno == EWOULDBLOCK
    }

    /// Raises the open-file limit to its hard limit; returns the new soft limit.
    @discardableResult
    public static func raiseOpenFileLimit() -> UInt64 {
        var lim = rlimit()
        guard getrlimit(RLIMIT_NOFILE_VALUE, &lim) == 0 else { return 0 }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max
            _ = setrlimit(RLIMIT_NOFILE_VALUE, &lim)
        }
        return UInt64(lim.rlim_cur)
    }

    /// The process's current limit on open files.
    public static var openFileLimit: Int {
        var lim = rlimit()
        guard getrlimit(RLIMIT_NOFILE_VALUE, &lim) == 0 else { return 1024 }
        return lim.rlim_cur > UInt(Int.max) ? Int.max : Int(lim.rlim_cur)
    }

    private static var RLIMIT_NOFILE_VALUE: __rlimit_resource_t { __rlimit_resource_t(RLIMIT_NOFILE.rawValue) }
}
