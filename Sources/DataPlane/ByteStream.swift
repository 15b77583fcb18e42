/// A bidirectional byte stream the copy relay can move bytes between: a plain socket, or an
/// encrypted or framed stream built on one. A stream owns its socket: it closes when the stream is
/// closed, or when the last reference to it goes.
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
    /// Ends the connection both ways and wakes every operation waiting on it; from any thread.
    /// The socket stays open (its number cannot be reused under a waiting operation) until `close`.
    func shutdown()
    /// Releases the stream's socket now.
    func close()
    /// Closes once the peer has finished sending (or after `grace`): a stream whose reading side
    /// a protocol ended early (a TLS close_notify or websocket close frame, with the peer's last
    /// bytes still on their way) must not close before they arrive, or the late bytes make the
    /// kernel reset the connection, and the peer's kernel then drops what it had not yet read.
    func closeWhenPeerDone(grace: Duration) async
    /// True when the connection still looks usable (no end of stream, no error pending).
    var isAlive: Bool { get }
    /// The peer's address, for log lines.
    var peerAddress: SocketAddress? { get }
}

extension ByteStream {
    public func read(into buffer: UnsafeMutableRawBufferPointer) async throws(IOError) -> Int {
        try await read(into: buffer, timeout: nil)
    }

    /// A plain socket's reading side ends only at the peer's FIN: nothing can follow it.
    public func closeWhenPeerDone(grace: Duration) async { close() }
}
