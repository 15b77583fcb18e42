import DataPlane
import Logging

/// A TCP service's public side: its listener, the accept loops (one per worker, on the one
/// listener), and the pairing of each visitor with a data channel.
extension Server {
    /// Binds the service's port (retrying while it is busy: another process holds it, say) and
    /// accepts its visitors on every worker. `onFirstBind` runs once, after the first attempt.
    func serveVisitors(of entry: ServiceEntry, onFirstBind: @Sendable () -> Void = {}) async {
        let service = entry.config
        let bind = service.bindAddr.socketAddress
        let ring = group.executors[0]
        var bound: TCPListener?
        var attempted = false
        while bound == nil && !entry.closed {
            do {
                let listener = try TCPListener(bind)
                // Accepted visitors inherit it.
                if service.nodelay { try listener.setNoDelay(true) }
                bound = listener
            } catch {
                logger.error(
                    "service \(service.name): cannot listen on \(bind) (server.services.\(service.name).bind_addr): \(error); retrying in 5s"
                )
                if !attempted { onFirstBind() }
                attempted = true
                do { try await ring.sleep(for: .seconds(5)) } catch { return }
            }
        }
        if !attempted { onFirstBind() }
        guard let listener = bound, entry.adoptListener(listener) else { return }
        logger.info("service \(service.name): listening at \(bind)")
        for worker in group.executors {
            entry.tasks.spawn(on: worker) { await self.acceptVisitors(of: entry, listener: listener, ring: worker) }
        }
    }

    /// Accepts visitors while there is room for them: past the pool's bound on waiting visitors,
    /// or the process's bound on visitors, new ones stay in the listen backlog until there is.
    /// The relays it starts in tasks (encrypted channels) are its children.
    private func acceptVisitors(of entry: ServiceEntry, listener: TCPListener, ring: RingExecutor) async {
        let name = entry.config.name
        await withDiscardingTaskGroup { group in
            while !entry.closed {
                await entry.channels.waitForRoom()
                while !visitors.hasRoom {
                    do { try await ring.sleep(for: .milliseconds(20)) } catch { return }
                }
                guard let socket = await acceptNext(listener, ring: ring, name: "service \(name)") else { return }
                visitors.take()
                if logger.logLevel <= .debug {
                    logger.debug("service \(name): new visitor \(socket.peerAddress.map(\.description) ?? "?")")
                }
                if let work = place(WaitingVisitor(socket: socket, since: .now), of: entry, ring: ring) {
                    group.addTask(executorPreference: ring, operation: work)
                }
            }
        }
    }

    /// Forwards a visitor over an idle data channel, or leaves it waiting in the pool for the next
    /// channel to arrive. Idle channels that died meanwhile are dropped on the way. Returns the
    /// forwarding still to do when it needs a task (an encrypted channel's copy relay).
    func place(
        _ visitor: WaitingVisitor, of entry: ServiceEntry, ring: RingExecutor, first: Bool = false
    )
        -> (@Sendable () async -> Void)?
    {
        while true {
            switch entry.channels.place(visitor, first: first) {
            case .waiting:
                return nil
            case .refused:
                closeVisitor(visitor)
                return nil
            case .channel(let channel):
                guard channel.stream.isAlive else {
                    channel.stream.close()
                    continue
                }
                switch start(visitor, over: channel.stream, of: entry, ring: ring) {
                case .started: return nil
                case .channelDead: continue
                case .needsTask(let work): return work
                }
            }
        }
    }

    /// A data channel just arrived for a waiting visitor: forwards the first visitor still there,
    /// or keeps the channel idle when they all left. Returns the forwarding still to do when it
    /// needs a task.
    func forward(
        _ waiting: WaitingVisitor, over channel: PooledChannel, of entry: ServiceEntry, ring: RingExecutor
    )
        -> (@Sendable () async -> Void)?
    {
        var next: WaitingVisitor? = waiting
        while let visitor = next {
            // A visitor that gave up while waiting (closed without a byte) would only waste the channel.
            if visitor.socket.isAlive {
                switch start(visitor, over: channel.stream, of: entry, ring: ring) {
                case .started: return nil
                case .channelDead: return place(visitor, of: entry, ring: ring, first: true)
                case .needsTask(let work): return work
                }
            }
            closeVisitor(visitor)
            next = entry.channels.nextWaiting()
        }
        switch entry.channels.add(channel, arrived: false) {
        case .idle: return nil
        case .refused:
            channel.stream.close()
            return nil
        case .visitor(let visitor): return forward(visitor, over: channel, of: entry, ring: ring)
        }
    }

    private enum Start {
        case started
        /// The channel failed before anything was relayed (it is closed); the visitor is still
        /// the caller's.
        case channelDead
        /// An encrypted channel: the command goes through its session and the bytes through the
        /// copy relay, in a task.
        case needsTask(@Sendable () async -> Void)
    }

    /// Tells the client to start forwarding on `channel` and relays it with the visitor.
    private func start(_ visitor: WaitingVisitor, over channel: ByteStream, of entry: ServiceEntry, ring: RingExecutor) -> Start {
        let done = visitorDone(entry)
        guard let socket = channel as? SocketStream else {
            return .needsTask {
                do throws(ControlError) {
                    try await channel.writeMessage(DataChannelCmd.startForwardTcp)
                } catch {
                    channel.close()
                    await self.place(visitor, of: entry, ring: ring, first: true)?()
                    return
                }
                entry.counters.connectionStarted()
                await relay(visitor.socket, channel, on: ring, tracking: entry.connections, onEnd: done)
            }
        }
        // The idle channel's send buffer is empty: the command goes out at once. When the visitor
        // has spoken already, TCP holds the command (MSG_MORE) for the relay's first splice, which
        // follows within this ring turn: one segment and one ACK fewer, no byte copied.
        let more = visitor.socket.bytesWaiting > 0
        let sent = Self.startForwardTcp.withUnsafeBytes { try? socket.sendNow($0, more: more) }
        guard sent == Self.startForwardTcp.count else {
            channel.close()
            return .channelDead
        }
        entry.counters.connectionStarted()
        startSplice(visitor.socket, socket, on: ring, tracking: entry.connections, onEnd: done)
        return .started
    }

    private static let startForwardTcp = DataChannelCmd.startForwardTcp.encode()

    /// What runs when a visitor's relay ends: its bytes are counted and its place in the budget
    /// is freed (the service's one closure for that, unless debug logging wants a line too).
    private func visitorDone(_ entry: ServiceEntry) -> @Sendable (RelayResult) -> Void {
        let done = entry.relayEnded
        guard logger.logLevel <= .debug else { return done }
        let (logger, name) = (self.logger, entry.config.name)
        return { result in
            done(result)
            logger.debug("service \(name): visitor done: \(result)")
        }
    }

    private func closeVisitor(_ visitor: WaitingVisitor) {
        visitor.socket.close()
        visitors.release()
    }
}
