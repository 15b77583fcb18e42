import DataPlane

/// What an encrypted session (TLS, Noise) offers a stream: ciphertext in, plaintext out and back.
/// Pure state machines; `SecureStream` does the socket I/O for them.
protocol SecureSession: AnyObject {
    associatedtype Failure: Error & Sendable
    /// Advances the handshake as far as the input allows; true once it is complete.
    func advanceHandshake() throws(Failure) -> Bool
    /// Space to receive ciphertext into, then `commitInput` with what arrived.
    func inputSpace() throws(Failure) -> UnsafeMutableRawBufferPointer
    func commitInput(_ count: Int) throws(Failure)
    /// The peer closed the connection.
    func inputEnded()
    /// Plaintext from the input received so far.
    func readPlaintext(into buffer: UnsafeMutableRawBufferPointer) throws(Failure) -> SecureRead
    /// True when `readPlaintext` may return something without new input.
    var hasBufferedInput: Bool { get }
    func writePlaintext(_ buffer: UnsafeRawBufferPointer) throws(Failure)
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

/// An encrypted stream over a TCP socket, which it owns. Every operation runs on the stream's home
/// ring, so the session (not thread-safe) is only ever touched from one thread; concurrent reader
/// and writer tasks interleave only at their awaits.
final class SecureStream<Session: SecureSession>: ByteStream {
    let socket: SocketStream
    let ring: RingExecutor
    private let state: RingBound<State>

    private final class State {
        let session: Session
        var flushing = false
        var flushWaiters: [UnsafeContinuation<Void, Never>] = []
        /// The peer's FIN was read: nothing more can arrive.
        var peerFinished = false
        init(_ session: Session) { self.session = session }
    }

    init(over socket: SocketStream, ring: RingExecutor, session: Session) {
        self.socket = socket
        self.ring = ring
        state = RingBound(State(session), ring: ring)
    }

    /// Runs the handshake to completion (bounded by the caller's timeout).
    func handshake() async throws(IOError) {
        try await ring.onRing { () async throws(IOError) in
            let s = state.value
            while true {
                let done = try Self.layer { () throws(Session.Failure) in try s.session.advanceHandshake() }
                try await flush()
                if done { return }
                if try await fill(timeout: nil) == 0 { throw IOError.endOfStream }
            }
        }
    }

    /// A session failure as what the stream's operations throw.
    private static func layer<T>(_ body: () throws(Session.Failure) -> T) throws(IOError) -> T {
        do { return try body() } catch { throw .layer(error) }
    }

    func waitReadable() async throws(IOError) {
        try await ring.onRing { () async throws(IOError) in
            if state.value.session.hasBufferedInput { return }
            try await socket.waitReadable()
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws(IOError) -> Int {
        try await ring.onRing { () async throws(IOError) -> Int in
            let s = state.value
            while true {
                let result = try Self.layer { () throws(Session.Failure) in try s.session.readPlaintext(into: buffer) }
                // What reading produced (TLS alerts, tickets) goes out now; but while a writer is
                // flushing, it sends that too: waiting for it here would stop this reader whenever
                // the peer is slow to read, and with both ends doing that at once, deadlock.
                if !s.flushing && !s.session.pendingOutput.isEmpty { try await flush() }
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
            let s = state.value
            try Self.layer { () throws(Session.Failure) in try s.session.writePlaintext(buffer) }
            try await flush()
        }
    }

    func shutdownWrite() async {
        try? await ring.onRing { () async throws(IOError) in
            state.value.session.finishWriting()
            try await flush()
            await socket.shutdownWrite()
        }
    }

    func shutdown() { socket.shutdown() }

    func close() { socket.close() }

    var isAlive: Bool { socket.isAlive }

    var peerAddress: SocketAddress? { socket.peerAddress }

    /// Reads and drops what the peer still sends after its close_notify (or after a websocket
    /// close frame on top) until its FIN, so that closing does not reset the connection.
    func closeWhenPeerDone(grace: Duration) async {
        try? await ring.onRing { () async throws(IOError) in
            let deadline = ContinuousClock.now + grace
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
            defer { scratch.deallocate() }
            while !state.value.peerFinished {
                let left = deadline - .now
                guard left > .zero else { break }
                if try await socket.read(into: scratch, timeout: left) == 0 { state.value.peerFinished = true }
            }
        }
        close()
    }

    /// Receives ciphertext into the session; returns the bytes received (0: the peer closed).
    private func fill(timeout: Duration?) async throws(IOError) -> Int {
        let s = state.value
        let space = try Self.layer { () throws(Session.Failure) in try s.session.inputSpace() }
        let n = try await socket.read(into: space, timeout: timeout)
        if n == 0 {
            s.peerFinished = true
            s.session.inputEnded()
        } else {
            try Self.layer { () throws(Session.Failure) in try s.session.commitInput(n) }
        }
        return n
    }

    /// Sends all pending ciphertext. One flusher at a time: a second caller waits for the first,
    /// then sends whatever it added meanwhile.
    private func flush() async throws(IOError) {
        let s = state.value
        while s.flushing {
            await withUnsafeContinuation { s.flushWaiters.append($0) }
        }
        s.flushing = true
        defer {
            s.flushing = false
            if !s.flushWaiters.isEmpty { s.flushWaiters.removeFirst().resume() }
        }
        while true {
            let pending = s.session.pendingOutput
            if pending.isEmpty { return }
            try await socket.write(pending)
            s.session.consumeOutput(pending.count)
        }
    }
}

extension TCPTransport {
    /// A TCP connection with an encrypted session on top, handshake done. `layer` ("tls",
    /// "noise") names it in errors.
    func connectSecured<Session: SecureSession>(
        to endpoint: Endpoint, on ring: RingExecutor, layer: String, makeSession: () throws(Session.Failure) -> Session
    ) async throws(TransportError) -> ByteStream {
        let socket = try await connectSocket(to: endpoint, on: ring)
        return try await secure(socket, on: ring, layer: layer, makeSession: makeSession)
    }

    /// The server side of the same: an accepted socket, secured.
    func acceptSecured<Session: SecureSession>(
        _ socket: SocketStream, on ring: RingExecutor, layer: String, makeSession: () throws(Session.Failure) -> Session
    ) async throws(TransportError) -> ByteStream {
        try await secure(socket, on: ring, layer: layer, makeSession: makeSession)
    }

    private func secure<Session: SecureSession>(
        _ socket: SocketStream, on ring: RingExecutor, layer: String, makeSession: () throws(Session.Failure) -> Session
    ) async throws(TransportError) -> ByteStream {
        let session: Session
        do {
            session = try makeSession()
        } catch {
            socket.close()
            throw .setup(layer: layer, error)
        }
        let stream = SecureStream(over: socket, ring: ring, session: session)
        do {
            try await stream.handshake()
        } catch {
            stream.close()
            throw .handshake(layer: layer, error)
        }
        return stream
    }
}
