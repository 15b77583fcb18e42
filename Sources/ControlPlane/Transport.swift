import DataPlane
import Glibc
import Synchronization

/// How connections between client and server are made: plain TCP, or an encrypted stream on top.
/// The rathole protocol runs unchanged inside whatever stream the transport returns.
protocol Transport: Sendable {
    /// Client side: a connected stream to the server, handshake done.
    func connect(to endpoint: Endpoint, on ring: RingExecutor) async throws(TransportError) -> ByteStream
    /// Server side: the handshake on a freshly accepted socket (which the stream then owns).
    func accept(fd: Int32, on ring: RingExecutor) async throws(TransportError) -> ByteStream
    /// True when `accept` does no I/O, so that a deadline on the reads that follow bounds the
    /// whole handshake.
    var acceptIsImmediate: Bool { get }
}

extension Transport {
    var acceptIsImmediate: Bool { false }
}

/// Where the client connects: an address it resolved, or a name a proxy resolves.
enum Endpoint: Sendable, CustomStringConvertible {
    case address(SocketAddress)
    case name(HostPort)

    var description: String {
        switch self {
        case .address(let a): return a.description
        case .name(let n): return n.description
        }
    }
}

/// A transport failure, one line naming what failed.
struct TransportError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) { self.description = description }
    init(_ error: IOError) { description = error.description }
}

/// Plain TCP: the stream is the socket itself, so data channels can be spliced. With
/// `[client.transport.tcp] proxy`, connections go through a SOCKS5 or HTTP CONNECT proxy first.
struct TCPTransport: Transport {
    let options: TcpConfig
    static let connectTimeout: Duration = .seconds(10)

    init(options: TcpConfig) { self.options = options }

    func connect(to endpoint: Endpoint, on ring: RingExecutor) async throws(TransportError) -> ByteStream {
        let fd: Int32
        if let proxy = options.proxy {
            guard case .name(let target) = endpoint else { preconditionFailure("a proxied connection names its target") }
            fd = try await ProxyConnector(proxy).connect(to: target, on: ring, timeout: Self.connectTimeout)
        } else {
            guard case .address(let address) = endpoint else { preconditionFailure("a direct connection needs an address") }
            do {
                fd = try await Socket.connect(to: address, on: ring, timeout: Self.connectTimeout)
            } catch {
                throw TransportError(error)
            }
        }
        applyOptions(fd)
        return SocketStream(fd: fd, ring: ring)
    }

    /// The socket has its options already: accepted sockets inherit them from the listener.
    func accept(fd: Int32, on ring: RingExecutor) async throws(TransportError) -> ByteStream {
        SocketStream(fd: fd, ring: ring)
    }

    var acceptIsImmediate: Bool { true }

    private func applyOptions(_ fd: Int32) {
        Socket.setNoDelay(fd, options.nodelay)
        Socket.setKeepAlive(fd, idle: Int(options.keepaliveSecs), interval: Int(options.keepaliveInterval))
    }
}

// MARK: Reading and writing protocol messages on a stream

extension ByteStream {
    /// Reads exactly `buffer.count` bytes; `.endOfStream` if the peer closes first.
    func readExact(into buffer: UnsafeMutableRawBufferPointer) async throws(IOError) {
        var done = 0
        while done < buffer.count {
            let n = try await read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 { throw .endOfStream }
            done += n
        }
    }

    /// Writes one or more protocol messages in one go (on websocket, one message each, as upstream).
    func writeMessages(_ messages: [any WireMessage]) async throws(ControlError) {
        if let framed = self as? MessageFramedStream {
            do throws(IOError) { try await framed.writeEach(messages.map { $0.encode() }) } catch { throw .io(error) }
            return
        }
        var bytes: [UInt8] = []
        for m in messages { m.encode(appendingTo: &bytes) }
        try await writeBytes(bytes)
    }

    func writeMessage(_ message: some WireMessage) async throws(ControlError) {
        try await writeBytes(message.encode())
    }

    func writeBytes(_ bytes: [UInt8]) async throws(ControlError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: bytes)
        do throws(IOError) {
            try await write(UnsafeRawBufferPointer(buffer))
        } catch {
            throw .io(error)
        }
    }
}

/// Why a control or data channel ended.
enum ControlError: Error, CustomStringConvertible {
    case io(IOError)
    case protocolViolation(ProtocolError)
    case transport(TransportError)
    case refused(String)

    var description: String {
        switch self {
        case .io(let e): return e.description
        case .protocolViolation(let e): return "protocol violation: \(e)"
        case .transport(let e): return e.description
        case .refused(let why): return why
        }
    }
}

/// Relays a visitor and a data channel: splice when both are plain sockets, copy otherwise.
/// Takes ownership of both streams. The relay is tracked in `connections` until it ends, so a
/// service that is removed can stop what it still relays. Nothing per connection is kept beyond
/// the relay itself and its entry in `connections`.
func relay(_ a: ByteStream, _ b: ByteStream, on ring: RingExecutor, tracking connections: ConnectionSet,
           onEnd: (@Sendable (RelayResult) -> Void)? = nil) async {
    if let fa = a.spliceableFD, let fb = b.spliceableFD,
       let sa = a as? SocketStream, let sb = b as? SocketStream {
        _ = sa.detach()
        _ = sb.detach()
        try? await ring.onRing { () async throws(IOError) in
            let id = connections.reserve()
            let handle = ring.startRelay(fa, fb) { result in
                connections.remove(id)
                onEnd?(result)
            }
            connections.register(id, .splice(handle))
        }
    } else {
        let task = Task(executorPreference: ring) { await CopyRelay.run(a, b, on: ring) }
        let id = connections.reserve()
        connections.register(id, .copy(task))
        let result = await task.value
        connections.remove(id)
        onEnd?(result)
    }
}

/// The connections a service is relaying, each with a way to stop it.
final class ConnectionSet: Sendable {
    enum Running: Sendable {
        case splice(RelayHandle)
        case copy(Task<RelayResult, Never>)

        func stop() {
            switch self {
            case .splice(let handle): handle.stop()
            case .copy(let task): task.cancel()
            }
        }
    }

    private let state = Mutex<(next: Int, running: [Int: Running])>((0, [:]))

    func reserve() -> Int {
        state.withLock { s in
            s.next += 1
            return s.next
        }
    }

    func register(_ id: Int, _ connection: Running) {
        state.withLock { $0.running[id] = connection }
    }

    func remove(_ id: Int) {
        _ = state.withLock { $0.running.removeValue(forKey: id) }
    }

    var count: Int { state.withLock { $0.running.count } }

    /// Stops every connection still running.
    func stopAll() {
        let all = state.withLock { s -> [Running] in
            let all = Array(s.running.values)
            s.running.removeAll()
            return all
        }
        all.forEach { $0.stop() }
    }
}
