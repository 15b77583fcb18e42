import Synchronization

/// Events that must all happen before waiters go on: the first bind attempt of every service port,
/// before the server reports itself ready (systemd's READY=1).
final class Countdown: Sendable {
    private let state: Mutex<(left: Int, waiters: [CheckedContinuation<Void, Never>])>

    init(_ count: Int) { state = Mutex((count, [])) }

    /// One event happened.
    func tick() {
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.left -= 1
            guard s.left <= 0 else { return [] }
            defer { s.waiters = [] }
            return s.waiters
        }
        woken.forEach { $0.resume() }
    }

    /// Lets every waiter go on, whatever is left (shutting down).
    func release() {
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.left = 0
            defer { s.waiters = [] }
            return s.waiters
        }
        woken.forEach { $0.resume() }
    }

    /// Returns once every event happened (or `release()`).
    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.left <= 0 { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}
