import DataPlane
import Logging
import Synchronization

/// The side behind NAT: keeps one control channel per service open to the server, opens a data
/// channel whenever the server asks, and relays it to the service's `local_addr`.
///
/// Ownership: each running service is a `ClientService`, which owns its control-channel task,
/// its data channels' tasks and the relays they run; the client owns its services and the timers
/// that end removed services' relays after their grace.
public final class Client: Sendable {
    let config: ClientConfig
    let group: RingGroup
    let transport: any Transport
    let logger: Logger
    let metrics: Metrics
    private let services = Mutex<[String: ClientService]>([:])
    /// Removed services' grace timers.
    private let housekeeping = TaskScope()

    public init(config: ClientConfig, group: RingGroup, logger: Logger, metrics: Metrics = Metrics()) throws(StartError) {
        self.config = config
        self.group = group
        self.logger = logger
        self.metrics = metrics
        self.transport = try makeClientTransport(config.transport, remote: config.remoteAddr)
    }

    public func start() {
        for service in config.services.values.sorted(by: { $0.name < $1.name }) {
            addService(service)
        }
    }

    /// Ends every control channel; data channels already relaying go on until they end.
    public func shutdown() {
        let running = services.withLock { running -> [ClientService] in
            defer { running.removeAll() }
            return Array(running.values)
        }
        running.forEach { $0.stopControl() }
        housekeeping.cancelAll()
    }

    func addService(_ config: ClientServiceConfig) {
        let service = ClientService(config: config, counters: metrics.counters(for: config.name))
        let ring = group.next()
        service.startControl(on: ring) { await self.keepControlChannel(service, ring: ring) }
        services.withLock { $0[config.name] = service }
    }

    /// Stops a service's control channel at once; the connections it relays get `grace` to finish.
    func removeService(named name: String, grace: Duration) {
        guard let service = services.withLock({ $0.removeValue(forKey: name) }) else { return }
        service.stopControl()
        let ring = group.next()
        housekeeping.spawn(on: ring) {
            try? await ring.sleep(for: grace)
            service.stopAll()
        }
    }

    /// The services running now, by name.
    var runningServices: [String: ClientServiceConfig] {
        services.withLock { $0.mapValues(\.config) }
    }

    // MARK: Control channel

    /// Connects, authenticates and serves the control channel; reconnects forever with exponential
    /// backoff capped at the service's retry_interval, until cancelled.
    private func keepControlChannel(_ service: ClientService, ring: RingExecutor) async {
        let name = service.config.name
        var backoff = Backoff(cap: .seconds(max(1, service.config.retryInterval)))
        while !Task.isCancelled {
            var established = false
            var failure: ControlError?
            do throws(ControlError) {
                try await runControlChannel(service, ring: ring, established: &established)
            } catch {
                if case .io(.cancelled) = error, Task.isCancelled { break }
                failure = error
                if !established { metrics.countHandshakeFailure(error) }
            }
            if established { backoff.reset() }
            let delay = backoff.next()
            if let failure { logger.error("service \(name): \(failure); retrying in \(delay.secondsText)") }
            do { try await ring.sleep(for: delay) } catch { break }
        }
        logger.debug("service \(name): control channel stopped")
    }

    private func runControlChannel(_ service: ClientService, ring: RingExecutor, established: inout Bool) async throws(ControlError) {
        let name = service.config.name
        // Resolved once per control channel; its data channels reuse the address. A proxy resolves
        // the name itself.
        let remote: Endpoint
        if config.transport.tcp.proxy != nil {
            remote = .name(config.remoteAddr)
        } else {
            do throws(IOError) {
                remote = .address(try await config.remoteAddr.resolve(preferIPv6: config.preferIPv6))
            } catch {
                throw .refused(.unresolvedServer(config.remoteAddr, error))
            }
        }
        let stream: ByteStream
        do throws(TransportError) {
            stream = try await transport.connect(to: remote, on: ring)
        } catch {
            throw .refused(.unreachableServer(config.remoteAddr, error))
        }
        defer { stream.close() }

        try await stream.writeMessage(Hello.controlChannel(service.config.digest))
        let nonce: Digest
        switch try await stream.readMessage(Hello.self) {
        case .controlChannel(let n): nonce = n
        case .dataChannel: throw .refused(.dataChannelHelloFromServer)
        }
        let sessionKey = Digest.auth(token: service.config.token.value, nonce: nonce)
        try await stream.writeMessage(Auth(sessionKey))
        switch try await stream.readMessage(Ack.self) {
        case .ok: break
        case .serviceNotExist: throw .refused(.serverDoesNotKnowService)
        case .authFailed: throw .refused(.serverRefusedToken(service: name))
        }
        established = true
        logger.info("service \(name): control channel established")
        service.counters.controlChannel(peer: config.remoteAddr.description)
        defer { service.counters.controlChannel(peer: nil) }

        let timeout: Duration? = config.heartbeatTimeout > 0 ? .seconds(config.heartbeatTimeout) : nil
        let channels = DataChannelOpener(service: service, remote: remote, sessionKey: sessionKey, transport: transport)
        let commands = CommandReader()
        while true {
            do throws(ControlError) {
                try await commands.fill(from: stream, timeout: timeout)
            } catch .io(.timedOut) {
                throw .refused(.noHeartbeat(seconds: config.heartbeatTimeout))
            } catch .io(.endOfStream) {
                throw .refused(.closedByServer)
            }
            var wanted = 0
            while let command = try commands.next() {
                switch command {
                case .createDataChannel: wanted += 1
                case .heartBeat: logger.trace("service \(name): heartbeat")
                }
            }
            if wanted > 0 { open(channels, count: wanted) }
        }
    }

    // MARK: Data channels

    /// Opens `count` more data channels, at most `DataChannelOpener.maxOpening` at a time, spread
    /// over the workers. Their tasks belong to the service.
    private func open(_ channels: DataChannelOpener, count: Int) {
        for _ in 0..<channels.request(count) { openOne(channels) }
    }

    func openOne(_ channels: DataChannelOpener) {
        let ring = group.next()
        if let (transport, server) = channels.direct {
            DirectDataChannel.open(channels, transport: transport, server: server, client: self, on: ring)
        } else {
            channels.service.dataChannels.spawn(on: ring) { await self.runDataChannel(channels, ring: ring) }
        }
    }

    /// Opens one data channel (then the next one asked for, if any, in parallel), waits for the
    /// server's command and forwards.
    private func runDataChannel(_ channels: DataChannelOpener, ring: RingExecutor) async {
        let service = channels.service.config
        let opened = await connectDataChannel(channels, ring: ring)
        if channels.finished() { openOne(channels) }
        guard let stream = opened else { return }
        let counters = channels.service.counters
        counters.dataChannel(idle: true)
        let command: DataChannelCmd
        do throws(ControlError) {
            command = try await stream.readMessage(DataChannelCmd.self)
            counters.dataChannel(idle: false)
        } catch {
            counters.dataChannel(idle: false)
            if case .io(.endOfStream) = error {
                logger.debug("service \(service.name): idle data channel closed by the server")
            } else {
                logger.debug("service \(service.name): data channel: \(error)")
            }
            stream.close()
            return
        }
        await forward(command, over: stream, of: channels.service, ring: ring)
    }

    /// Serves a data channel's command: TCP to the service's local_addr, or UDP.
    private func forward(_ command: DataChannelCmd, over stream: ByteStream, of service: ClientService, ring: RingExecutor) async {
        switch command {
        case .startForwardTcp: await forwardTCP(service.config, channel: stream, of: service, ring: ring)
        case .startForwardUdp: await forwardUDP(service.config, channel: stream, counters: service.counters, ring: ring)
        }
    }

    /// `forward` in a task of the service's, for a channel set up without one (`DirectDataChannel`).
    func forward(_ command: DataChannelCmd, over stream: ByteStream, of service: ClientService, on ring: RingExecutor) {
        service.dataChannels.spawn(on: ring) { await self.forward(command, over: stream, of: service, ring: ring) }
    }

    /// Connects to the server and says Hello on a new data channel, retrying a refused or failed
    /// connection twice (the server may be busy accepting): a lost channel leaves a visitor waiting.
    private func connectDataChannel(_ channels: DataChannelOpener, ring: RingExecutor) async -> ByteStream? {
        let hello = Hello.dataChannel(channels.sessionKey)
        for attempt in 1...DataChannelOpener.connectAttempts {
            let failure: ControlError
            do throws(TransportError) {
                let stream = try await transport.connect(to: channels.remote, on: ring)
                do throws(ControlError) {
                    try await stream.writeFirstMessage(hello)
                    return stream
                } catch {
                    stream.close()
                    failure = error
                }
            } catch {
                failure = .transport(error)
            }
            guard attempt < DataChannelOpener.connectAttempts else {
                logger.warning("service \(channels.service.config.name): data channel: cannot connect to server: \(failure)")
                return nil
            }
            do { try await ring.sleep(for: DataChannelOpener.retryDelay(after: attempt)) } catch { return nil }
        }
        return nil
    }

    private func forwardTCP(_ service: ClientServiceConfig, channel: ByteStream, of owner: ClientService, ring: RingExecutor) async {
        let local: SocketStream
        do throws(IOError) {
            let address = try await service.localAddr.resolve(preferIPv6: service.preferIPv6)
            local = try await Socket.connect(to: address, on: ring, timeout: DataChannelOpener.localConnectTimeout)
            if service.nodelay { try local.setNoDelay(true) }
        } catch {
            logger.warning("service \(service.name): cannot connect to local_addr \(service.localAddr): \(error)")
            channel.close()
            return
        }
        owner.counters.connectionStarted()
        await relay(channel, local, on: ring, tracking: owner.connections, onEnd: relayEnd(of: owner))
    }

    /// What runs when one of the service's relays ends: it is counted (and logged, at debug).
    func relayEnd(of service: ClientService) -> (@Sendable (RelayResult) -> Void)? {
        guard logger.logLevel <= .debug else { return service.relayEnded }
        let (name, logger, counted) = (service.config.name, self.logger, service.relayEnded)
        return {
            counted?($0)
            logger.debug("service \(name): connection done: \($0)")
        }
    }
}

/// One service on the client: its control channel's task, and the data channels and relays it
/// started. Removing the service ends the control channel at once and the rest after a grace.
final class ClientService: Sendable {
    let config: ClientServiceConfig
    let counters: ServiceCounters
    /// Counts a relay's end; one for all the service's relays.
    let relayEnded: (@Sendable (RelayResult) -> Void)?
    let dataChannels = TaskScope()
    let connections = ConnectionSet()
    private let control = TaskScope()

    init(config: ClientServiceConfig, counters: ServiceCounters) {
        self.config = config
        self.counters = counters
        relayEnded = counters.makeRelayEnd()
    }

    func startControl(on ring: RingExecutor, _ body: @escaping @Sendable () async -> Void) {
        control.spawn(on: ring, body)
    }

    func stopControl() { control.cancelAll() }

    /// Ends everything the service still runs: idle data channels and relays.
    func stopAll() {
        dataChannels.cancelAll()
        connections.stopAll()
    }
}

extension Duration {
    var secondsText: String {
        let ms = components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
        return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
    }
}
