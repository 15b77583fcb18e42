import DataPlane
import Logging
import Synchronization

/// The side behind NAT: keeps one control channel per service open to the server, opens a data
/// channel whenever the server asks, and relays it to the service's `local_addr`.
public final class Client: Sendable {
    let config: ClientConfig
    let group: RingGroup
    let transport: any Transport
    let logger: Logger
    private let services = Mutex<[String: RunningService]>([:])

    /// A service's control-channel task and the connections it relays.
    struct RunningService {
        let config: ClientServiceConfig
        let task: Task<Void, Never>
        let connections: ConnectionSet
    }

    public init(config: ClientConfig, group: RingGroup, logger: Logger) throws(StartError) {
        self.config = config
        self.group = group
        self.logger = logger
        self.transport = try makeClientTransport(config.transport, remote: config.remoteAddr)
    }

    public func start() {
        for service in config.services.values.sorted(by: { $0.name < $1.name }) {
            addService(service)
        }
    }

    public func shutdown() {
        services.withLock { running in
            running.values.forEach { $0.task.cancel() }
            running.removeAll()
        }
    }

    func addService(_ service: ClientServiceConfig) {
        let ring = group.next()
        let connections = ConnectionSet()
        let task = Task(executorPreference: ring) {
            await self.keepControlChannel(service, connections: connections, ring: ring)
        }
        services.withLock { $0[service.name] = RunningService(config: service, task: task, connections: connections) }
    }

    /// Stops a service's control channel at once; the connections it relays get `grace` to finish.
    func removeService(named name: String, grace: Duration) {
        guard let running = services.withLock({ $0.removeValue(forKey: name) }) else { return }
        running.task.cancel()
        stopAfter(grace, running.connections)
    }

    /// The services running now, by name.
    var runningServices: [String: ClientServiceConfig] {
        services.withLock { $0.mapValues(\.config) }
    }

    private func stopAfter(_ grace: Duration, _ connections: ConnectionSet) {
        guard connections.count > 0 else { return }
        let ring = group.next()
        Task(executorPreference: ring) {
            try? await ring.sleep(for: grace)
            connections.stopAll()
        }
    }

    // MARK: Control channel

    /// Connects, authenticates and serves the control channel; reconnects forever with exponential
    /// backoff capped at the service's retry_interval, until cancelled.
    private func keepControlChannel(_ service: ClientServiceConfig, connections: ConnectionSet, ring: RingExecutor) async {
        var backoff = Backoff(cap: .seconds(max(1, service.retryInterval)))
        while !Task.isCancelled {
            var established = false
            var failure: ControlError?
            do throws(ControlError) {
                try await runControlChannel(service, connections: connections, ring: ring, established: &established)
            } catch {
                if case .io(.cancelled) = error, Task.isCancelled { break }
                failure = error
            }
            if established { backoff.reset() }
            let delay = backoff.next()
            if let failure { logger.error("service \(service.name): \(failure); retrying in \(delay.secondsText)") }
            do { try await ring.sleep(for: delay) } catch { break }
        }
        logger.debug("service \(service.name): control channel stopped")
    }

    private func runControlChannel(_ service: ClientServiceConfig, connections: ConnectionSet, ring: RingExecutor,
                                   established: inout Bool) async throws(ControlError) {
        // Resolved once per control channel; its data channels reuse the address. A proxy resolves
        // the name itself.
        let remote: Endpoint
        if config.transport.tcp.proxy != nil {
            remote = .name(config.remoteAddr)
        } else {
            do throws(IOError) {
                remote = .address(try await config.remoteAddr.resolve(preferIPv6: config.preferIPv6))
            } catch {
                throw .refused("cannot resolve client.remote_addr \(config.remoteAddr): \(error)")
            }
        }
        let stream: ByteStream
        do throws(TransportError) {
            stream = try await transport.connect(to: remote, on: ring)
        } catch {
            throw .transport(TransportError("cannot connect to server \(config.remoteAddr): \(error)"))
        }
        defer { stream.close() }

        try await stream.writeMessage(Hello.controlChannel(service.digest))
        let nonce: Digest
        switch try await stream.readMessage(Hello.self) {
        case .controlChannel(let n): nonce = n
        case .dataChannel: throw .refused("server answered with a data channel hello")
        }
        let sessionKey = Digest.auth(token: service.token.value, nonce: nonce)
        try await stream.writeMessage(Auth(sessionKey))
        switch try await stream.readMessage(Ack.self) {
        case .ok: break
        case .serviceNotExist: throw .refused("the server does not know this service (check its name in the server's config)")
        case .authFailed: throw .refused("the server refused the token (check client.services.\(service.name).token)")
        }
        established = true
        logger.info("service \(service.name): control channel established")

        let timeout: Duration? = config.heartbeatTimeout > 0 ? .seconds(config.heartbeatTimeout) : nil
        let channels = DataChannelOpener(service: service, remote: remote, sessionKey: sessionKey, connections: connections)
        let commands = CommandReader()
        while true {
            do throws(ControlError) {
                try await commands.fill(from: stream, timeout: timeout)
            } catch .io(.timedOut) {
                throw .refused("no heartbeat from the server for \(config.heartbeatTimeout)s; reconnecting")
            } catch .io(.endOfStream) {
                throw .refused("the server closed the control channel")
            }
            var wanted = 0
            while let command = try commands.next() {
                switch command {
                case .createDataChannel: wanted += 1
                case .heartBeat: logger.trace("service \(service.name): heartbeat")
                }
            }
            if wanted > 0 { open(channels, count: wanted) }
        }
    }

    // MARK: Data channels

    /// Opens `count` more data channels, at most `DataChannelOpener.maxOpening` at a time, spread
    /// over the workers.
    private func open(_ channels: DataChannelOpener, count: Int) {
        for _ in 0..<channels.request(count) { openOne(channels) }
    }

    private func openOne(_ channels: DataChannelOpener) {
        let ring = group.next()
        Task(executorPreference: ring) { await self.runDataChannel(channels, ring: ring) }
    }

    /// Opens one data channel (then the next one asked for, if any, in parallel), waits for the
    /// server's command and forwards.
    private func runDataChannel(_ channels: DataChannelOpener, ring: RingExecutor) async {
        let service = channels.service
        let opened = await connectDataChannel(channels, ring: ring)
        if channels.finished() { openOne(channels) }
        guard let stream = opened else { return }
        let command: DataChannelCmd
        do throws(ControlError) {
            command = try await stream.readMessage(DataChannelCmd.self)
        } catch {
            if case .io(.endOfStream) = error {
                logger.debug("service \(service.name): idle data channel closed by the server")
            } else {
                logger.debug("service \(service.name): data channel: \(error)")
            }
            stream.close()
            return
        }
        switch command {
        case .startForwardTcp:
            await forwardTCP(service, channel: stream, connections: channels.connections, ring: ring)
        case .startForwardUdp:
            await forwardUDP(service, channel: stream, ring: ring)
        }
    }

    /// Connects to the server and says Hello on a new data channel, retrying a refused or failed
    /// connection twice (the server may be busy accepting): a lost channel leaves a visitor waiting.
    private func connectDataChannel(_ channels: DataChannelOpener, ring: RingExecutor) async -> ByteStream? {
        let hello = Hello.dataChannel(channels.sessionKey)
        for attempt in 1...3 {
            do throws(TransportError) {
                let stream = try await transport.connect(to: channels.remote, on: ring)
                do throws(ControlError) {
                    try await stream.writeFirstMessage(hello)
                } catch {
                    stream.close()
                    throw TransportError(error.description)
                }
                return stream
            } catch {
                guard attempt < 3 else {
                    logger.warning("service \(channels.service.name): data channel: cannot connect to server: \(error)")
                    return nil
                }
                do { try await ring.sleep(for: .milliseconds(100 * attempt)) } catch { return nil }
            }
        }
        return nil
    }

    private func forwardTCP(_ service: ClientServiceConfig, channel: ByteStream, connections: ConnectionSet, ring: RingExecutor) async {
        let local: Int32
        do throws(IOError) {
            let address = try await service.localAddr.resolve(preferIPv6: service.preferIPv6)
            local = try await Socket.connect(to: address, on: ring, timeout: .seconds(10))
        } catch {
            logger.warning("service \(service.name): cannot connect to local_addr \(service.localAddr): \(error)")
            channel.close()
            return
        }
        Socket.setNoDelay(local, service.nodelay)
        var onEnd: (@Sendable (RelayResult) -> Void)?
        if logger.logLevel <= .debug {
            let (name, logger) = (service.name, self.logger)
            onEnd = { logger.debug("service \(name): connection done: \($0)") }
        }
        await relay(channel, SocketStream(fd: local, ring: ring), on: ring, tracking: connections, onEnd: onEnd)
    }
}

extension ByteStream {
    /// Reads one fixed-size protocol message, giving up after `timeout` without a byte, or when
    /// `deadline` (for the whole message) passes.
    func readMessage<M: WireMessage>(_ type: M.Type, timeout: Duration? = nil, deadline: ContinuousClock.Instant? = nil)
        async throws(ControlError) -> M
    {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: M.size, alignment: 8)
        defer { buffer.deallocate() }
        var done = 0
        do throws(IOError) {
            // The timeout applies to each read; the bytes of a 4-37 byte message arrive together.
            while done < buffer.count {
                var limit = timeout
                if let deadline {
                    let left = deadline - .now
                    guard left > .zero else { throw IOError.timedOut(operation: "handshake") }
                    limit = min(limit ?? left, left)
                }
                let n = try await read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), timeout: limit)
                if n == 0 { throw IOError.endOfStream }
                done += n
            }
        } catch {
            throw .io(error)
        }
        do throws(ProtocolError) {
            return try M(decoding: UnsafeRawBufferPointer(buffer))
        } catch {
            throw .protocolViolation(error)
        }
    }
}

extension Duration {
    var secondsText: String {
        let ms = components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
        return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
    }
}
