import DataPlane
import Synchronization

/// The idle data channels of one TCP service and the visitors waiting for one, shared by every
/// worker: a visitor takes its channel on the worker that accepted it, without a round trip
/// through the hub's ring (measured: those hops cost about a fifth of the server's CPU per
/// connection on 2 cores).
final class DataChannelPool: Sendable {
    private struct State {
        var idle = FIFO<PooledChannel>()
        var waiters = FIFO<WaitingVisitor>()
        /// The control channel that receives the requests for more channels; nil while the client is away.
        var session: ControlSession?
        var closed = false
    }

    /// Idle channels asked for when a control channel starts. At most twice as many are kept; more
    /// arrive only for visitors who gave up on them (the client was frozen, say), and are closed.
    let size: Int
    private let state = Mutex(State())

    init(size: Int) { self.size = size }

    /// A channel for a new visitor: an idle one, else the next to arrive within `patience`; nil
    /// when the pool is closed, `maxWaiting` visitors already wait, or the time runs out. Asks the
    /// client for one more channel (rathole: one per visitor) unless the pool is still at its size
    /// without it, so that it shrinks back after late arrivals. Dead channels (the client closed
    /// them) are dropped on the way.
    func take(patience: Duration, maxWaiting: Int) async -> ByteStream? {
        var found: ByteStream?
        while found == nil, let channel = state.withLock({ $0.idle.popFirst() }) {
            if Socket.isAlive(channel.stream.fd) {
                found = channel.stream
            } else {
                channel.stream.close()
            }
        }
        let session = state.withLock { s in s.idle.count < size ? s.session : nil }
        session?.requestChannels(1)
        if let found { return found }
        let deadline = ContinuousClock.now + patience
        return await withCheckedContinuation { continuation in
            // Looked at again under the lock: a channel filed since the check above must not sit
            // idle while this visitor waits for the next one.
            let ready = state.withLock { s -> ByteStream?? in
                if s.closed || s.waiters.count >= maxWaiting { return .some(nil) }
                if let channel = s.idle.popFirst() { return channel.stream }
                s.waiters.append(WaitingVisitor(continuation: continuation, deadline: deadline))
                return .none
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Hands a new channel to the first waiting visitor, or keeps it idle.
    func add(_ stream: ByteStream, sessionKey: Digest) {
        let waiter = state.withLock { s -> WaitingVisitor?? in
            if s.closed { return .some(nil) }
            if let waiter = s.waiters.popFirst() { return waiter }
            guard s.idle.count < 2 * size else { return .some(nil) }
            s.idle.append(PooledChannel(stream: stream, sessionKey: sessionKey))
            return .none
        }
        switch waiter {
        case .none: break
        case .some(nil): stream.close()
        case .some(let w?): w.continuation.resume(returning: stream)
        }
    }

    var waitingCount: Int { state.withLock { $0.waiters.count } }

    /// Requests for more channels go to `session` from now on.
    func attach(_ session: ControlSession) {
        state.withLock { $0.session = session }
    }

    /// Forgets `session` (if it is still the current one) and closes the idle channels it opened.
    func detach(_ session: ControlSession) {
        let stale = state.withLock { s -> [PooledChannel] in
            if s.session === session { s.session = nil }
            var stale: [PooledChannel] = []
            s.idle.removeAll { channel in
                guard channel.sessionKey == session.key else { return false }
                stale.append(channel)
                return true
            }
            return stale
        }
        stale.forEach { $0.stream.close() }
    }

    /// Turns away the visitors whose patience ran out.
    func expireWaiters(now: ContinuousClock.Instant) {
        let expired = state.withLock { s -> [WaitingVisitor] in
            var expired: [WaitingVisitor] = []
            while let first = s.waiters.first, first.deadline <= now {
                _ = s.waiters.popFirst()
                expired.append(first)
            }
            return expired
        }
        expired.forEach { $0.continuation.resume(returning: nil) }
    }

    /// The service is gone: idle channels close, waiting visitors are turned away, nothing new is kept.
    func close() {
        let (idle, waiters) = state.withLock { s -> ([PooledChannel], [WaitingVisitor]) in
            s.closed = true
            s.session = nil
            var idle: [PooledChannel] = []
            while let c = s.idle.popFirst() { idle.append(c) }
            var waiters: [WaitingVisitor] = []
            while let w = s.waiters.popFirst() { waiters.append(w) }
            return (idle, waiters)
        }
        idle.forEach { $0.stream.close() }
        waiters.forEach { $0.continuation.resume(returning: nil) }
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

/// A first-in first-out queue that does not shift its elements on every removal. A removed element
/// is released at once (its slot is cleared), not when the storage is next compacted.
struct FIFO<Element> {
    private var items: [Element?] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }
    var first: Element? { head < items.count ? items[head] : nil }

    mutating func append(_ item: Element) { items.append(item) }

    mutating func popFirst() -> Element? {
        guard head < items.count else { return nil }
        let item = items[head]
        items[head] = nil
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    mutating func removeAll(where shouldRemove: (Element) -> Bool) {
        items = items[head...].filter { !shouldRemove($0!) }
        head = 0
    }
}
