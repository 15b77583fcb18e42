import CRatholeRing
import Glibc
import Synchronization

/// A connected TCP socket as a ByteStream. It owns the descriptor: `close()` (or the last
/// reference going) closes it, and `detach()` hands it to a splice relay. Operations run on the
/// calling task's ring when it is on one (descriptors are process-wide), else on the ring the
/// stream was made on.
public final class SocketStream: ByteStream, Sendable {
    /// The descriptor's number, for operations while the stream owns it.
    let fd: Int32
    private let home: RingExecutor
    private let owned: Mutex<FileDescriptor?>
    private var ring: RingExecutor { RingExecutor.current ?? home }

    public init(_ descriptor: consuming FileDescriptor, ring: RingExecutor) {
        fd = descriptor.rawValue
        home = ring
        owned = Mutex(descriptor)
    }

    public func waitReadable() async throws(IOError) {
        _ = try await ring.poll(fd, events: Socket.readableEvents)
    }

    /// `waitReadable` for a caller without a task, on the ring thread: `then` runs there once bytes
    /// or the end of the stream arrived.
    public func whenReadable(then: @escaping (Result<Void, IOError>) -> Void) -> OperationHandle {
        ring.poll(fd, events: Socket.readableEvents) { then($0.map { _ in }) }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws(IOError) -> Int {
        try await ring.recv(fd, into: buffer, timeout: timeout)
    }

    public func write(_ buffer: UnsafeRawBufferPointer) async throws(IOError) {
        try await ring.sendAll(fd, buffer)
    }

    /// Sends all of `bytes` (control-plane convenience; copies once).
    public func write(bytes: [UInt8], timeout: Duration? = nil) async throws(IOError) {
        try await ring.sendAll(fd, bytes: bytes, timeout: timeout)
    }

    /// Receives exactly `count` bytes (control-plane convenience).
    public func readExact(count: Int, timeout: Duration? = nil) async throws(IOError) -> [UInt8] {
        try await ring.recvExact(fd, count: count, timeout: timeout)
    }

    public func shutdownWrite() async { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    public func shutdown() { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    public func close() {
        _ = owned.withLock { $0.take() }
    }

    /// Hands the socket over (to a splice relay): the stream no longer owns or uses it. Nil when
    /// it was closed.
    public func detach() -> FileDescriptor? {
        owned.withLock { $0.take() }
    }

    public var isAlive: Bool { Socket.isAlive(fd) }

    public var peerAddress: SocketAddress? { Socket.address(fd, peer: true) }

    public func setNoDelay(_ on: Bool) throws(IOError) { try Socket.setNoDelay(fd, on) }

    public func setKeepAlive(idle: Int, interval: Int) throws(IOError) {
        try Socket.setKeepAlive(fd, idle: idle, interval: interval)
    }

    /// Sends what the socket buffer takes now, without waiting: for the few bytes a fresh or idle
    /// connection always has room for. Returns how many were taken. With `more`, TCP holds them
    /// (MSG_MORE) until the next send on the socket, to go out in one segment with its bytes.
    public func sendNow(_ buffer: UnsafeRawBufferPointer, more: Bool = false) throws(IOError) -> Int {
        let flags = Int32(MSG_DONTWAIT | MSG_NOSIGNAL) | (more ? Int32(MSG_MORE) : 0)
        return try nonBlockingCall("send") { Glibc.send(fd, buffer.baseAddress, buffer.count, flags) } ?? 0
    }

    /// Receives what has arrived, without waiting: nil when nothing has yet, 0 at end of stream.
    /// With `peek` the bytes stay for the next read.
    public func receiveNow(into buffer: UnsafeMutableRawBufferPointer, peek: Bool = false) throws(IOError) -> Int? {
        let flags = Int32(MSG_DONTWAIT) | (peek ? Int32(MSG_PEEK) : 0)
        return try nonBlockingCall("recv") { recv(fd, buffer.baseAddress, buffer.count, flags) }
    }

    /// How many bytes have arrived and wait to be read (nothing is read).
    public var bytesWaiting: Int {
        var count: Int32 = 0
        return ioctl(fd, UInt(FIONREAD), &count) == 0 ? Int(count) : 0
    }

    /// A socket option's value, read back (to check what a connection was given).
    public func option(level: Int32, name: Int32) throws(IOError) -> Int32 {
        try Socket.getOption(fd, level, name, "option \(name)")
    }
}
