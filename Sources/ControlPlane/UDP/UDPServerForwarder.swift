import DataPlane
import Logging

/// The server side of a UDP service: visitors' datagrams on the service port go out framed over
/// the client's data channels, replies come back and are sent to the right visitor. A new visitor
/// is given the next channel in turn and stays on it while it is active and the channel lives, so
/// its datagrams stay in order and reach the local service from one socket; with a stock rathole
/// client every channel works the same way. Lives on one ring, and owns its socket and the tasks
/// of its channels.
final class UDPServerForwarder: Sendable {
    let ring: RingExecutor
    let service: ServerServiceConfig
    let logger: Logger
    let counters: ServiceCounters
    private let channelTasks = TaskScope()
    private let state: RingBound<State>

    private final class State {
        var socket: UDPSocket?
        var channels: [DatagramChannel] = []
        var stopped = false
        /// Which channel each visitor uses, and when it was last heard from.
        var assigned: [PeerAddress: (channel: DatagramChannel, lastSeen: ContinuousClock.Instant)] = [:]
        var nextChannel = 0
        var lastSweep = ContinuousClock.now
    }

    /// A visitor silent this long may be moved to another channel (the client drops its socket too).
    static let visitorIdle: Duration = .seconds(60)
    /// Visitors remembered at most. Beyond, a new visitor's channel follows from a hash of its
    /// address: a flood of datagrams from forged sources must not grow the table without bound.
    static let maxAssigned = 65_536
    /// How long a channel must have lived to be replaced at once when it breaks.
    static let replacementPause: Duration = .seconds(1)

    init(ring: RingExecutor, service: ServerServiceConfig, logger: Logger, counters: ServiceCounters) {
        self.ring = ring
        self.service = service
        self.logger = logger
        self.counters = counters
        state = RingBound(State(), ring: ring)
    }

    /// Binds the port (retrying while it is busy) and forwards visitors' datagrams until stopped.
    /// `onFirstBind` runs once, after the first attempt to bind. Runs on the forwarder's ring.
    func run(onFirstBind: @Sendable () -> Void = {}) async {
        let bind = service.bindAddr.socketAddress
        var attempted = false
        var bound: UDPSocket?
        while bound == nil && !state.value.stopped {
            do {
                bound = try UDPSocket.bind(bind)
            } catch {
                logger.error(
                    "service \(service.name): cannot bind udp \(bind) (server.services.\(service.name).bind_addr): \(error); retrying in 5s"
                )
                if !attempted { onFirstBind() }
                attempted = true
                do { try await ring.sleep(for: .seconds(5)) } catch { return }
            }
        }
        if !attempted { onFirstBind() }
        guard let socket = bound else { return }
        state.value.socket = socket
        logger.info("service \(service.name): listening at udp \(bind)")
        let batch = ReceiveBatch(capacity: 16)
        while !state.value.stopped {
            do { try await socket.waitReadable(on: ring) } catch { break }
            // Take what is queued, a bounded number of batches so the ring stays responsive.
            let now = ContinuousClock.now
            var (forwarded, bytes, dropped) = (0, 0, 0)
            for _ in 0..<16 {
                guard let n = try? batch.receive(from: socket), n > 0 else { break }
                for i in 0..<n {
                    let peer = PeerAddress(batch.sender(i))
                    let payload = batch.payload(i)
                    if channel(for: peer, now: now)?.send(payload, peer: peer) == true {
                        forwarded += 1
                        bytes += payload.count
                    } else {
                        dropped += 1
                    }
                }
            }
            counters.datagrams(inbound: forwarded, bytesIn: bytes, dropped: dropped)
            if now - state.value.lastSweep > .seconds(10) { sweep(now) }
        }
        state.value.socket = nil
        channelTasks.cancelAll()
        await channelTasks.wait()
    }

    /// The visitor's channel: the one it already uses, or the next in turn.
    private func channel(for peer: PeerAddress, now: ContinuousClock.Instant) -> DatagramChannel? {
        let s = state.value
        if let entry = s.assigned[peer], entry.channel.alive {
            s.assigned[peer]!.lastSeen = now
            return entry.channel
        }
        guard !s.channels.isEmpty else { return nil }
        guard s.assigned.count < Self.maxAssigned else {
            return s.channels[Int(UInt(bitPattern: peer.hashValue) % UInt(s.channels.count))]
        }
        s.nextChannel = (s.nextChannel + 1) % s.channels.count
        let channel = s.channels[s.nextChannel]
        s.assigned[peer] = (channel, now)
        return channel
    }

    /// Forgets visitors gone quiet and those whose channel closed.
    private func sweep(_ now: ContinuousClock.Instant) {
        let s = state.value
        s.lastSweep = now
        s.assigned = s.assigned.filter { $0.value.channel.alive && now - $0.value.lastSeen < Self.visitorIdle }
    }

    /// Puts a new data channel to work: StartForwardUdp, then frames both ways. When it breaks while
    /// the service runs, the client is asked for another (as upstream does), so a lost connection
    /// does not cost the service its capacity until the control channel reconnects. Any thread.
    func adopt(_ stream: ByteStream, of session: ControlSession) {
        channelTasks.spawn(on: ring) {
            await self.serve(stream, of: session)
        }
    }

    private func serve(_ stream: ByteStream, of session: ControlSession) async {
        guard !state.value.stopped else {
            stream.close()
            return
        }
        let started = ContinuousClock.now
        let channel = DatagramChannel(stream: stream, ring: ring, sessionKey: session.key)
        channel.send(DataChannelCmd.startForwardUdp)
        state.value.channels.append(channel)
        let replies = SendBatch(capacity: 64)
        var (count, bytes) = (0, 0)
        let end = await channel.run(
            { header, payload in
                guard let socket = self.state.value.socket else { return }
                if replies.isFull { replies.flush(on: socket) }
                replies.add(payload, to: header.from.socketAddress)
                count += 1
                bytes += payload.count
            },
            endOfBatch: {
                if let socket = self.state.value.socket { replies.flush(on: socket) }
                self.counters.datagrams(outbound: count, bytesOut: bytes)
                (count, bytes) = (0, 0)
            })
        state.value.channels.removeAll { $0 === channel }
        sweep(.now)
        DatagramChannel.logEnd(end, service: service.name, logger: logger)
        // A channel that breaks at once (a client that cannot serve it) is replaced after a
        // pause, not in a tight loop. Requests to a session that has ended go nowhere.
        if ContinuousClock.now - started < Self.replacementPause {
            try? await ring.sleep(for: Self.replacementPause)
        }
        if !state.value.stopped { session.requestChannels(1) }
    }

    /// Closes the channels of one control session (it ended or was replaced). Any thread.
    func closeChannels(of sessionKey: Digest) {
        ring.execute {
            for channel in self.state.value.channels where channel.sessionKey == sessionKey { channel.close() }
        }
    }

    /// Stops forwarding: the channels close and the service's socket is given up. Any thread.
    func stop() {
        ring.execute {
            let s = self.state.value
            s.stopped = true
            s.channels.forEach { $0.close() }
            s.socket?.shutdown()
        }
    }
}
