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
    private var sessions: [Digest: (entry: ServiceEntry, session: ControlSession)] = [:]

    /// Visitors that may wait for a data channel, per service, and for how long.
    static let maxWaitingVisitors = 1024
    static let visitorPatience: Duration = .seconds(10)

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
    func unregister(_ entry: ServiceEntry) {
        if services[entry.config.digest] === entry { services[entry.config.digest] = nil }
        entry.close()
        entry.udp?.stop()
        if let session = entry.session { endSession(session, of: entry, reason: "service removed") }
        while let waiter = entry.waiters.popFirst() { waiter.continuation.resume(returning: nil) }
    }

    func service(_ digest: Digest) -> ServiceEntry? { services[digest] }

    func entry(named name: String) -> ServiceEntry? { services[Digest.service(named: name)] }

    func closeAll() {
        for entry in services.values { unregister(entry) }
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
        sessions[session.key] = (entry, session)
        session.event = RingEvent(ring: ring)
        session.pendingCreates = entry.poolSize + entry.waiters.count

        Task(executorPreference: ring) {
            let reason = await Self.waitUntilClosed(session.stream)
            await self.endSession(session, of: entry, reason: reason)
        }

        let interval: Duration? = heartbeatInterval > 0 ? .seconds(heartbeatInterval) : nil
        var lastSent = ContinuousClock.now
        while session.alive {
            do throws(ControlError) {
                if session.pendingCreates > 0 {
                    let count = session.pendingCreates
                    session.pendingCreates = 0
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
        sessions[session.key] = nil
        if entry.session === session { entry.session = nil }
        entry.udp?.closeChannels(of: session.key)
        entry.pool.removeAll { channel in
            guard channel.sessionKey == session.key else { return false }
            channel.stream.close()
            return true
        }
        logger.info("service \(entry.config.name): control channel from \(session.peer) ended: \(reason)")
    }

    // MARK: Data channels

    /// Files a new data channel under its session; false when the session key is unknown.
    func addDataChannel(_ stream: ByteStream, sessionKey: Digest) -> Bool {
        guard let (entry, session) = sessions[sessionKey], session.alive else { return false }
        if let udp = entry.udp {
            udp.adopt(stream, sessionKey: sessionKey)
            return true
        }
        if let waiter = entry.waiters.popFirst() {
            waiter.continuation.resume(returning: stream)
        } else if entry.pool.count < 2 * entry.poolSize {
            entry.pool.append(PooledChannel(stream: stream, sessionKey: sessionKey))
        } else {
            stream.close()
        }
        return true
    }

    /// A data channel for a new visitor: a pooled one, or the next to arrive within the visitor's
    /// patience. Asks the client for one more channel (rathole: one per visitor), unless the pool
    /// is over its size: channels asked for by visitors who gave up (the client was frozen, say)
    /// arrive late, and the pool shrinks back as new visitors use them up.
    func takeDataChannel(for entry: ServiceEntry) async -> ByteStream? {
        guard !entry.closed else { return nil }
        if let session = entry.session, entry.pool.count <= entry.poolSize {
            session.pendingCreates += 1
            session.event?.signal()
        }
        while let channel = entry.pool.popFirst() {
            if Socket.isAlive(channel.stream.fd) { return channel.stream }
            channel.stream.close()
        }
        guard entry.waiters.count < Self.maxWaitingVisitors else { return nil }
        return await withCheckedContinuation { continuation in
            // Entering withCheckedContinuation can suspend (observed: the hub ran addDataChannel
            // between the pool check above and this closure), so look at the pool again: a channel
            // filed in between must not sit idle while this visitor waits for the next one.
            while let channel = entry.pool.popFirst() {
                if Socket.isAlive(channel.stream.fd) {
                    continuation.resume(returning: channel.stream)
                    return
                }
                channel.stream.close()
            }
            entry.waiters.append(WaitingVisitor(continuation: continuation, deadline: .now + Self.visitorPatience))
        }
    }

    /// Turns away visitors that waited too long; runs for the life of the server.
    func expireWaitingVisitors() async {
        while true {
            do { try await ring.sleep(for: .seconds(1)) } catch { return }
            let now = ContinuousClock.now
            for entry in services.values {
                while let first = entry.waiters.first, first.deadline <= now {
                    _ = entry.waiters.popFirst()
                    first.continuation.resume(returning: nil)
                }
            }
        }
    }
}

/// One configured service on the server. Its mutable state belongs to the hub's executor, except
/// the listener list and the closed flag, which the accepting workers touch.
final class ServiceEntry: @unchecked Sendable {
    let config: ServerServiceConfig
    var session: ControlSession?
    var pool = FIFO<PooledChannel>()
    var waiters = FIFO<WaitingVisitor>()
    /// The visitors being relayed, so that removing the service can end them after a grace period.
    let connections = ConnectionSet()
    /// Set for UDP services, before the entry is shared.
    var udp: UDPServerForwarder?
    private let listeners = Mutex<[Int32]>([])
    private let isClosed = Atomic<Bool>(false)

    init(config: ServerServiceConfig) { self.config = config }

    /// Idle data channels asked for when the control channel starts. At most twice as many are
    /// kept; more arrive only when visitors gave up on them, and are closed.
    var poolSize: Int { config.type == .tcp ? 8 : 2 }

    var closed: Bool { isClosed.load(ordering: .acquiring) }

    func addListener(_ fd: Int32) {
        let keep = listeners.withLock { fds -> Bool in
            if closed { return false }
            fds.append(fd)
            return true
        }
        if !keep { Socket.close(fd) }
    }

    func removeListener(_ fd: Int32) {
        let owned = listeners.withLock { fds -> Bool in
            guard let i = fds.firstIndex(of: fd) else { return false }
            fds.remove(at: i)
            return true
        }
        if owned { Socket.close(fd) }
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

struct PooledChannel {
    let stream: ByteStream
    let sessionKey: Digest
}

struct WaitingVisitor {
    let continuation: CheckedContinuation<ByteStream?, Never>
    let deadline: ContinuousClock.Instant
}

/// An authenticated control channel. State belongs to the hub's executor.
final class ControlSession: @unchecked Sendable {
    let stream: ByteStream
    let key: Digest
    let peer: String
    var alive = true
    var pendingCreates = 0
    var event: RingEvent?

    init(stream: ByteStream, key: Digest, peer: String) {
        self.stream = stream
        self.key = key
        self.peer = peer
    }
}

/// A first-in first-out queue that does not shift its elements on every removal.
struct FIFO<Element> {
    private var items: [Element] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }
    var first: Element? { head < items.count ? items[head] : nil }

    mutating func append(_ item: Element) { items.append(item) }

    mutating func popFirst() -> Element? {
        guard head < items.count else { return nil }
        let item = items[head]
        head += 1
        if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    mutating func removeAll(where shouldRemove: (Element) -> Bool) {
        items = Array(items[head...]).filter { !shouldRemove($0) }
        head = 0
    }
}
