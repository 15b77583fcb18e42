import DataPlane
import Glibc
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
        var bound: Int32?
        var attempted = false
        while bound == nil && !entry.closed {
            do {
                bound = try Socket.listen(bind)
            } catch {
                logger.error("service \(service.name): cannot listen on \(bind) (server.services.\(service.name).bind_addr): \(error); retrying in 5s")
                if !attempted { onFirstBind() }
                attempted = true
                do { try await ring.sleep(for: .seconds(5)) } catch { return }
            }
        }
        if !attempted { onFirstBind() }
        guard let listener = bound, entry.adoptListener(listener) else { return }
        // Accepted visitors inherit it.
        if service.nodelay { Socket.setNoDelay(listener, true) }
        logger.info("service \(service.name): listening at \(bind)")
        for worker in group.executors {
            spawn(on: worker) { await self.acceptVisitors(of: entry, listener: listener, ring: worker) }
        }
    }

    /// Accepts visitors while there is room for them: past the pool's bound on waiting visitors,
    /// or the process's bound on visitors, new ones stay in the listen backlog until there is.
    private func acceptVisitors(of entry: ServiceEntry, listener: Int32, ring: RingExecutor) async {
        let name = entry.config.name
        while !entry.closed {
            await entry.channels.waitForRoom()
            while !visitors.hasRoom {
                do { try await ring.sleep(for: .milliseconds(20)) } catch { return }
            }
            guard let fd = await acceptNext(listener, ring: ring, name: "service \(name)") else { return }
            visitors.take()
            if logger.logLevel <= .debug { logger.debug("service \(name): new visitor \(Self.peerText(fd)())") }
            place(WaitingVisitor(fd: fd, since: .now), of: entry, ring: ring)
        }
    }

    /// Forwards a visitor over an idle data channel, or leaves it waiting in the pool for the next
    /// channel to arrive. Idle channels that died meanwhile are dropped on the way.
    func place(_ visitor: WaitingVisitor, of entry: ServiceEntry, ring: RingExecutor, first: Bool = false) {
        while true {
            switch entry.channels.place(visitor, first: first) {
            case .waiting:
                return
            case .refused:
                closeVisitor(visitor)
                return
            case .channel(let channel):
                guard Socket.isAlive(channel.stream.fd) else {
                    channel.stream.close()
                    continue
                }
                if start(visitor, over: channel.stream, of: entry, ring: ring) { return }
            }
        }
    }

    /// A data channel just arrived for a waiting visitor: forwards the first visitor still there,
    /// or keeps the channel idle when they all left.
    func forward(_ waiting: WaitingVisitor, over channel: PooledChannel, of entry: ServiceEntry, ring: RingExecutor) {
        var next: WaitingVisitor? = waiting
        while let visitor = next {
            // A visitor that gave up while waiting (closed without a byte) would only waste the channel.
            if Socket.isAlive(visitor.fd) {
                if !start(visitor, over: channel.stream, of: entry, ring: ring) { place(visitor, of: entry, ring: ring, first: true) }
                return
            }
            closeVisitor(visitor)
            next = entry.channels.nextWaiting()
        }
        switch entry.channels.add(channel, arrived: false) {
        case .idle: break
        case .refused: channel.stream.close()
        case .visitor(let visitor): forward(visitor, over: channel, of: entry, ring: ring)
        }
    }

    /// Tells the client to start forwarding on `channel` and relays it with the visitor. Returns
    /// false, having closed the channel, when the channel turned out dead; the visitor is then
    /// still the caller's.
    private func start(_ visitor: WaitingVisitor, over channel: ByteStream, of entry: ServiceEntry, ring: RingExecutor) -> Bool {
        guard let socket = channel as? SocketStream, channel.spliceableFD != nil else {
            // An encrypted channel: the command goes through its session, and the bytes through the copy relay.
            Task(executorPreference: ring) {
                do throws(ControlError) {
                    try await channel.writeMessage(DataChannelCmd.startForwardTcp)
                } catch {
                    channel.close()
                    self.place(visitor, of: entry, ring: ring, first: true)
                    return
                }
                await relay(SocketStream(fd: visitor.fd, ring: ring), channel, on: ring, tracking: entry.connections,
                            onEnd: self.visitorDone(entry))
            }
            return true
        }
        let sent = Self.startForwardTcp.withUnsafeBytes { try? Socket.sendNow(socket.fd, $0) }
        guard sent == Self.startForwardTcp.count else {
            channel.close()
            return false
        }
        let channelFD = socket.detach()
        let connections = entry.connections
        let id = connections.reserve()
        let done = visitorDone(entry)
        let handle = ring.startRelay(visitor.fd, channelFD) { result in
            connections.remove(id)
            done(result)
        }
        connections.register(id, .splice(handle))
        return true
    }

    private static let startForwardTcp = DataChannelCmd.startForwardTcp.encode()

    /// What runs when a visitor's relay ends: its place in the budget is freed.
    private func visitorDone(_ entry: ServiceEntry) -> @Sendable (RelayResult) -> Void {
        let visitors = self.visitors
        guard logger.logLevel <= .debug else { return { _ in visitors.release() } }
        let (logger, name) = (self.logger, entry.config.name)
        return { result in
            visitors.release()
            logger.debug("service \(name): visitor done: \(result)")
        }
    }

    private func closeVisitor(_ visitor: WaitingVisitor) {
        Socket.close(visitor.fd)
        visitors.release()
    }
}
