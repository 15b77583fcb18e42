import DataPlane
import Synchronization
import Logging

/// A data channel that carries UDP frames (`u8 header length, UdpHeader, payload`) both ways.
/// Frames queued with `send` are written in batches by one writer task, so a burst of datagrams
/// costs one write; a backed-up channel drops datagrams rather than growing without bound.
/// Lives on one ring: every method runs on `ring`'s thread.
final class DatagramChannel: @unchecked Sendable {
    let stream: ByteStream
    let ring: RingExecutor
    let sessionKey: Digest?
    private var queued = ByteBuffer()
    private let wake: RingEvent
    private(set) var alive = true
    static let maxQueuedBytes = 4 << 20

    init(stream: ByteStream, ring: RingExecutor, sessionKey: Digest? = nil) {
        self.stream = stream
        self.ring = ring
        self.sessionKey = sessionKey
        wake = RingEvent(ring: ring)
    }

    /// Queues one datagram from (server side) or for (client side) `peer`.
    func send(_ payload: UnsafeRawBufferPointer, peer: PeerAddress) {
        guard alive, payload.count <= UdpHeader.maxPayload, queued.readable.count < Self.maxQueuedBytes else { return }
        let prefix = UdpHeader.prefixSize(for: peer)
        let space = queued.reserve(prefix + payload.count)
        _ = try? UdpHeader.encodePrefix(from: peer, payloadLength: payload.count, into: space)
        UnsafeMutableRawBufferPointer(rebasing: space[prefix...]).copyMemory(from: payload)
        queued.commit(prefix + payload.count)
        wake.signal()
    }

    /// Queues a protocol message ahead of the frames (StartForwardUdp).
    func send(_ message: some WireMessage) {
        queued.append(message.encode())
        wake.signal()
    }

    /// Writes queued bytes until the channel fails or is closed.
    func runWriter() async {
        var sending = ByteBuffer()   // swapped with `queued`: each fills while the other is written
        while alive {
            if queued.isEmpty {
                do { _ = try await wake.wait(timeout: nil) } catch { break }
                continue
            }
            swap(&queued, &sending)
            do {
                try await stream.write(sending.readable)
            } catch {
                break
            }
            sending.consume(sending.readable.count, keepingCapacity: true)
        }
        close()
    }

    /// Reads frames and hands each to `deliver` until the channel ends; returns why it ended.
    /// The payloads stay valid until `endOfBatch` runs, after the frames of each read.
    /// A malformed frame ends this channel only.
    func runReader(_ deliver: (UdpHeader, UnsafeRawBufferPointer) -> Void, endOfBatch: () -> Void) async -> String {
        let input = ByteBuffer()
        defer { close() }
        while alive {
            let space = input.reserve(UdpHeader.maxFrameSize)
            let n: Int
            do { n = try await stream.read(into: space) } catch { return "\(error)" }
            if n == 0 {
                if input.isEmpty { return "closed by the peer" }
                return "\(Self.malformed) the channel ended in the middle of a frame (\(input.readable.count) bytes of it received)"
            }
            input.commit(n)
            var parsed = 0
            do throws(ProtocolError) {
                let bytes = input.readable
                while let (header, size) = try UdpFrame.parse(UnsafeRawBufferPointer(rebasing: bytes[parsed...])) {
                    let payload = bytes[(parsed + header.prefixSize)..<(parsed + size)]
                    deliver(header, UnsafeRawBufferPointer(rebasing: payload))
                    parsed += size
                }
            } catch {
                return "\(Self.malformed) \(error)"
            }
            endOfBatch()
            input.consume(parsed, keepingCapacity: true)
        }
        return "closed"
    }

    /// How `runReader` starts its reason when the peer broke the framing.
    static let malformed = "malformed UDP frame:"

    /// Logs why a channel ended: a warning when the peer sent a malformed frame, else debug.
    static func logEnd(_ reason: String, service: String, logger: Logger) {
        if reason.hasPrefix(malformed) {
            logger.warning("service \(service): udp data channel closed: \(reason)")
        } else {
            logger.debug("service \(service): udp data channel ended: \(reason)")
        }
    }

    func close() {
        guard alive else { return }
        alive = false
        wake.signal()
        stream.close()
    }
}

/// The server side of a UDP service: visitors' datagrams on the service port go out framed over
/// the client's data channels, replies come back and are sent to the right visitor. A new visitor
/// is given the next channel in turn and stays on it while it is active and the channel lives, so
/// its datagrams stay in order and reach the local service from one socket; with a stock rathole
/// client every channel works the same way. Lives on one ring.
final class UDPServerForwarder: @unchecked Sendable {
    let ring: RingExecutor
    let service: ServerServiceConfig
    let logger: Logger
    private var fd: Int32 = -1
    private var channels: [DatagramChannel] = []
    private var stopped = false
    /// Which channel each visitor uses, and when it was last heard from.
    private var assigned: [PeerAddress: (channel: DatagramChannel, lastSeen: ContinuousClock.Instant)] = [:]
    private var nextChannel = 0
    private var lastSweep = ContinuousClock.now
    /// A visitor silent this long may be moved to another channel (the client drops its socket too).
    static let visitorIdle: Duration = .seconds(60)
    /// Visitors remembered at most. Beyond, a new visitor's channel follows from a hash of its
    /// address: a flood of datagrams from forged sources must not grow the table without bound.
    static let maxAssigned = 65_536
    /// How long a channel must have lived to be replaced at once when it breaks.
    static let replacementPause: Duration = .seconds(1)

    init(ring: RingExecutor, service: ServerServiceConfig, logger: Logger) {
        self.ring = ring
        self.service = service
        self.logger = logger
    }

    /// Binds the port (retrying while it is busy) and forwards visitors' datagrams until stopped.
    /// `onFirstBind` runs once, after the first attempt to bind.
    func run(onFirstBind: @Sendable () -> Void = {}) async {
        let bind = service.bindAddr.socketAddress
        var attempted = false
        while !stopped {
            do {
                fd = try UDP.bind(bind)
                break
            } catch {
                logger.error("service \(service.name): cannot bind udp \(bind) (server.services.\(service.name).bind_addr): \(error); retrying in 5s")
                if !attempted { onFirstBind() }
                attempted = true
                do { try await ring.sleep(for: .seconds(5)) } catch { return }
            }
        }
        if !attempted { onFirstBind() }
        guard fd >= 0 else { return }
        logger.info("service \(service.name): listening at udp \(bind)")
        defer { Socket.close(fd) }
        let batch = ReceiveBatch(capacity: 16)
        while !stopped {
            do { _ = try await ring.poll(fd, events: Socket.readableEvents) } catch { break }
            // Take what is queued, a bounded number of batches so the ring stays responsive.
            let now = ContinuousClock.now
            for _ in 0..<16 {
                guard let n = try? batch.receive(fd), n > 0 else { break }
                for i in 0..<n {
                    let peer = PeerAddress(batch.sender(i))
                    channel(for: peer, now: now)?.send(batch.payload(i), peer: peer)
                }
            }
            if now - lastSweep > .seconds(10) { sweep(now) }
        }
    }

    /// The visitor's channel: the one it already uses, or the next in turn.
    private func channel(for peer: PeerAddress, now: ContinuousClock.Instant) -> DatagramChannel? {
        if let entry = assigned[peer], entry.channel.alive {
            assigned[peer]!.lastSeen = now
            return entry.channel
        }
        guard !channels.isEmpty else { return nil }
        guard assigned.count < Self.maxAssigned else {
            return channels[Int(UInt(bitPattern: peer.hashValue) % UInt(channels.count))]
        }
        nextChannel = (nextChannel + 1) % channels.count
        let channel = channels[nextChannel]
        assigned[peer] = (channel, now)
        return channel
    }

    /// Forgets visitors gone quiet and those whose channel closed.
    private func sweep(_ now: ContinuousClock.Instant) {
        lastSweep = now
        assigned = assigned.filter { $0.value.channel.alive && now - $0.value.lastSeen < Self.visitorIdle }
    }

    /// Puts a new data channel to work: StartForwardUdp, then frames both ways. When it breaks while
    /// the service runs, the client is asked for another (as upstream does), so a lost connection
    /// does not cost the service its capacity until the control channel reconnects.
    func adopt(_ stream: ByteStream, of session: ControlSession) {
        Task(executorPreference: ring) {
            guard !self.stopped else {
                stream.close()
                return
            }
            let started = ContinuousClock.now
            let channel = DatagramChannel(stream: stream, ring: self.ring, sessionKey: session.key)
            channel.send(DataChannelCmd.startForwardUdp)
            self.channels.append(channel)
            Task(executorPreference: self.ring) { await channel.runWriter() }
            let replies = SendBatch(capacity: 64)
            let reason = await channel.runReader({ header, payload in
                if replies.isFull { replies.flush(self.fd) }
                replies.add(payload, to: header.from.socketAddress)
            }, endOfBatch: {
                replies.flush(self.fd)
            })
            self.channels.removeAll { $0 === channel }
            self.sweep(.now)
            DatagramChannel.logEnd(reason, service: self.service.name, logger: self.logger)
            // A channel that breaks at once (a client that cannot serve it) is replaced after a
            // pause, not in a tight loop. Requests to a session that has ended go nowhere.
            if ContinuousClock.now - started < Self.replacementPause {
                try? await self.ring.sleep(for: Self.replacementPause)
            }
            if !self.stopped { session.requestChannels(1) }
        }
    }

    /// Closes the channels of one control session (it ended or was replaced).
    func closeChannels(of sessionKey: Digest) {
        Task(executorPreference: ring) {
            for channel in self.channels where channel.sessionKey == sessionKey { channel.close() }
        }
    }

    func stop() {
        Task(executorPreference: ring) {
            self.stopped = true
            self.channels.forEach { $0.close() }
            if self.fd >= 0 { Socket.shutdownBoth(self.fd) }
        }
    }
}

extension Client {
    /// The client side of a UDP data channel: one connected local socket per visitor address,
    /// replies framed back with that address, a socket dropped after 60 s without traffic.
    func forwardUDP(_ service: ClientServiceConfig, channel stream: ByteStream, ring: RingExecutor) async {
        let local: SocketAddress
        do {
            local = try await service.localAddr.resolve(preferIPv6: service.preferIPv6)
        } catch {
            logger.warning("service \(service.name): cannot resolve local_addr \(service.localAddr): \(error)")
            stream.close()
            return
        }
        let channel = DatagramChannel(stream: stream, ring: ring)
        let visitors = UDPVisitorTable(ring: ring, channel: channel, local: local) { [logger] in
            logger.warning("service \(service.name): too many UDP visitors at once (\(UDPVisitorTable.maxVisitors) per channel, \(UDPVisitorTable.maxOpenSockets) in all); datagrams from new visitors are dropped until others go quiet for 60 s")
        }
        Task(executorPreference: ring) { await channel.runWriter() }
        let reason = await channel.runReader({ header, payload in
            visitors.forward(payload, from: header.from)
        }, endOfBatch: {
            visitors.flush()
        })
        visitors.closeAll()
        DatagramChannel.logEnd(reason, service: service.name, logger: logger)
    }
}

/// The client's local sockets for the visitors of one UDP data channel. Ring-confined.
final class UDPVisitorTable: @unchecked Sendable {
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

    final class Visitor: @unchecked Sendable {
        let fd: Int32
        let peer: PeerAddress
        var lastActive = ContinuousClock.now
        var task: Task<Void, Never>?
        init(fd: Int32, peer: PeerAddress) {
            self.fd = fd
            self.peer = peer
        }
    }

    let ring: RingExecutor
    let channel: DatagramChannel
    let local: SocketAddress
    private var visitors: [PeerAddress: Visitor] = [:]
    /// One receive batch for all visitors: datagrams are framed before the next batch is read.
    private let replies = ReceiveBatch(capacity: 16)
    /// Datagrams to the local service, sent together; they all go out on `pendingFD`.
    private let outgoing = SendBatch(capacity: 64)
    private var pendingFD: Int32 = -1

    /// Called when a new visitor is turned away for want of sockets, at most once a minute in the
    /// whole process.
    private let reportLimit: () -> Void

    init(ring: RingExecutor, channel: DatagramChannel, local: SocketAddress, reportLimit: @escaping () -> Void) {
        self.ring = ring
        self.channel = channel
        self.local = local
        self.reportLimit = reportLimit
    }

    var count: Int { visitors.count }

    /// Queues a visitor's datagram for the local service (sent by `flush`, or earlier when the
    /// batch is full or the next datagram is another visitor's).
    func forward(_ payload: UnsafeRawBufferPointer, from peer: PeerAddress) {
        guard let fd = socket(for: peer) else { return }
        if fd != pendingFD || outgoing.isFull { flush() }
        pendingFD = fd
        outgoing.add(payload, to: nil)
    }

    func flush() {
        if outgoing.count > 0 { outgoing.flush(pendingFD) }
        pendingFD = -1
    }

    /// The local socket for a visitor, made on its first datagram; nil past the visitor limit.
    private func socket(for peer: PeerAddress) -> Int32? {
        if let v = visitors[peer] {
            v.lastActive = .now
            return v.fd
        }
        guard visitors.count < Self.maxVisitors, Self.reserveSocket() else {
            if Self.claimReport() { reportLimit() }
            return nil
        }
        guard let fd = try? UDP.connected(to: local) else {
            Self.releaseSocket()
            return nil
        }
        let v = Visitor(fd: fd, peer: peer)
        visitors[peer] = v
        v.task = Task(executorPreference: ring) { await self.relayReplies(of: v) }
        return fd
    }

    /// Frames the local service's replies to one visitor until it has been idle for a minute.
    private func relayReplies(of v: Visitor) async {
        while true {
            let idle = ContinuousClock.now - v.lastActive
            if idle >= Self.idleTimeout { break }
            do {
                _ = try await ring.poll(v.fd, events: Socket.readableEvents, timeout: Self.idleTimeout - idle)
            } catch .timedOut(_) {
                continue
            } catch {
                break
            }
            while let n = try? replies.receive(v.fd), n > 0 {
                for i in 0..<n { channel.send(replies.payload(i), peer: v.peer) }
                v.lastActive = .now
            }
        }
        if visitors[v.peer] === v { visitors[v.peer] = nil }
        Socket.close(v.fd)
        Self.releaseSocket()
    }

    func closeAll() {
        for v in visitors.values { v.task?.cancel() }
    }
}
