import CRatholeRing
import Glibc

/// Creating TCP sockets, and the socket options and non-blocking calls that streams and listeners
/// share. Everything here takes the number of a descriptor that a `SocketStream` or `TCPListener`
/// owns; nothing here closes one.
public enum Socket {
    /// Poll events meaning "a read would not block": data, end of stream or an error.
    public static let readableEvents = Int32(POLLIN) | RR_POLLRDHUP

    /// The listen backlog asked for: the kernel caps it at `net.core.somaxconn`, so this means "as
    /// many as the system allows". Visitors wait there while the server is not accepting.
    public static let maxBacklog: Int32 = 65535

    /// A new non-blocking, close-on-exec TCP socket for `family`.
    static func tcp(family: Int32) throws(IOError) -> FileDescriptor {
        FileDescriptor(
            adopting: try systemCall("socket") {
                socket(family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
            })
    }

    /// Connects a new socket to `address` on `ring`, giving up after `timeout`.
    ///
    /// `speaksFirst`: the caller sends as soon as it is connected (every handshake with the server
    /// or a proxy does), so the handshake's final ACK can ride on those bytes instead of going
    /// alone. Linux holds that ACK back (for at most its 200 ms delayed-ACK ceiling) on a socket
    /// with TCP_DEFER_ACCEPT set; it saves the peer a wake-up and both ends a segment.
    public static func connect(
        to address: SocketAddress, on ring: RingExecutor, timeout: Duration? = nil, speaksFirst: Bool = false
    )
        async throws(IOError) -> SocketStream
    {
        let socket = try connectable(to: address, speaksFirst: speaksFirst)
        try await ring.connect(socket.rawValue, to: address, timeout: timeout)
        return SocketStream(socket, ring: ring)
    }

    /// A new socket for a connect to `address` (see `connect` for `speaksFirst`).
    private static func connectable(to address: SocketAddress, speaksFirst: Bool) throws(IOError) -> FileDescriptor {
        let socket = try tcp(family: address.family)
        if speaksFirst { try setOption(socket.rawValue, Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT, 1, "TCP_DEFER_ACCEPT") }
        return socket
    }

    /// `connect` for a caller without a task: `then` gets the connected stream, on the ring's thread.
    /// Call on the ring thread. Nil (after `then` had the error) when no socket could be made.
    @discardableResult
    public static func connect(
        to address: SocketAddress, on ring: RingExecutor, timeout: Duration?, speaksFirst: Bool = false,
        then: @escaping (Result<SocketStream, IOError>) -> Void
    ) -> OperationHandle? {
        let stream: SocketStream
        do throws(IOError) {
            stream = SocketStream(try connectable(to: address, speaksFirst: speaksFirst), ring: ring)
        } catch {
            then(.failure(error))
            return nil
        }
        return ring.connect(stream.fd, to: address, timeout: timeout) { result in
            switch result {
            case .success: then(.success(stream))
            case .failure(let error):
                stream.close()
                then(.failure(error))
            }
        }
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, _ what: String) throws(IOError) {
        var v = value
        _ = try systemCall("setsockopt \(what)") { setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    static func getOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ what: String) throws(IOError) -> Int32 {
        var v: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = try systemCall("getsockopt \(what)") { getsockopt(fd, level, name, &v, &length) }
        return v
    }

    static func setNoDelay(_ fd: Int32, _ on: Bool) throws(IOError) {
        try setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, on ? 1 : 0, "TCP_NODELAY")
    }

    /// TCP keepalive: first probe after `idle` seconds of silence, then every `interval` seconds.
    static func setKeepAlive(_ fd: Int32, idle: Int, interval: Int) throws(IOError) {
        guard idle > 0 else { return }
        try setOption(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE")
        try setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, Int32(idle), "TCP_KEEPIDLE")
        if interval > 0 { try setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, Int32(interval), "TCP_KEEPINTVL") }
    }

    static func address(_ fd: Int32, peer: Bool) -> SocketAddress? {
        var s = sockaddr_in6()
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let rc = withUnsafeMutableBytes(of: &s) { raw in
            let p = raw.baseAddress!.assumingMemoryBound(to: sockaddr.self)
            return peer ? getpeername(fd, p, &length) : getsockname(fd, p, &length)
        }
        return rc == 0 ? SocketAddress(storage: s) : nil
    }

    /// True when the connection still looks usable: no end of stream and no error pending.
    /// Consumes nothing.
    static func isAlive(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        do {
            guard let n = try nonBlockingCall("recv", { recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) }) else { return true }
            return n > 0
        } catch {
            return false
        }
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
