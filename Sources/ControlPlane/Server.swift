import DataPlane
import Glibc
import Logging
import Synchronization

/// The public side: accepts control and data channels from clients on `bind_addr`, and visitors on
/// each service's `bind_addr`, and pairs every visitor with a data channel.
public final class Server: Sendable {
    let config: ServerConfig
    let group: RingGroup
    let hub: ServerHub
    let transport: any Transport
    let logger: Logger

    /// Handshakes not finished yet; strangers cannot make this grow past `maxPendingHandshakes`.
    private let pendingHandshakes = Atomic<Int>(0)
    static let maxPendingHandshakes = 4096
    static let handshakeTimeout: Duration = .seconds(5)

    private let listeners = Mutex<[Int32]>([])
    private let tasks = Mutex<[Task<Void, Never>]>([])

    public init(config: ServerConfig, group: RingGroup, logger: Logger) throws(StartError) {
        self.config = config
        self.group = group
        self.logger = logger
        self.transport = try makeServerTransport(config.transport)
        self.hub = ServerHub(ring: group.executors[0], heartbeatInterval: config.heartbeatInterval, logger: logger)
    }

    /// Binds the control port (failure is fatal: nothing would work) and starts every service.
    /// Control channels are accepted once every service is registered, so that a client that
    /// connects at once is not told its service does not exist.
    public func start() throws(StartError) {
        let bind = config.bindAddr.socketAddress
        var fds: [Int32] = []
        for _ in group.executors {
            do {
                fds.append(try Socket.listen(bind))
            } catch {
                fds.forEach(Socket.closeListener)
                throw StartError("cannot listen on \(bind) (server.bind_addr): \(error)")
            }
        }
        let controlListeners = fds
        listeners.withLock { $0 = controlListeners }
        logger.info("Listening at \(bind)")
        let entries = config.services.values.sorted(by: { $0.name < $1.name }).map(startService)
        spawn(on: hub.ring) {
            for entry in entries { await self.hub.register(entry) }
            for (ring, fd) in zip(self.group.executors, controlListeners) {
                self.spawn(on: ring) { await self.acceptChannels(listener: fd, ring: ring) }
            }
            await self.hub.expireWaitingVisitors()
        }
    }

    /// Stops accepting, closes every control and pooled data channel. Relays already running end
    /// when the caller shuts the ring group down.
    public func shutdown() async {
        closeListeners()
        tasks.withLock { $0.forEach { $0.cancel() } }
        await hub.closeAll()
    }

    private func closeListeners() {
        listeners.withLock { fds in
            fds.forEach(Socket.closeListener)
            fds.removeAll()
        }
    }

    private func spawn(on ring: RingExecutor, _ body: @escaping @Sendable () async -> Void) {
        let task = Task(executorPreference: ring) { await body() }
        tasks.withLock { $0.append(task) }
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
        Task(executorPreference: ring) {
            try? await ring.sleep(for: grace)
            connections.stopAll()
        }
    }

    /// Starts a service added while running (hot reload).
    func addService(_ service: ServerServiceConfig) {
        let entry = startService(service)
        spawn(on: hub.ring) { await self.hub.register(entry) }
    }

    /// Starts a service's listeners (or its UDP forwarder); the hub does not know it yet.
    private func startService(_ service: ServerServiceConfig) -> ServiceEntry {
        let entry = ServiceEntry(config: service)
        switch service.type {
        case .tcp:
            for ring in group.executors {
                spawn(on: ring) { await self.serveVisitors(of: entry, ring: ring) }
            }
        case .udp:
            let ring = group.next()
            let forwarder = UDPServerForwarder(ring: ring, service: service, logger: logger)
            entry.udp = forwarder
            spawn(on: ring) { await forwarder.run() }
        }
        return entry
    }

    /// Binds the service's port on this worker (retrying while it is busy) and serves visitors.
    private func serveVisitors(of entry: ServiceEntry, ring: RingExecutor) async {
        let service = entry.config
        let bind = service.bindAddr.socketAddress
        var listener: Int32 = -1
        while !Task.isCancelled {
            do {
                listener = try Socket.listen(bind)
                break
            } catch {
                if ring.index == 0 {
                    logger.error("service \(service.name): cannot listen on \(bind) (server.services.\(service.name).bind_addr): \(error); retrying in 5s")
                }
                do { try await ring.sleep(for: .seconds(5)) } catch { return }
            }
        }
        guard listener >= 0 else { return }
        entry.addListener(listener)
        if ring.index == 0 { logger.info("service \(service.name): listening at \(bind)") }
        while let visitor = await acceptNext(listener, ring: ring, name: "service \(service.name)") {
            if entry.closed {
                Socket.close(visitor)
                break
            }
            Task(executorPreference: ring) { await self.forward(visitor: visitor, of: entry, ring: ring) }
        }
        entry.removeListener(listener)
    }

    /// Pairs a visitor with a data channel (waiting for one if none is ready) and relays.
    private func forward(visitor: Int32, of entry: ServiceEntry, ring: RingExecutor) async {
        let service = entry.config
        Socket.setNoDelay(visitor, service.nodelay)
        // The visitor's address only when a log line will show it: this is the per-connection path.
        let debug = logger.logLevel <= .debug
        func peer() -> String { Socket.peerAddress(visitor).map(\.description) ?? "?" }
        if debug { logger.debug("service \(service.name): new visitor \(peer())") }
        // A channel can die in the pool (client gone); try the next one a few times.
        for _ in 0..<4 {
            guard let channel = await entry.channels.take(patience: ServerHub.visitorPatience,
                                                          maxWaiting: ServerHub.maxWaitingVisitors) else {
                logger.info("service \(service.name): no data channel for visitor \(peer()) in time; closing it")
                Socket.close(visitor)
                return
            }
            do throws(ControlError) {
                try await channel.writeMessage(DataChannelCmd.startForwardTcp)
            } catch {
                channel.close()
                continue
            }
            var onEnd: (@Sendable (RelayResult) -> Void)?
            if debug {
                let (name, logger, address) = (service.name, self.logger, peer())
                onEnd = { logger.debug("service \(name): visitor \(address) done: \($0)") }
            }
            await relay(SocketStream(fd: visitor, ring: ring), channel, on: ring, tracking: entry.connections, onEnd: onEnd)
            return
        }
        logger.warning("service \(service.name): data channels keep failing; closing visitor \(peer())")
        Socket.close(visitor)
    }

    /// The next connection on `listener`; nil once the listener is closed. Out of fds, accepting
    /// pauses for 100 ms (the listener stays readable, so retrying at once would spin).
    private func acceptNext(_ listener: Int32, ring: RingExecutor, name: String) async -> Int32? {
        while true {
            do {
                return try await ring.accept(listener)
            } catch .system(let e, _) where e == .tooManyOpenFiles || e.rawValue == ENFILE {
                logger.warning("\(name): out of file descriptors, pausing accepts for 100ms")
                try? await ring.sleep(for: .milliseconds(100))
            } catch .system(let e, _) where e.rawValue == ECONNABORTED || e.rawValue == EINTR {
                continue
            } catch {
                return nil
            }
        }
    }

    // MARK: Control port

    private func acceptChannels(listener: Int32, ring: RingExecutor) async {
        while let fd = await acceptNext(listener, ring: ring, name: "control port") {
            guard pendingHandshakes.wrappingAdd(1, ordering: .relaxed).newValue <= Self.maxPendingHandshakes else {
                pendingHandshakes.wrappingSubtract(1, ordering: .relaxed)
                Socket.close(fd)
                continue
            }
            Task(executorPreference: ring) {
                await self.handshake(fd: fd, ring: ring)
            }
        }
    }

    private enum Greeting: Sendable {
        case control(ServiceEntry, ControlSession)
        case data(ByteStream, sessionKey: Digest)
    }

    /// The first exchange on a new connection, bounded by the handshake timeout.
    private func handshake(fd: Int32, ring: RingExecutor) async {
        // Formatted only for log lines: a data channel, the common case, never needs it.
        let address = Socket.peerAddress(fd)
        @Sendable func peer() -> String { address.map(\.description) ?? "?" }
        let deadline = ContinuousClock.now + Self.handshakeTimeout
        let greetInTime = { @Sendable () async throws(IOError) -> Greeting in
            do throws(ControlError) {
                return try await self.greet(fd: fd, ring: ring, peer: peer, deadline: deadline)
            } catch {
                throw IOError.system(Errno(EPROTO), operation: error.description)
            }
        }
        let greeting: Greeting
        do {
            // Plain TCP: every read has the deadline, which bounds the handshake without the
            // task group of withTimeout (a tenth of the server's CPU per data channel). Noise and
            // TLS handshakes read and write inside `accept`, so they race a timer instead.
            if transport.acceptIsImmediate {
                greeting = try await greetInTime()
            } else {
                greeting = try await withTimeout(Self.handshakeTimeout, on: ring, operation: "handshake", greetInTime)
            }
        } catch {
            pendingHandshakes.wrappingSubtract(1, ordering: .relaxed)
            switch error {
            case .system(_, let why): logger.warning("connection from \(peer()): \(why)")
            default: logger.warning("connection from \(peer()): \(error)")
            }
            return
        }
        pendingHandshakes.wrappingSubtract(1, ordering: .relaxed)
        switch greeting {
        case .control(let entry, let session):
            await hub.runControlChannel(session, of: entry)
        case .data(let stream, let key):
            if !hub.addDataChannel(stream, sessionKey: key) {
                logger.warning("data channel from \(peer()) has an unknown session key; closed")
                stream.close()
            }
        }
    }

    private func greet(fd: Int32, ring: RingExecutor, peer: @Sendable () -> String, deadline: ContinuousClock.Instant)
        async throws(ControlError) -> Greeting
    {
        let stream: ByteStream
        do {
            stream = try await transport.accept(fd: fd, on: ring)
        } catch {
            Socket.close(fd)
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
                    throw ControlError.refused("control channel for an unknown service (digest \(serviceDigest)) refused")
                }
                let auth = try await stream.readMessage(Auth.self, deadline: deadline)
                guard auth.digest == Digest.auth(token: entry.config.token.value, nonce: nonce) else {
                    try? await stream.writeMessage(Ack.authFailed)
                    throw ControlError.refused("service \(entry.config.name): wrong token; control channel refused")
                }
                try await stream.writeMessage(Ack.ok)
                let address = peer()
                logger.info("service \(entry.config.name): control channel from \(address) established")
                return .control(entry, ControlSession(stream: stream, key: auth.digest, peer: address))
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
