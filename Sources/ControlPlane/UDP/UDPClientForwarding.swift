import DataPlane
import Logging
import Synchronization

extension Client {
    /// The client side of a UDP data channel: one connected local socket per visitor address,
    /// replies framed back with that address, a socket dropped after 60 s without traffic.
    func forwardUDP(_ service: ClientServiceConfig, channel stream: ByteStream, counters: ServiceCounters, ring: RingExecutor) async {
        let local: SocketAddress
        do {
            local = try await service.localAddr.resolve(preferIPv6: service.preferIPv6)
        } catch {
            logger.warning("service \(service.name): cannot resolve local_addr \(service.localAddr): \(error)")
            stream.close()
            return
        }
        let channel = DatagramChannel(stream: stream, ring: ring)
        let visitors = UDPVisitorTable(ring: ring, channel: channel, local: local, counters: counters) { [logger] in
            logger.warning(
                "service \(service.name): too many UDP visitors at once (\(UDPVisitorTable.maxVisitors) per channel, \(UDPVisitorTable.maxOpenSockets) in all); datagrams from new visitors are dropped until others go quiet for 60 s"
            )
        }
        var (forwarded, bytes, dropped) = (0, 0, 0)
        let end = await channel.run(
            { header, payload in
                if visitors.forward(payload, from: header.from) {
                    forwarded += 1
                    bytes += payload.count
                } else {
                    dropped += 1
                }
            },
            endOfBatch: {
                visitors.flush()
                counters.datagrams(inbound: forwarded, bytesIn: bytes, dropped: dropped)
                (forwarded, bytes, dropped) = (0, 0, 0)
            })
        await visitors.closeAll()
        DatagramChannel.logEnd(end, service: service.name, logger: logger)
    }
}

/// The client's local sockets for the visitors of one UDP data channel, each with the task that
/// frames its replies back, which the table owns. Ring-confined.
final class UDPVisitorTable: Sendable {
    static let idleTimeout: Duration = .seconds(60)
    static let maxVisitors = 4096
    /// Visitor sockets open in the whole process, against a quarter of the open-file limit: a flood
    /// of datagrams from forged addresses on one UDP service must not take the fds that the other
    /// services' connections need.
    private static let openSockets = Atomic<Int>(0)
    static let maxOpenSockets = max(256, Socket.openFileLimit / 4)
    /// When the limit was last reported, in seconds since `started`.
    private static let lastReport = Atomic<Int64>(-3600)
    private static let started = ContinuousClock.now

    private static func reserveSocket() -> Bool {
        if openSockets.wrappingAdd(1, ordering: .relaxed).newValue <= maxOpenSockets { return true }
        releaseSocket()
        return false
    }

    private static func releaseSocket() { openSockets.wrappingSubtract(1, ordering: .relaxed) }

    private static func claimReport() -> Bool {
        let now = (ContinuousClock.now - started).components.seconds
        let last = lastReport.load(ordering: .relaxed)
        return now - last >= 60 && lastReport.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
    }

    /// One visitor: its local socket and when it was last active.
    private final class Visitor {
        let socket: UDPSocket
        let peer: PeerAddress
        var lastActive = ContinuousClock.now
        init(socket: UDPSocket, peer: PeerAddress) {
            self.socket = socket
            self.peer = peer
        }
    }

    private final class State {
        var visitors: [PeerAddress: Visitor] = [:]
        /// Datagrams to the local service go out together, all on `pending`'s socket.
        var pending: Visitor?
    }

    let ring: RingExecutor
    let channel: DatagramChannel
    let local: SocketAddress
    let counters: ServiceCounters
    private let state: RingBound<State>
    private let replyTasks = TaskScope()
    /// One receive batch for all visitors: datagrams are framed before the next batch is read.
    private let replies: RingBound<ReceiveBatch>
    private let outgoing: RingBound<SendBatch>

    /// Called when a new visitor is turned away for want of sockets, at most once a minute in the
    /// whole process.
    private let reportLimit: @Sendable () -> Void

    init(
        ring: RingExecutor, channel: DatagramChannel, local: SocketAddress, counters: ServiceCounters,
        reportLimit: @escaping @Sendable () -> Void
    ) {
        self.ring = ring
        self.channel = channel
        self.local = local
        self.counters = counters
        self.reportLimit = reportLimit
        state = RingBound(State(), ring: ring)
        replies = RingBound(ReceiveBatch(capacity: 16), ring: ring)
        outgoing = RingBound(SendBatch(capacity: 64), ring: ring)
    }

    var count: Int { state.value.visitors.count }

    /// Queues a visitor's datagram for the local service (sent by `flush`, or earlier when the
    /// batch is full or the next datagram is another visitor's); false when it is dropped (no
    /// socket for a new visitor).
    func forward(_ payload: UnsafeRawBufferPointer, from peer: PeerAddress) -> Bool {
        guard let visitor = visitor(for: peer) else { return false }
        if visitor !== state.value.pending || outgoing.value.isFull { flush() }
        state.value.pending = visitor
        outgoing.value.add(payload, to: nil)
        return true
    }

    func flush() {
        if let pending = state.value.pending, outgoing.value.count > 0 { outgoing.value.flush(on: pending.socket) }
        state.value.pending = nil
    }

    /// The visitor's local socket, made on its first datagram; nil past the visitor limit.
    private func visitor(for peer: PeerAddress) -> Visitor? {
        let s = state.value
        if let v = s.visitors[peer] {
            v.lastActive = .now
            return v
        }
        guard s.visitors.count < Self.maxVisitors, Self.reserveSocket() else {
            if Self.claimReport() { reportLimit() }
            return nil
        }
        guard let socket = try? UDPSocket.connected(to: local) else {
            Self.releaseSocket()
            return nil
        }
        let v = Visitor(socket: socket, peer: peer)
        s.visitors[peer] = v
        replyTasks.spawn(on: ring) { await self.relayReplies(of: peer) }
        return v
    }

    /// Frames the local service's replies to one visitor until it has been idle for a minute.
    private func relayReplies(of peer: PeerAddress) async {
        guard let v = state.value.visitors[peer] else { return }
        while true {
            let idle = ContinuousClock.now - v.lastActive
            if idle >= Self.idleTimeout { break }
            do {
                try await v.socket.waitReadable(on: ring, timeout: Self.idleTimeout - idle)
            } catch .timedOut {
                continue
            } catch {
                break
            }
            while let n = try? replies.value.receive(from: v.socket), n > 0 {
                var (sent, bytes) = (0, 0)
                for i in 0..<n {
                    let payload = replies.value.payload(i)
                    if channel.send(payload, peer: v.peer) {
                        sent += 1
                        bytes += payload.count
                    }
                }
                counters.datagrams(outbound: sent, bytesOut: bytes, dropped: n - sent)
                v.lastActive = .now
            }
        }
        if state.value.visitors[peer] === v { state.value.visitors[peer] = nil }
        if state.value.pending === v { state.value.pending = nil }
        Self.releaseSocket()
    }

    /// Ends every visitor's reply task and closes their sockets.
    func closeAll() async {
        replyTasks.cancelAll()
        await replyTasks.wait()
        state.value.visitors.removeAll()
        state.value.pending = nil
    }
}
