import DataPlane
import Glibc

/// What an encrypted session (TLS, Noise) offers a stream: ciphertext in, plaintext out and back.
/// Pure state machines; `SecureStream` does the socket I/O for them.
protocol SecureSession: AnyObject {
    /// Advances the handshake as far as the input allows; true once it is complete.
    func advanceHandshake() throws(TransportError) -> Bool
    /// Space to receive ciphertext into, then `commitInput` with what arrived.
    func inputSpace() throws(TransportError) -> UnsafeMutableRawBufferPointer
    func commitInput(_ count: Int) throws(TransportError)
    /// The peer closed the connection.
    func inputEnded()
    /// Plaintext from the input received so far.
    func readPlaintext(into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) -> SecureRead
    /// True when `readPlaintext` may return something without new input.
    var hasBufferedInput: Bool { get }
    func writePlaintext(_ buffer: UnsafeRawBufferPointer) throws(TransportError)
    /// Ciphertext waiting to be sent; `consumeOutput` after sending some.
    var pendingOutput: UnsafeRawBufferPointer { get }
    func consumeOutput(_ count: Int)
    /// Queues the session's own end-of-stream message, if it has one.
    func finishWriting()
}

enum SecureRead {
    case bytes(Int)
    case wantInput
    case closed
}

/// An encrypted stream over a TCP socket. Every operation runs on the stream's home ring, so the
/// session (not thread-safe) is only ever touched from one thread; concurrent reader and writer
/// tasks interleave only at their awaits.
final class SecureStream<Session: SecureSession>: ByteStream, @unchecked Sendable {
    let fd: Int32
    let ring: RingExecutor
    private let session: Session
    private var flushing = false
    private var flushWaiters: [UnsafeContinuation<Void, Never>] = []
    private var closed = false
    /// The peer's FIN was read: nothing more can arrive.
    private var peerFinished = false

    init(fd: Int32, ring: RingExecutor, session: Session) {
        self.fd = fd
        self.ring = ring
        self.session = session
    }

    var spliceableFD: Int32? { nil }

    /// Runs the handshake to completion (bounded by the caller's timeout).
    func handshake() async throws(TransportError) {
        do throws(IOError) {
            try await ring.onRing { () async throws(IOError) in
                while true {
                    let done: Bool
                    do throws(TransportError) { done = try session.advanceHandshake() } catch { throw .system(Errno(EPROTO), operation: error.description) }
                    try await flush()
                    if done { return }
                    if try await fill(timeout: nil) == 0 {
                        throw IOError.system(Errno(ECONNRESET), operation: "handshake: connection closed by peer")
                    }
                }
            }
        } catch {
            if case .system(_, let why) = error { throw TransportError(why) }
            throw TransportError(error)
        }
    }

    func waitReadable() async throws(IOError) {
        try await ring.onRing { () async throws(IOError) in
            if session.hasBufferedInput { return }
            _ = try await ring.poll(fd, events: Socket.readableEvents)
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws(IOError) -> Int {
        try await ring.onRing { () async throws(IOError) -> Int in
            while true {
                let result: SecureRead
                do throws(TransportError) { result = try session.readPlaintext(into: buffer) } catch { throw .system(Errno(EBADMSG), operation: error.description) }
                // What reading produced (TLS alerts, tickets) goes out now; but while a writer is
                // flushing, it sends that too: waiting for it here would stop this reader whenever
                // the peer is slow to read, and with both ends doing that at once, deadlock.
                if !flushing && !session.pendingOutput.isEmpty { try await flush() }
                switch result {
                case .bytes(let n): return n
                case .closed: return 0
                case .wantInput: _ = try await fill(timeout: timeout)
                }
            }
        }
    }

    func write(_ buffer: UnsafeRawBufferPointer) async throws(IOError) {
        try await ring.onRing { () async throws(IOError) in
            do throws(TransportError) { try session.writePlaintext(buffer) } catch { throw .system(Errno(EPROTO), operation: error.description) }
            try await flush()
        }
    }

    func shutdownWrite() async {
        try? await ring.onRing { () async throws(IOError) in
            session.finishWriting()
            try await flush()
            Socket.shutdownWrite(fd)
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        Socket.close(fd)
    }

    /// Reads and drops what the peer still sends after its close_notify (or after a websocket
    /// close frame on top) until its FIN, so that closing does not reset the connection.
    func closeWhenPeerDone(grace: Duration) async {
        try? await ring.onRing { () async throws(IOError) in
            let deadline = ContinuousClock.now + grace
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
            defer { scratch.deallocate() }
            while !peerFinished && !closed {
                let left = deadline - .now
                guard left > .zero else { break }
                if try await ring.recv(fd, into: scratch, timeout: left) == 0 { peerFinished = true }
            }
        }
        close()
    }

    /// Receives ciphertext into the session; returns the bytes received (0: the peer closed).
    private func fill(timeout: Duration?) async throws(IOError) -> Int {
        let space: UnsafeMutableRawBufferPointer
        do throws(TransportError) { space = try session.inputSpace() } catch { throw .system(Errno(ENOMEM), operation: error.description) }
        let n = try await ring.recv(fd, into: space, timeout: timeout)
        if n == 0 {
            peerFinished = true
            session.inputEnded()
        } else {
            do throws(TransportError) { try session.commitInput(n) } catch { throw .system(Errno(EBADMSG), operation: error.description) }
        }
        return n
    }

    /// Sends all pending ciphertext. One flusher at a time: a second caller waits for the first,
    /// then sends whatever it added meanwhile.
    private func flush() async throws(IOError) {
        while flushing {
            await withUnsafeContinuation { flushWaiters.append($0) }
        }
        flushing = true
        defer {
            flushing = false
            if !flushWaiters.isEmpty { flushWaiters.removeFirst().resume() }
        }
        while true {
            let pending = session.pendingOutput
            if pending.isEmpty { return }
            let n = try await ring.send(fd, pending)
            session.consumeOutput(n)
        }
    }
}

extension TCPTransport {
    /// A TCP connection with an encrypted session on top, handshake done.
    func connectSecured<Session: SecureSession>(
        to endpoint: Endpoint, on ring: RingExecutor, name: String, makeSession: () throws(TransportError) -> Session
    ) async throws(TransportError) -> ByteStream {
        let raw = try await connect(to: endpoint, on: ring)
        return try await secure(raw.fd, on: ring, name: name, makeSession: makeSession)
    }

    /// The server side of the same: an accepted socket, secured.
    func acceptSecured<Session: SecureSession>(
        fd: Int32, on ring: RingExecutor, name: String, makeSession: () throws(TransportError) -> Session
    ) async throws(TransportError) -> ByteStream {
        _ = try await accept(fd: fd, on: ring)
        return try await secure(fd, on: ring, name: name, makeSession: makeSession)
    }

    /// `name` ("tls", "noise") starts the error lines.
    private func secure<Session: SecureSession>(
        _ fd: Int32, on ring: RingExecutor, name: String, makeSession: () throws(TransportError) -> Session
    ) async throws(TransportError) -> ByteStream {
        let session: Session
        do {
            session = try makeSession()
        } catch {
            Socket.close(fd)
            throw error
        }
        let stream = SecureStream(fd: fd, ring: ring, session: session)
        do {
            try await stream.handshake()
        } catch {
            stream.close()
            throw TransportError("\(name) handshake: \(error)")
        }
        return stream
    }
}
