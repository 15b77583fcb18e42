import Synchronization

/// Relays two streams until both directions have ended, taking ownership of both: spliced in the
/// kernel when both are plain sockets, copied through shared buffers otherwise (encrypted or
/// framed streams). The relay is tracked in `connections` until it ends, so that its owner can
/// stop it. A splice relay runs on in the ring after this returns and reports through `onEnd`; a
/// copy relay runs in the calling task and returns when it is done.
public func relay(
    _ a: ByteStream, _ b: ByteStream, on ring: RingExecutor, tracking connections: ConnectionSet,
    onEnd: (@Sendable (RelayResult) -> Void)? = nil
) async {
    if let sa = a as? SocketStream, let sb = b as? SocketStream {
        try? await ring.onRing { () async throws(IOError) in
            startSplice(sa, sb, on: ring, tracking: connections, onEnd: onEnd)
        }
        return
    }
    let id = connections.add(.copy(.init(a, b)))
    let result = await CopyRelay.run(a, b, on: ring)
    connections.remove(id)
    onEnd?(result)
}

/// Starts splicing two sockets on `ring` (call on its thread); both are closed when the relay
/// ends. A socket already closed ends the relay at once, with EBADF.
public func startSplice(
    _ a: SocketStream, _ b: SocketStream, on ring: RingExecutor, tracking connections: ConnectionSet,
    onEnd: (@Sendable (RelayResult) -> Void)? = nil
) {
    guard let fa = a.detach() else {
        b.close()
        onEnd?(RelayResult(error: .badFileDescriptor))
        return
    }
    guard let fb = b.detach() else {
        _ = consume fa
        onEnd?(RelayResult(error: .badFileDescriptor))
        return
    }
    let id = connections.reserve()
    let handle = ring.startRelay(fa, fb) { result in
        connections.remove(id)
        onEnd?(result)
    }
    connections.register(id, .onRing(handle))
}

/// The connections a service is relaying or setting up, each with a way to stop it. Once stopped,
/// it stops whatever is registered later at once.
public final class ConnectionSet: Sendable {
    public enum Running: Sendable {
        /// A splice relay, or the step in flight of a connection being set up without a task.
        case onRing(OperationHandle)
        /// A copy relay ends when its streams are shut down under it.
        case copy(StreamPair)

        func stop() {
            switch self {
            case .onRing(let handle): handle.stop()
            case .copy(let pair):
                pair.a.shutdown()
                pair.b.shutdown()
            }
        }
    }

    /// A copy relay's two streams in one reference, so that an entry stays as small as a splice
    /// relay's handle: two existentials inline doubled every entry (8,000 relays: 256 KiB more).
    public final class StreamPair: Sendable {
        let a: ByteStream
        let b: ByteStream

        init(_ a: ByteStream, _ b: ByteStream) {
            self.a = a
            self.b = b
        }
    }

    private let state = Mutex<(next: Int, running: [Int: Running], stopped: Bool)>((0, [:], false))

    public init() {}

    /// An id for a connection to `register` (and re-register as it moves on) until it is removed.
    public func reserve() -> Int {
        state.withLock { s in
            s.next += 1
            return s.next
        }
    }

    /// Tracks what connection `id` runs now, or stops it at once when the set was stopped.
    public func register(_ id: Int, _ connection: Running) {
        let stopped = state.withLock { s -> Bool in
            if !s.stopped { s.running[id] = connection }
            return s.stopped
        }
        if stopped { connection.stop() }
    }

    func add(_ connection: Running) -> Int {
        let id = reserve()
        register(id, connection)
        return id
    }

    public func remove(_ id: Int) {
        _ = state.withLock { $0.running.removeValue(forKey: id) }
    }

    public var count: Int { state.withLock { $0.running.count } }

    /// Stops every connection still running.
    public func stopAll() {
        let all = state.withLock { s -> [Running] in
            let all = Array(s.running.values)
            s.running.removeAll()
            s.stopped = true
            return all
        }
        all.forEach { $0.stop() }
    }
}
