import DataPlane
import Synchronization

/// A visitor accepted on a service port that has no data channel yet. The pool owns its socket
/// while it waits.
struct WaitingVisitor: Sendable {
    let socket: SocketStream
    let since: ContinuousClock.Instant
}

/// An idle data channel and the session whose client opened it.
struct PooledChannel: Sendable {
    let stream: ByteStream
    let sessionKey: Digest
}

/// One TCP service's idle data channels and the visitors waiting for one, shared by every worker:
/// whichever worker has the second half of a pair (a visitor finding an idle channel, or a channel
/// finding a waiting visitor) starts the relay, without a hop to another ring.
///
/// The pool asks the client for channels in batches: enough for every waiting visitor plus a warm
/// reserve (`target`) that grows while visitors have to wait and shrinks after a quiet spell.
/// Channels that sat unused for a whole second are let go, half of them each second.
/// Visitors past `maxWaiting` are not accepted at all (the service's accept loops pause in
/// `waitForRoom`), so they wait in the kernel's listen backlog at no cost to this process.
/// A waiting visitor is closed only when the client made no progress (no channel arrived) for
/// `patience`: the client is away, frozen or failing, not merely busy.
final class DataChannelPool: Sendable {
    struct Limits: Sendable {
        /// The warm reserve asked for when a control channel starts (rathole's pool size).
        var initialSize = 8
        /// The most idle channels the reserve grows to under load.
        var maxSize = 256
        /// Visitors held by this process; more wait in the listen backlog.
        var maxWaiting = 1024
        /// How long a visitor waits while no data channel arrives at all.
        var patience: Duration = .seconds(10)
        /// Channels asked for and not arrived for this long are asked for again (then after twice
        /// as long, and so on), in case the client lost some of the requests' channels.
        var stall: Duration = .seconds(5)
    }

    fileprivate struct State {
        var idle = FIFO<PooledChannel>()
        var waiting = FIFO<WaitingVisitor>()
        /// Receives the requests for channels; nil while the client is away.
        var session: ControlSession?
        var target: Int
        /// Channels asked for that have not arrived yet.
        var requested = 0
        /// When a channel last arrived (or a control channel started).
        var lastProgress: ContinuousClock.Instant
        var stallWindow: Duration
        var visitorWaitedSinceSweep = false
        /// The fewest idle channels since the last sweep: that many were not needed.
        var fewestIdle = 0
        var pausedAccepts: [CheckedContinuation<Void, Never>] = []
        var closed = false
    }

    let limits: Limits
    private let state: Mutex<State>
    private let budget: VisitorBudget

    init(limits: Limits = Limits(), budget: VisitorBudget) {
        self.limits = limits
        self.budget = budget
        state = Mutex(State(target: limits.initialSize, lastProgress: .now, stallWindow: limits.stall))
    }

    enum VisitorPlacement {
        /// Use this channel (it may have died while idle: check it).
        case channel(PooledChannel)
        /// The visitor waits in the pool, which now owns its socket.
        case waiting
        /// The service is closed; the caller closes the visitor.
        case refused
    }

    /// A new visitor (or one whose channel failed): an idle channel if there is one, else it waits.
    func place(_ visitor: WaitingVisitor, first: Bool = false) -> VisitorPlacement {
        let (placement, request) = state.withLock { s -> (VisitorPlacement, Request) in
            if s.closed { return (.refused, .none) }
            if let channel = s.idle.popFirst() {
                s.fewestIdle = min(s.fewestIdle, s.idle.count)
                return (.channel(channel), s.topUp(limits))
            }
            if first { s.waiting.prepend(visitor) } else { s.waiting.append(visitor) }
            s.visitorWaitedSinceSweep = true
            // The reserve was too small for this load: make it cover everyone waiting.
            s.target = min(limits.maxSize, max(s.target, s.waiting.count))
            return (.waiting, s.topUp(limits))
        }
        request.send()
        return placement
    }

    enum ChannelPlacement {
        /// Forward this waiting visitor over the channel.
        case visitor(WaitingVisitor)
        /// Kept idle.
        case idle
        /// Not wanted (service closed, or more idle channels than the reserve needs): close it.
        case refused
    }

    /// A data channel that just `arrived` (or whose visitor left before it was used): the first
    /// waiting visitor gets it, else it joins the idle ones.
    func add(_ channel: PooledChannel, arrived: Bool = true) -> ChannelPlacement {
        let (placement, resumed) = state.withLock { s -> (ChannelPlacement, [CheckedContinuation<Void, Never>]) in
            if arrived {
                s.requested = max(0, s.requested - 1)
                s.lastProgress = .now
                s.stallWindow = limits.stall
            }
            if s.closed { return (.refused, []) }
            if let visitor = s.waiting.popFirst() {
                return (.visitor(visitor), s.takePausedIfRoom(limits))
            }
            guard s.idle.count < 2 * s.target else { return (.refused, []) }
            s.idle.append(channel)
            return (.idle, [])
        }
        resumed.forEach { $0.resume() }
        return placement
    }

    /// The next waiting visitor for a channel whose visitor turned out to be gone already.
    func nextWaiting() -> WaitingVisitor? {
        let (visitor, resumed) = state.withLock { s -> (WaitingVisitor?, [CheckedContinuation<Void, Never>]) in
            guard let v = s.waiting.popFirst() else { return (nil, []) }
            return (v, s.takePausedIfRoom(limits))
        }
        resumed.forEach { $0.resume() }
        return visitor
    }

    /// Returns when the service may accept another visitor: at once unless `maxWaiting` visitors
    /// wait already (the listen backlog holds the others meanwhile), or the pool is closed.
    func waitForRoom() async {
        if state.withLock({ $0.waiting.count < limits.maxWaiting || $0.closed }) { return }
        await withCheckedContinuation { continuation in
            let ready = state.withLock { s -> Bool in
                if s.waiting.count < limits.maxWaiting || s.closed { return true }
                s.pausedAccepts.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    var waitingCount: Int { state.withLock { $0.waiting.count } }
    var idleCount: Int { state.withLock { $0.idle.count } }

    /// Requests for channels go to `session` from now on, starting with the reserve and one for
    /// every waiting visitor.
    func attach(_ session: ControlSession) {
        let request = state.withLock { s -> Request in
            s.session = session
            s.requested = 0
            s.lastProgress = .now
            s.stallWindow = limits.stall
            return s.topUp(limits)
        }
        request.send()
    }

    /// Forgets `session` (if it is still the current one) and closes the idle channels it opened.
    func detach(_ session: ControlSession) {
        let stale = state.withLock { s -> [PooledChannel] in
            if s.session === session {
                s.session = nil
                s.requested = 0
            }
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

    /// Once a second: closes the visitors that waited `patience` without the client making
    /// progress, asks again for channels that never came, and shrinks the reserve by half of what
    /// was not used in the last second. Returns how many visitors were closed.
    func sweep(now: ContinuousClock.Instant) -> Int {
        let (expired, surplus, request, resumed) = state.withLock { s in
            var expired: [WaitingVisitor] = []
            while let first = s.waiting.first, now - max(first.since, s.lastProgress) >= limits.patience {
                _ = s.waiting.popFirst()
                expired.append(first)
            }
            var request = Request.none
            if s.requested > 0 && now - s.lastProgress >= s.stallWindow {
                s.requested = 0
                s.stallWindow = min(s.stallWindow * 2, .seconds(60))
                request = s.topUp(limits)
            }
            var surplus: [PooledChannel] = []
            let unused = min(s.fewestIdle, s.idle.count)
            if !s.visitorWaitedSinceSweep && unused > 1 {
                s.target = max(limits.initialSize, s.target - unused / 2)
                while s.idle.count > s.target, let oldest = s.idle.popFirst() { surplus.append(oldest) }
            }
            s.visitorWaitedSinceSweep = false
            s.fewestIdle = s.idle.count
            return (expired, surplus, request, s.takePausedIfRoom(limits))
        }
        request.send()
        resumed.forEach { $0.resume() }
        surplus.forEach { $0.stream.close() }
        for visitor in expired {
            visitor.socket.close()
            budget.release()
        }
        return expired.count
    }

    /// The service is gone: idle channels and waiting visitors close, paused accept loops resume
    /// (to find their listener closed), nothing new is kept.
    func close() {
        let (idle, waiting, resumed) = state.withLock { s in
            s.closed = true
            s.session = nil
            var idle: [PooledChannel] = []
            while let c = s.idle.popFirst() { idle.append(c) }
            var waiting: [WaitingVisitor] = []
            while let w = s.waiting.popFirst() { waiting.append(w) }
            let resumed = s.pausedAccepts
            s.pausedAccepts = []
            return (idle, waiting, resumed)
        }
        idle.forEach { $0.stream.close() }
        for visitor in waiting {
            visitor.socket.close()
            budget.release()
        }
        resumed.forEach { $0.resume() }
    }

    /// Channels to ask the session for, sent once the lock is released.
    fileprivate struct Request {
        var session: ControlSession?
        var count = 0
        static let none = Request()

        func send() { if count > 0 { session?.requestChannels(count) } }
    }
}

extension DataChannelPool.State {
    /// Asks for what waiting visitors and the reserve need beyond what is idle or on its way.
    mutating func topUp(_ limits: DataChannelPool.Limits) -> DataChannelPool.Request {
        guard let session else { return .none }
        let missing = waiting.count + target - idle.count - requested
        guard missing > 0 else { return .none }
        requested += missing
        return DataChannelPool.Request(session: session, count: missing)
    }

    /// The paused accept loops to resume, when visitors may be accepted again.
    mutating func takePausedIfRoom(_ limits: DataChannelPool.Limits) -> [CheckedContinuation<Void, Never>] {
        guard waiting.count < limits.maxWaiting, !pausedAccepts.isEmpty else { return [] }
        defer { pausedAccepts = [] }
        return pausedAccepts
    }
}

/// How many visitors the server holds at once, waiting or relayed, so that a flood of them cannot
/// take the file descriptors that control channels, data channels and relay pipes need. Each
/// visitor costs two descriptors (its own and its data channel's).
final class VisitorBudget: Sendable {
    let limit: Int
    private let held = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    /// The budget that fits the process's open-file limit, keeping a reserve for everything else.
    static func fitting(openFileLimit: Int) -> VisitorBudget {
        let reserve = max(256, openFileLimit / 16)
        return VisitorBudget(limit: max(16, (openFileLimit - reserve) / 2))
    }

    var hasRoom: Bool { held.load(ordering: .relaxed) < limit }
    var count: Int { held.load(ordering: .relaxed) }

    func take() { held.wrappingAdd(1, ordering: .relaxed) }
    func release() { held.wrappingSubtract(1, ordering: .relaxed) }
}
