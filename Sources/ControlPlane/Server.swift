import DataPlane
import Logging
import Synchronization

/// The public side: accepts control and data channels from clients on `bind_addr`, and visitors on
/// each service's `bind_addr`, and pairs every visitor with a data channel.
///
/// Ownership: the server owns its control listener and the accept loops on it (one per ring);
/// each loop owns the handshakes it starts, and a handshake that becomes a control channel runs
/// that session to its end. Each service (`ServiceEntry`) owns its listener, its accept loops,
/// its pool and its relays. `shutdown` stops everything from accepting; what is being relayed
/// goes on until it ends.
public final class Server: Sendable {
    let config: ServerConfig
    let group: RingGroup
    let hub: ServerHub
    let transport: any Transport
    let logger: Logger
    let metrics: Metrics
    /// Visitors held at once, all services together; bounded by the open-file limit.
    let visitors: VisitorBudget

    /// Handshakes not finished yet; strangers cannot make this grow past `maxPendingHandshakes`.
    private let pendingHandshakes = Atomic<Int>(0)
    static let maxPendingHandshakes = 4096
    static let handshakeTimeout: Duration = .seconds(5)

    private let controlListener = Mutex<TCPListener?>(nil)
    /// The accept loops on the control port (they end when its listener is shut down).
    private let acceptLoops = TaskScope()
    /// The pool sweeper and removed services' grace timers (cancelled at shutdown).
    private let housekeeping = TaskScope()
    /// The first bind attempt of each service port of the config: `listening()` waits for them.
    private let firstBinds: Countdown

    public init(config: ServerConfig, group: RingGroup, logger: Logger, metrics: Metrics = Metrics()) throws(StartError) {
        self.config = config
        self.group = group
        self.logger = logger
        self.metrics = metrics
        self.transport = try makeServerTransport(config.transport)
        self.hub = ServerHub(ring: group.executors[0], heartbeatInterval: config.heartbeatInterval, logger: logger)
        self.visitors = VisitorBudget.fitting(openFileLimit: Socket.openFileLimit)
        self.firstBinds = Countdown(config.services.count)
    }

    /// Returns once every service port of the config is bound, or known busy and being retried.
    public func listening() async { await firstBinds.wait() }

    /// Binds the control port (failure is fatal: nothing would work, and a port another process
    /// holds is refused rather than shared) and starts every service. Control channels are
    /// accepted once every service is registered, so that a client that connects at once is not
    /// told its service does not exist.
    public func start() throws(StartError) {
        let bind = config.bindAddr.socketAddress
        let listener: TCPListener
        do {
            listener = try TCPListener(bind)
            // Accepted channels inherit these. Every client speaks first, so an accept completes
            // with its first message there (a silent connection is handed over after a second, to
            // the handshake timeout).
            let tcp = config.transport.tcp
            try listener.setNoDelay(tcp.nodelay)
            try listener.setKeepAlive(idle: Int(tcp.keepaliveSecs), interval: Int(tcp.keepaliveInterval))
            try listener.setDeferAccept(seconds: 1)
        } catch {
            throw StartError("cannot listen on \(bind) (server.bind_addr): \(error)")
        }
        controlListener.withLock { $0 = listener }
        logger.info("Listening at \(bind)")
        let entries = config.services.values.sorted(by: { $0.name < $1.name }).map {
            startService($0, onFirstBind: firstBinds.tick)
        }
        housekeeping.spawn(on: hub.ring) {
            for entry in entries { await self.hub.register(entry) }
            for ring in self.group.executors {
                self.acceptLoops.spawn(on: ring) { await self.acceptChannels(listener: listener, ring: ring) }
            }
            await self.hub.sweepPools()
        }
    }

    /// Stops accepting, closes every control and pooled data channel. Relays already running go
    /// on until they end (or the ring group is shut down).
    public func shutdown() async {
        controlListener.withLock { $0.take() }?.shutdown()
        firstBinds.release()
        housekeeping.cancelAll()
        await hub.closeAll()
    }

    // MARK: Services

    /// Stops a service: its port closes and its control channel ends at once; the visitors it is
    /// relaying get `grace` to finish.
    func removeService(named name: String, grace: Duration) async {
        guard let entry = await hub.entry(named: name) else { return }
        await hub.unregister(entry)
        let connections = entry.connections
        guard connections.count > 0 else { return }
        let ring = group.next()
        housekeeping.spawn(on: ring) {
            try? await ring.sleep(for: grace)
            connections.stopAll()
        }
    }

    /// Starts a service added while running (hot reload).
    func addService(_ service: ServerServiceConfig) {
        let entry = startService(service)
        housekeeping.spawn(on: hub.ring) { await self.hub.register(entry) }
    }

    /// Starts a service's listener (or its UDP forwarder); the hub does not know it yet.
    private func startService(_ service: ServerServiceConfig, onFirstBind: @escaping @Sendable () -> Void = {}) -> ServiceEntry {
        switch service.type {
        case .tcp:
            let entry = ServiceEntry(config: service, budget: visitors, counters: metrics.counters(for: service.name))
            entry.tasks.spawn(on: group.executors[0]) { await self.serveVisitors(of: entry, onFirstBind: onFirstBind) }
            return entry
        case .udp:
            let ring = group.next()
            let counters = metrics.counters(for: service.name)
            let forwarder = UDPServerForwarder(ring: ring, service: service, logger: logger, counters: counters)
            let entry = ServiceEntry(config: service, budget: visitors, counters: counters, udp: forwarder)
            entry.tasks.spawn(on: ring) { await forwarder.run(onFirstBind: onFirstBind) }
            return entry
        }
    }

    /// The next connection on `listener`; nil once the listener is shut down. Out of fds,
    /// accepting pauses for 100 ms (the listener stays readable, so retrying at once would spin).
    func acceptNext(_ listener: TCPListener, ring: RingExecutor, name: @autoclosure () -> String) async -> SocketStream? {
        while true {
            do {
                return try await listener.accept(on: ring)
            } catch .system(.tooManyOpenFiles, _), .system(.tooManyOpenFilesInSystem, _) {
                logger.warning("\(name()): out of file descriptors, pausing accepts for 100ms")
                try? await ring.sleep(for: .milliseconds(100))
            } catch .system(.connectionAborted, _) {
                continue
            } catch {
                return nil
            }
        }
    }

    // MARK: Control port

    /// Accepts control and data channels on one ring until the listener is shut down. The
    /// handshakes it starts (and the control sessions they become) are its children.
    private func acceptChannels(listener: TCPListener, ring: RingExecutor) async {
        await withDiscardingTaskGroup { group in
            while let socket = await acceptNext(listener, ring: ring, name: "control port") {
                if transport.acceptIsImmediate, let key = Self.dataChannelHelloArrived(socket) {
                    if let work = fileDataChannel(socket, sessionKey: key, ring: ring) {
                        group.addTask(executorPreference: ring, operation: work)
                    }
                    continue
                }
                guard pendingHandshakes.wrappingAdd(1, ordering: .relaxed).newValue <= Self.maxPendingHandshakes else {
                    pendingHandshakes.wrappingSubtract(1, ordering: .relaxed)
                    socket.close()
                    metrics.count(.overload)
                    continue
                }
                group.addTask(executorPreference: ring) {
                    await self.handshake(socket, ring: ring)
                }
            }
        }
    }

    /// The session key of a plain-TCP data channel whose whole Hello has arrived with the
    /// connection (the usual case: the listener defers accepts until the client has spoken), read
    /// off the socket; nil, with nothing read, for anything else. This spares the commonest
    /// connection a task and a ring round trip.
    private static func dataChannelHelloArrived(_ socket: SocketStream) -> Digest? {
        withUnsafeTemporaryAllocation(byteCount: Hello.size, alignment: 8) { buffer -> Digest? in
            guard (try? socket.receiveNow(into: buffer, peek: true)) == Hello.size,
                case .dataChannel(let key)? = try? Hello(decodingPrefixOf: UnsafeRawBufferPointer(buffer)),
                (try? socket.receiveNow(into: buffer)) == Hello.size
            else { return nil }
            return key
        }
    }

    /// Gives a data channel to its service: to the first waiting visitor (forwarding on this
    /// ring), or to the idle pool. Returns the forwarding still to do when it needs a task of its
    /// own (an encrypted channel's copy relay).
    func fileDataChannel(_ stream: ByteStream, sessionKey: Digest, ring: RingExecutor) -> (@Sendable () async -> Void)? {
        switch hub.addDataChannel(stream, sessionKey: sessionKey) {
        case .unknownSession:
            metrics.count(.unknownSession)
            logger.warning("data channel from \(stream.peerAddress.map(\.description) ?? "?") has an unknown session key; closed")
            stream.close()
            return nil
        case .filed:
            return nil
        case .forward(let visitor, let channel, let entry):
            return forward(visitor, over: channel, of: entry, ring: ring)
        }
    }

    private enum Greeting: Sendable {
        case control(ServiceEntry, ControlSession)
        case data(ByteStream, sessionKey: Digest)
    }

    /// The first exchange on a new connection, bounded by the handshake timeout.
    private func handshake(_ socket: SocketStream, ring: RingExecutor) async {
        // Read now: a failed handshake logs it after the socket is closed.
        let address = socket.peerAddress
        let peer: @Sendable () -> String = { address.map(\.description) ?? "?" }
        let deadline = ContinuousClock.now + Self.handshakeTimeout
        let greeting: Greeting
        do throws(ControlError) {
            // Plain TCP: every read has the deadline, which bounds the handshake without the
            // task group of withTimeout (a tenth of the server's CPU per data channel). Noise, TLS
            // and websocket handshakes read and write inside `accept`, so they race a timer instead.
            if transport.acceptIsImmediate {
                greeting = try await greet(socket, ring: ring, peer: peer, deadline: deadline)
            } else {
                greeting = try await withTimeout(Self.handshakeTimeout, on: ring, timedOut: .io(.timedOut(operation: "handshake"))) {
                    () async throws(ControlError) -> Greeting in
                    try await self.greet(socket, ring: ring, peer: peer, deadline: deadline)
                }
            }
        } catch {
            pendingHandshakes.wrappingSubtract(1, ordering: .relaxed)
            metrics.countHandshakeFailure(error)
            logger.warning("connection from \(peer()): \(error)")
            return
        }
        pendingHandshakes.wrappingSubtract(1, ordering: .relaxed)
        switch greeting {
        case .control(let entry, let session):
            await hub.runControlChannel(session, of: entry)
        case .data(let stream, let key):
            // An encrypted channel for a waiting visitor: this task relays it.
            await fileDataChannel(stream, sessionKey: key, ring: ring)?()
        }
    }

    private func greet(
        _ socket: SocketStream, ring: RingExecutor, peer: @Sendable () -> String, deadline: ContinuousClock.Instant
    )
        async throws(ControlError) -> Greeting
    {
        let stream: ByteStream
        do {
            stream = try await transport.accept(socket, on: ring)
        } catch {
            throw .transport(error)
        }
        do throws(ControlError) {
            switch try await stream.readMessage(Hello.self, deadline: deadline) {
            case .dataChannel(let key):
                return .data(stream, sessionKey: key)
            case .controlChannel(let serviceDigest):
                let nonce = Digest.random()
                try await stream.writeMessage(Hello.controlChannel(nonce))
                guard let entry = await hub.service(serviceDigest) else {
                    try? await stream.writeMessage(Ack.serviceNotExist)
                    throw ControlError.refused(.unknownService(serviceDigest))
                }
                let auth = try await stream.readMessage(Auth.self, deadline: deadline)
                guard auth.digest == Digest.auth(token: entry.config.token.value, nonce: nonce) else {
                    try? await stream.writeMessage(Ack.authFailed)
                    throw ControlError.refused(.wrongToken(service: entry.config.name))
                }
                try await stream.writeMessage(Ack.ok)
                let address = peer()
                logger.info("service \(entry.config.name): control channel from \(address) established")
                return .control(entry, ControlSession(stream: stream, key: auth.digest, peer: address, ring: hub.ring))
            }
        } catch {
            stream.close()
            throw error
        }
    }
}

/// A startup failure, one line.
public struct StartError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
