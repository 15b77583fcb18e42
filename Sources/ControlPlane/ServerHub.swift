import DataPlane
import Logging
import Synchronization

/// The server's shared state, pinned to one ring: services and their control channels
/// (sessions). Each service's pool of idle data channels and waiting visitors is its own
/// (`DataChannelPool`), used by every worker without a hop through here.
actor ServerHub {
    nonisolated let ring: RingExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { ring.serial.asUnownedSerialExecutor() }

    private let heartbeatInterval: UInt64
    private let logger: Logger
    private var services: [Digest: ServiceEntry] = [:]
    /// Each service's current control session, by service digest.
    private var current: [Digest: ControlSession] = [:]
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
    /// waiting visitors are turned away, its listener (and so its accept loops) ends.
    func unregister(_ entry: ServiceEntry, reason: String = "service removed") {
        let digest = entry.config.digest
        if services[digest] === entry { services[digest] = nil }
        entry.close()
        if let session = current[digest] { endSession(session, of: entry, reason: reason) }
        entry.channels.close()
    }

    func service(_ digest: Digest) -> ServiceEntry? { services[digest] }

    func entry(named name: String) -> ServiceEntry? { services[Digest.service(named: name)] }

    /// The client's address while the service's control channel is up.
    func controlPeer(of entry: ServiceEntry) -> String? { current[entry.config.digest]?.peer }

    func closeAll() {
        for entry in services.values { unregister(entry, reason: "the server is shutting down") }
    }

    // MARK: Control channels

    /// Runs an authenticated control channel until it ends: asks for the data channels the
    /// service needs, and sends heartbeats when idle. The session's reader is its child.
    func runControlChannel(_ session: ControlSession, of entry: ServiceEntry) async {
        guard !entry.closed else {
            session.stream.close()
            return
        }
        let digest = entry.config.digest
        if let old = current[digest] {
            endSession(old, of: entry, reason: "replaced by a newer client")
        }
        current[digest] = session
        sessions.withLock { $0[session.key] = (entry, session) }
        if entry.udp != nil {
            session.requestChannels(ServiceEntry.udpChannels)
        } else {
            entry.channels.attach(session)
        }
        await withDiscardingTaskGroup { group in
            group.addTask(executorPreference: ring) {
                let reason = await Self.waitUntilClosed(session.stream)
                await self.endSession(session, of: entry, reason: reason)
            }
            await writeCommands(session, of: entry)
        }
    }

    /// Sends the requests for data channels as they come, in batches, and heartbeats when
    /// nothing else was sent for a heartbeat interval; until the session ends.
    private func writeCommands(_ session: ControlSession, of entry: ServiceEntry) async {
        let interval: Duration? = heartbeatInterval > 0 ? .seconds(heartbeatInterval) : nil
        var lastSent = ContinuousClock.now
        while session.isAlive {
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
                    _ = try await session.wake.wait(timeout: interval.map { $0 - idle })
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
        guard session.end() else { return }
        // Shut down first: the session's reader has a recv in flight on the ring, which holds its
        // own reference to the socket, so a plain close would neither send a FIN nor end that recv.
        session.stream.shutdown()
        session.stream.close()
        sessions.withLock { $0[session.key] = nil }
        let digest = entry.config.digest
        if current[digest] === session { current[digest] = nil }
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
                    logger.info(
                        "service \(entry.config.name): \(closed) visitor(s) got no data channel within \(patience.secondsText); closed")
                }
            }
        }
    }
}

/// One configured service on the server. It owns its listener, its accept loops (`tasks`), its
/// pool of data channels and waiting visitors, and the relays it runs (`connections`).
final class ServiceEntry: Sendable {
    let config: ServerServiceConfig
    let channels: DataChannelPool
    /// The visitors being relayed, so that removing the service can end them after a grace period.
    let connections = ConnectionSet()
    let counters: ServiceCounters
    /// What runs when a visitor's relay ends (its bytes counted, its place in the budget freed):
    /// one for all the service's relays.
    let relayEnded: @Sendable (RelayResult) -> Void
    /// The accept loops on its listener, or its UDP forwarder.
    let tasks = TaskScope()
    /// Set for UDP services.
    let udp: UDPServerForwarder?
    /// The listener once bound; nil before, and again once the service closed.
    private let listener = Mutex<TCPListener?>(nil)
    private let isClosed = Atomic<Bool>(false)

    /// Data channels a UDP service asks for (as upstream): datagrams are spread over them.
    static let udpChannels = 2

    init(config: ServerServiceConfig, budget: VisitorBudget, counters: ServiceCounters, udp: UDPServerForwarder? = nil) {
        self.config = config
        self.counters = counters
        self.udp = udp
        let counted = counters.makeRelayEnd()
        relayEnded = { result in
            counted?(result)
            budget.release()
        }
        channels = DataChannelPool(budget: budget)
    }

    var closed: Bool { isClosed.load(ordering: .acquiring) }

    /// Takes the service's listener, to shut it down with the service; false (having shut it
    /// down) when the service closed meanwhile.
    func adoptListener(_ bound: TCPListener) -> Bool {
        let keep = listener.withLock { held -> Bool in
            if closed { return false }
            held = bound
            return true
        }
        if !keep { bound.shutdown() }
        return keep
    }

    /// Marks the service closed and shuts its listener down, which ends its accept loops, and its
    /// UDP forwarder.
    func close() {
        isClosed.store(true, ordering: .releasing)
        listener.withLock { $0.take() }?.shutdown()
        udp?.stop()
    }
}

/// An authenticated control channel.
final class ControlSession: Sendable {
    let stream: ByteStream
    let key: Digest
    let peer: String
    /// Wakes the writer of this control channel.
    let wake: RingEvent
    private let ended = Atomic<Bool>(false)
    /// CreateDataChannel messages asked for and not sent yet; any worker adds to it.
    private let requests = Atomic<Int>(0)

    init(stream: ByteStream, key: Digest, peer: String, ring: RingExecutor) {
        self.stream = stream
        self.key = key
        self.peer = peer
        wake = RingEvent(ring: ring)
    }

    var isAlive: Bool { !ended.load(ordering: .acquiring) }

    /// Ends the session; true for the caller that ended it (once), which then cleans up.
    func end() -> Bool {
        guard !ended.exchange(true, ordering: .acquiringAndReleasing) else { return false }
        wake.signal()
        return true
    }

    /// Asks the client for `count` more data channels.
    func requestChannels(_ count: Int) {
        guard count > 0 else { return }
        // The writer takes every request after each wake, so one signal per batch suffices.
        if requests.wrappingAdd(count, ordering: .acquiringAndReleasing).oldValue == 0 { wake.signal() }
    }

    /// The requests to send now.
    func takeRequests() -> Int { requests.exchange(0, ordering: .acquiringAndReleasing) }
}
