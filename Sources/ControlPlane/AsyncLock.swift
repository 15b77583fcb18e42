import Synchronization

/// Mutual exclusion for async work, first come first served: config reloads and the HTTP API's
/// service changes each see and change the config in force without the other in between.
final class AsyncLock: Sendable {
    private let state = Mutex<(held: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

    func withLock<T: Sendable, E: Error>(_ body: () async throws(E) -> T) async throws(E) -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        let free = state.withLock { s -> Bool in
            guard !s.held else { return false }
            s.held = true
            return true
        }
        if free { return }
        await withCheckedContinuation { continuation in
            let acquired = state.withLock { s -> Bool in
                if s.held {
                    s.waiting.append(continuation)
                    return false
                }
                s.held = true
                return true
            }
            if acquired { continuation.resume() }
        }
    }

    /// Hands the lock to the first waiter, if any (it stays held), else frees it.
    private func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty {
                s.held = false
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }
}
