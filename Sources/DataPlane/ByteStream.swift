import CRatholeRing
import Glibc
import Synchronization

/// A bidirectional byte stream the copy relay can move bytes between: a plain socket, or an
/// encrypted or framed stream built on one.
public protocol ByteStream: AnyObject, Sendable {
    /// Waits until `read` can return without waiting (data, end of stream or an error).
    func waitReadable() async throws(IOError)
    /// Reads up to `buffer.count` bytes; 0 means the peer finished sending. With a timeout,
    /// throws `.timedOut` when nothing arrived in time.
    func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws(IOError) -> Int
    /// Writes all of `buffer`.
    func write(_ buffer: UnsafeRawBufferPointer) async throws(IOError)
    /// Tells the peer no more bytes will come (a FIN, or the stream's equivalent).
    func shutdownWrite() async
    /// Releases the stream and its socket.
    func close()
    /// Closes once the peer has finished sending (or after `grace`): a stream whose reading side
    /// a protocol ended early (a TLS close_notify or websocket close frame, with the peer's last
    /// bytes still on their way) must not close before they arrive, or the late bytes make the
    /// kernel reset the connection, and the peer's kernel then drops what it had not yet read.
    func closeWhenPeerDone(grace: Duration) async
    /// The socket when bytes pass through unchanged, so both ends of a relay can splice.
    var spliceableFD: Int32? { get }
    /// The underlying socket.
    var fd: Int32 { get }
}

extension ByteStream {
    public func read(into buffer: UnsafeMutableRawBufferPointer) async throws(IOError) -> Int {
        try await read(into: buffer, timeout: nil)
    }

    /// A plain socket's reading side ends only at the peer's FIN: nothing can follow it.
    public func closeWhenPeerDone(grace: Duration) async { close() }
}

/// A plain TCP socket as a ByteStream. Operations run on the calling task's ring when it is on
/// one (sockets are process-wide), else on the ring the stream was made on.
public final class SocketStream: ByteStream, @unchecked Sendable {
    public let fd: Int32
    private let home: RingExecutor
    private var ring: RingExecutor { RingExecutor.current ?? home }
    private let closed = Atomic<Bool>(false)

    public init(fd: Int32, ring: RingExecutor) {
        self.fd = fd
        self.home = ring
    }

    public var spliceableFD: Int32? { fd }

    public func waitReadable() async throws(IOError) {
        _ = try await ring.poll(fd, events: Socket.readableEvents)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws(IOError) -> Int {
        try await ring.recv(fd, into: buffer, timeout: timeout)
    }

    public func write(_ buffer: UnsafeRawBufferPointer) async throws(IOError) {
        try await ring.sendAll(fd, buffer)
    }

    public func shutdownWrite() async { Socket.shutdownWrite(fd) }

    public func close() {
        if closed.exchange(true, ordering: .acquiringAndReleasing) { return }
        Socket.close(fd)
    }

    /// Hands the socket over (to a splice relay, say) without closing it.
    public func detach() -> Int32 {
        closed.store(true, ordering: .releasing)
        return fd
    }
}

/// Large copy buffers shared by the connections of one ring: a direction borrows one only while
/// it has bytes in hand, so idle connections hold none.
final class BufferPool {
    static let bufferSize = 256 * 1024
    private var free: [UnsafeMutableRawBufferPointer] = []
    private let keep: Int

    init(keep: Int = 64) { self.keep = keep }

    func borrow() -> UnsafeMutableRawBufferPointer {
        free.popLast() ?? .allocate(byteCount: Self.bufferSize, alignment: 64)
    }

    func giveBack(_ buffer: UnsafeMutableRawBufferPointer) {
        if free.count < keep { free.append(buffer) } else { buffer.deallocate() }
    }

    deinit { free.forEach { $0.deallocate() } }
}
