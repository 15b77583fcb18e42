import Synchronization

/// The tasks an owner (a server, a service, a session) starts on its rings: each is tracked until
/// it finishes, `cancelAll` ends them, `wait` returns once every one has finished, and the
/// scope's end cancels what is left. Nothing started here runs on unnoticed.
public final class TaskScope: Sendable {
    private struct State {
        var next = 0
        var running: [Int: Task<Void, Never>] = [:]
        /// Tasks that finished before they were filed under `running`.
        var finishedEarly: Set<Int> = []
        var cancelled = false
    }

    private let state = Mutex(State())

    public init() {}

    deinit { cancelAll() }

    /// Starts `body` on `ring`, unless the scope was cancelled (then `body` never runs).
    public func spawn(on ring: RingExecutor, _ body: @escaping @Sendable () async -> Void) {
        let id = state.withLock { s -> Int? in
            if s.cancelled { return nil }
            s.next += 1
            return s.next
        }
        guard let id else { return }
        let task = Task(executorPreference: ring) { [weak self] in
            await body()
            self?.finished(id)
        }
        let cancelled = state.withLock { s -> Bool in
            if s.finishedEarly.remove(id) == nil { s.running[id] = task }
            return s.cancelled
        }
        if cancelled { task.cancel() }
    }

    private func finished(_ id: Int) {
        state.withLock { s in
            if s.running.removeValue(forKey: id) == nil { s.finishedEarly.insert(id) }
        }
    }

    /// Cancels every task and refuses new ones.
    public func cancelAll() {
        let tasks = state.withLock { s -> [Task<Void, Never>] in
            s.cancelled = true
            return Array(s.running.values)
        }
        tasks.forEach { $0.cancel() }
    }

    /// How many tasks are running.
    public var count: Int { state.withLock { $0.running.count } }

    /// Returns once every task started so far has finished.
    public func wait() async {
        while let task = state.withLock({ $0.running.values.first }) {
            await task.value
        }
    }
}
