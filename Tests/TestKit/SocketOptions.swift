// Socket options as the kernel holds them on another process's sockets: the socket is borrowed
// with pidfd_getfd (a duplicate that shares the socket) and read with getsockopt.
import CPidfd
import Glibc

public struct TCPSocketOptions: Equatable, Sendable, CustomStringConvertible {
    public var noDelay: Bool
    public var keepAlive: Bool
    /// TCP_KEEPIDLE and TCP_KEEPINTVL, in seconds.
    public var keepIdle: Int32
    public var keepInterval: Int32

    public init(noDelay: Bool, keepAlive: Bool, keepIdle: Int32, keepInterval: Int32) {
        self.noDelay = noDelay
        self.keepAlive = keepAlive
        self.keepIdle = keepIdle
        self.keepInterval = keepInterval
    }

    public var description: String {
        "nodelay \(noDelay), keepalive \(keepAlive) (idle \(keepIdle) s, interval \(keepInterval) s)"
    }
}

extension RatholeProcess {
    /// The options of the TCP socket `inode` this process holds, or nil if it has gone.
    public func socketOptions(inode: UInt64) throws -> TCPSocketOptions? {
        guard let fd = ProcFS.socketFDs(pid: pid)[inode] else { return nil }
        let pidfd = pidfd_open(pid, 0)
        guard pidfd >= 0 else { throw TestFailure("pidfd_open(\(pid)): \(errnoText())") }
        defer { close(pidfd) }
        let mine = spawnGuard.shared { () -> Int32 in
            let dup = pidfd_getfd(pidfd, fd, 0)  // close-on-exec, per the man page
            return dup
        }
        guard mine >= 0 else {
            if errno == EBADF { return nil }
            throw TestFailure("pidfd_getfd(\(pid), \(fd)): \(errnoText())")
        }
        defer { close(mine) }
        func option(_ level: Int32, _ name: Int32) throws -> Int32 {
            var v: Int32 = -1
            var len = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(mine, level, name, &v, &len) == 0 else { throw TestFailure("getsockopt: \(errnoText())") }
            return v
        }
        let tcp = Int32(IPPROTO_TCP)
        return TCPSocketOptions(
            noDelay: try option(tcp, TCP_NODELAY) != 0, keepAlive: try option(SOL_SOCKET, SO_KEEPALIVE) != 0,
            keepIdle: try option(tcp, TCP_KEEPIDLE), keepInterval: try option(tcp, TCP_KEEPINTVL))
    }
}
