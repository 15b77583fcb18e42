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
    /// Visitors held at once, all services together; bounded by the open-file limit.
    let visitors: VisitorBudget

    /// Handshakes not finished yet; strangers cannot make this grow past `maxPendingHandshakes`.
    private let pendingHandshakes = Atomic<Int>(0)
    static let maxPendingHandshakes = 4096
    static let handshakeTimeout: Duration = .seconds(5)

    private let controlListener = Mutex<Int32?>(nil)
    private let tasks = Mutex<[Task<Void, Never>]>([])
    /// The first bind attempt of each service port of the config: `listening()` waits for them.
    private let firstBinds: Countdown

    public init(config: ServerConfig, group: RingGroup, logger: Logger) throws(StartError) {
        self.config = config
        self.group = group
        self.logger = logger
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
        let listener: Int32
        do {
            listener = try Socket.listen(bind)
        } catch {
            throw StartError("cannot listen on \(bind) (server.bind_addr): \(error)")
        }
        // Accepted channels inherit these. Every client speaks first, so an accept completes with
        // its first message there (a silent connection is handed over after a second, to the
        // handshake timeout).
        Socket.setNoDelay(listener, config.transport.tcp.nodelay)
        Socket.setKeepAlive(listener, idle: Int(config.transport.tcp.keepaliveSecs), interval: Int(config.transport.tcp.keepaliveInterval))
        Socket.setDeferAccept(listener, seconds: 1)
        controlListener.withLock { $0 = listener }
        logger.info("Listening at \(bind)")
        let entries = config.services.values.sorted(by: { $0.name < $1.name }).map {
            startService($0, onFirstBind: firstBinds.tick)
        }
        spawn(on: hub.ring) {
            for entry in entries { await self.hub.register(entry) }
            for ring in self.group.executors {
                self.spawn(on: ring) { await self.acceptChannels(listener: listener, ring: ring) }
            }
            await self.hub.sweepPools()
        }
    }

    /// Stops accepting, closes every control and pooled data channel. Relays already running end
    /// when the caller shuts the ring group down.
    public func shutdown() async {
        if let fd = controlListener.withLock({ $0.take() }) { Socket.closeListener(fd) }
        firstBinds.release()
        tasks.withLock { $0.forEach { $0.cancel() } }
        await hub.closeAll()
    }

    func spawn(on ring: RingExecutor, _ body: @escaping @Sendable () async -> Void) {
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

    /// Starts a service's listener (or its UDP forwarder); the hub does not know it yet.
    private func startService(_ service: ServerServiceConfig, onFirstBind: @escaping @Sendable () -> Void = {}) -> ServiceEntry {
        let entry = ServiceEntry(config: service, budget: visitors)
        switch service.type {
        case .tcp:
            spawn(on: group.executors[0]) { await self.serveVisitors(of: entry, onFirstBind: onFirstBind) }
        case .udp:
            let ring = group.next()
            let forwarder = UDPServerForwarder(ring: ring, service: service, logger: logger)
            entry.udp = forwarder
            spawn(on: ring) { await forwarder.run(onFirstBind: onFirstBind) }
        }
        return entry
    }

    /// The next connection on `listener`; nil once the listener is closed. Out of fds, accepting
    /// pauses for 100 ms (the listener stays readable, so retrying at once would spin).
    func acceptNext(_ listener: Int32, ring: RingExecutor, name: @autoclosure () -> String) async -> Int32? {
        while true {
            do {
                return try await ring.accept(listener)
            } catch .system(let e, _) where e == .tooManyOpenFiles || e.rawValue == ENFILE {
                logger.warning("\(name()): out of file descriptors, pausing accepts for 100ms")
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
            if transport.acceptIsImmediate, let key = Self.dataChannelHelloArrived(fd) {
                fileDataChannel(SocketStream(fd: fd, ring: ring), sessionKey: key, ring: ring, peer: Self.peerText(fd))
                continue
            }
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

    /// The session key of a plain-TCP data channel whose whole Hello has arrived with the
    /// connection (the usual case: the listener defers accepts until the client has spoken), read
    /// off the socket; nil, with nothing read, for anything else. This spares the commonest
    /// connection a task and a ring round trip.
    private static func dataChannelHelloArrived(_ fd: Int32) -> Digest? {
        withUnsafeTemporaryAllocation(byteCount: Hello.size, alignment: 8) { buffer -> Digest? in
            let peeked = recv(fd, buffer.baseAddress, Hello.size, Int32(MSG_PEEK | MSG_DONTWAIT))
            guard peeked == Hello.size,
                  case .dataChannel(let key)? = try? Hello(decodingPrefixOf: UnsafeRawBufferPointer(buffer)),
                  (try? Socket.receiveNow(fd, into: buffer)) == Hello.size
            else { return nil }
            return key
        }
    }

    /// Formats a peer's address for a log line, only when one is written.
    static func peerText(_ fd: Int32) -> @Sendable () -> String {
        { Socket.peerAddress(fd).map(\.description) ?? "?" }
    }

    /// Gives a data channel to its service: to the first waiting visitor, or to the idle pool.
    func fileDataChannel(_ stream: ByteStream, sessionKey: Digest, ring: RingExecutor, peer: @Sendable () -> String) {
        switch hub.addDataChannel(stream, sessionKey: sessionKey) {
        case .unknownSession:
            logger.warning("data channel from \(peer()) has an unknown session key; closed")
            stream.close()
        case .filed:
            break
        case .forward(let visitor, let channel, let entry):
            forward(visitor, over: channel, of: entry, ring: ring)
        }
    }

    private enum Greeting: Sendable {
        case control(ServiceEntry, ControlSession)
        case data(ByteStream, sessionKey: Digest)
    }

    /// The first exchange on a new connection, bounded by the handshake timeout.
    private func handshake(fd: Int32, ring: RingExecutor) async {
        // Read now (a failed handshake logs it after the socket is closed), formatted only for log lines.
        let address = Socket.peerAddress(fd)
        let peer: @Sendable () -> String = { address.map(\.description) ?? "?" }
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
            fileDataChannel(stream, sessionKey: key, ring: ring, peer: peer)
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
