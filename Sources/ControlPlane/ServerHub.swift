import DataPlane
import Logging
import Synchronization

/// The server's shared state, pinned to one ring: services, their control channels (sessions),
/// their pools of idle data channels and the visitors waiting for one.
actor ServerHub {
    nonisolated let ring: RingExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { ring.serial.asUnownedSerialExecutor() }

    private let heartbeatInterval: UInt64
    private let logger: Logger
    private var services: [Digest: ServiceEntry] = [:]
    /// Live control channels by session key. Locked rather than hub-isolated: data channels are
    /// filed by the worker that accepted them.
    private nonisolated let sessions = Mutex<[Digest: (entry: ServiceEntry, session: ControlSession)]>([:])

    init(ring: RingExecutor, heartbeatInterval: UInt64, logger: Logger) {
        self.ring = ring
        self.heartbeatInterval = heartbeatInterval
        self.logger = logger
    }

    func register(_ entry: ServiceEntry) {
        services[entry.config.digest] = entry
    }

    /// Stops a service: no new control channels, its session and pooled channels close, its
    /// waiting visitors are turned away. Listeners close on their own workers.
    func unregister(_ entry: ServiceEntry, reason: String = "service removed") {
        if services[entry.config.digest] === entry { services[entry.config.digest] = nil }
        entry.close()
        entry.udp?.stop()
        if let session = entry.session { endSession(session, of: entry, reason: reason) }
        entry.channels.close()
    }

    func service(_ digest: Digest) -> ServiceEntry? { services[digest] }

    func entry(named name: String) -> ServiceEntry? { services[Digest.service(named: name)] }

    func closeAll() {
        for entry in services.values { unregister(entry, reason: "the server is shutting down") }
    }

    // MARK: Control channels

    /// Runs an authenticated control channel until it ends: asks for the initial pool of data
    /// channels, one more per visitor, and sends heartbeats when idle.
    func runControlChannel(_ session: ControlSession, of entry: ServiceEntry) async {
        guard !entry.closed else {
            session.stream.close()
            return
        }
        if let old = entry.session {
            endSession(old, of: entry, reason: "replaced by a newer client")
        }
        entry.session = session
        sessions.withLock { $0[session.key] = (entry, session) }
        session.event = RingEvent(ring: ring)
        if entry.udp != nil {
            session.requestChannels(ServiceEntry.udpChannels)
        } else {
            entry.channels.attach(session)
        }

        Task(executorPreference: ring) {
            let reason = await Self.waitUntilClosed(session.stream)
            await self.endSession(session, of: entry, reason: reason)
        }

        let interval: Duration? = heartbeatInterval > 0 ? .seconds(heartbeatInterval) : nil
        var lastSent = ContinuousClock.now
        while session.alive {
            do throws(ControlError) {
                let count = session.takeRequests()
                if count > 0 {
                    try await session.stream.writeMessages(Array(repeating: ControlChannelCmd.createDataChannel, count: count))
                    lastSent = .now
                    continue
                }
                let idle = ContinuousClock.now - lastSent
                if let interval, idle >= interval {
                    try await session.stream.writeMessage(ControlChannelCmd.heartBeat)
                    lastSent = .now
                    continue
                }
                do throws(IOError) {
                    _ = try await session.event!.wait(timeout: interval.map { $0 - idle })
                } catch {
                    throw .io(error)
                }
            } catch {
                endSession(session, of: entry, reason: "\(error)")
            }
        }
    }

    /// Reads (and ignores) whatever the client sends on its control channel until it closes.
    private static func waitUntilClosed(_ stream: ByteStream) async -> String {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            do {
                if try await stream.read(into: buffer) == 0 { return "closed by the client" }
            } catch {
                return "\(error)"
            }
        }
    }

    private func endSession(_ session: ControlSession, of entry: ServiceEntry, reason: String) {
        guard session.alive else { return }
        session.alive = false
        session.event?.signal()
        // shutdown first: the session's reader has a recv in flight on the ring, which holds its
        // own reference to the socket, so a plain close would neither send a FIN nor end that recv.
        Socket.shutdownBoth(session.stream.fd)
        session.stream.close()
        sessions.withLock { $0[session.key] = nil }
        if entry.session === session { entry.session = nil }
        entry.udp?.closeChannels(of: session.key)
        entry.channels.detach(session)
        logger.info("service \(entry.config.name): control channel from \(session.peer) ended: \(reason)")
    }

    // MARK: Data channels

    enum DataChannelFiling {
        case unknownSession
        /// Kept idle, given to UDP forwarding, or closed as not needed.
        case filed
        /// To be forwarded at once with this waiting visitor.
        case forward(WaitingVisitor, PooledChannel, ServiceEntry)
    }

    /// Files a new data channel under its session. Any thread. Filed under the lock, so a session
    /// that ends meanwhile either never sees the channel or closes it with the rest of its channels.
    nonisolated func addDataChannel(_ stream: ByteStream, sessionKey: Digest) -> DataChannelFiling {
        sessions.withLock { live -> DataChannelFiling in
            guard let (entry, session) = live[sessionKey] else { return .unknownSession }
            if let udp = entry.udp {
                udp.adopt(stream, of: session)
                return .filed
            }
            let channel = PooledChannel(stream: stream, sessionKey: sessionKey)
            switch entry.channels.add(channel) {
            case .idle: return .filed
            case .refused:
                stream.close()
                return .filed
            case .visitor(let visitor): return .forward(visitor, channel, entry)
            }
        }
    }

    /// Once a second, for the life of the server: each service's pool turns away the visitors the
    /// client left waiting too long, asks again for channels that never came, and shrinks after a
    /// quiet spell.
    func sweepPools() async {
        while true {
            do { try await ring.sleep(for: .seconds(1)) } catch { return }
            let now = ContinuousClock.now
            for entry in services.values {
                let closed = entry.channels.sweep(now: now)
                if closed > 0 {
                    let patience = entry.channels.limits.patience
                    logger.info("service \(entry.config.name): \(closed) visitor(s) got no data channel within \(patience.secondsText); closed")
                }
            }
        }
    }
}

/// One configured service on the server. Its mutable state belongs to the hub's executor, except
/// what the workers touch: the channel pool, the listener list and the closed flag (each locked).
final class ServiceEntry: @unchecked Sendable {
    let config: ServerServiceConfig
    var session: ControlSession?
    let channels: DataChannelPool
    /// The visitors being relayed, so that removing the service can end them after a grace period.
    let connections = ConnectionSet()
    /// Set for UDP services, before the entry is shared.
    var udp: UDPServerForwarder?
    private let listeners = Mutex<[Int32]>([])
    private let isClosed = Atomic<Bool>(false)

    /// Data channels a UDP service asks for (as upstream): datagrams are spread over them.
    static let udpChannels = 2

    init(config: ServerServiceConfig, budget: VisitorBudget) {
        self.config = config
        channels = DataChannelPool(budget: budget)
    }

    var closed: Bool { isClosed.load(ordering: .acquiring) }

    /// Takes the service's listener, to close it with the service; false (having closed it) when
    /// the service closed meanwhile.
    func adoptListener(_ fd: Int32) -> Bool {
        let keep = listeners.withLock { fds -> Bool in
            if closed { return false }
            fds.append(fd)
            return true
        }
        if !keep { Socket.closeListener(fd) }
        return keep
    }

    /// Marks the service closed and shuts its listeners down, which ends their accept loops.
    func close() {
        isClosed.store(true, ordering: .releasing)
        let fds = listeners.withLock { fds -> [Int32] in
            let all = fds
            fds.removeAll()
            return all
        }
        fds.forEach(Socket.closeListener)
    }
}

/// An authenticated control channel. State belongs to the hub's executor.
final class ControlSession: @unchecked Sendable {
    let stream: ByteStream
    let key: Digest
    let peer: String
    var alive = true
    /// Wakes the writer of this control channel; set before the session is attached to a pool.
    var event: RingEvent?
    /// CreateDataChannel messages asked for and not sent yet; any worker adds to it.
    private let requests = Atomic<Int>(0)

    init(stream: ByteStream, key: Digest, peer: String) {
        self.stream = stream
        self.key = key
        self.peer = peer
    }

    /// Asks the client for `count` more data channels.
    func requestChannels(_ count: Int) {
        guard count > 0 else { return }
        // The writer takes every request after each wake, so one signal per batch suffices.
        if requests.wrappingAdd(count, ordering: .acquiringAndReleasing).oldValue == 0 { event?.signal() }
    }

    /// The requests to send now.
    func takeRequests() -> Int { requests.exchange(0, ordering: .acquiringAndReleasing) }
}
