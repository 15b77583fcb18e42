import CRatholeRing
import Glibc

/// A listening TCP socket, shared by the accept loops of every worker. It owns its descriptor,
/// which closes when the last loop lets go of it; `shutdown()` ends the loops (from any thread).
/// Without `reusePort` the port is this process's alone: another process binding it gets
/// "address in use".
public final class TCPListener: Sendable {
    public let address: SocketAddress
    private let descriptor: FileDescriptor
    private var fd: Int32 { descriptor.rawValue }

    public init(_ address: SocketAddress, backlog: Int32 = Socket.maxBacklog, reusePort: Bool = false) throws(IOError) {
        let socket = try Socket.tcp(family: address.family)
        let fd = socket.rawValue
        try Socket.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR")
        if reusePort { try Socket.setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT") }
        if address.isIPv6 { try Socket.setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 0, "IPV6_V6ONLY") }
        _ = try systemCall("bind \(address)") { address.withSockAddr { bind(fd, $0, $1) } }
        _ = try systemCall("listen \(address)") { Glibc.listen(fd, backlog) }
        self.address = Socket.address(fd, peer: false) ?? address
        descriptor = socket
    }

    /// The next connection, accepted on `ring`; `.cancelled` once the listener is shut down.
    public func accept(on ring: RingExecutor) async throws(IOError) -> SocketStream {
        let fd = try await ring.accept(self.fd)
        return SocketStream(FileDescriptor(adopting: fd), ring: ring)
    }

    /// Accepted connections inherit these (on Linux): set once here instead of per connection.
    public func setNoDelay(_ on: Bool) throws(IOError) { try Socket.setNoDelay(fd, on) }

    public func setKeepAlive(idle: Int, interval: Int) throws(IOError) {
        try Socket.setKeepAlive(fd, idle: idle, interval: interval)
    }

    /// Completes accepts only once the peer has sent its first bytes (or after `seconds`), so an
    /// accept finds the client's first message there. Only for protocols where the client speaks first.
    public func setDeferAccept(seconds: Int32) throws(IOError) {
        try Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT, seconds, "TCP_DEFER_ACCEPT")
    }

    /// Stops accepting: the accepts waiting in the rings end (a plain close would not wake them,
    /// the rings hold their own reference to the socket), and the port is free to bind again.
    public func shutdown() {
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }
}
