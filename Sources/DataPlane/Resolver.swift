import CRatholeRing
import Glibc
import Synchronization

/// A few threads for blocking calls (getaddrinfo), so that the rings never block on them. Bounded:
/// at most `maxThreads` run at once; more lookups queue, so a burst of them (clients reconnecting
/// to a name, many services) cannot start a thread each. Threads are started on demand and stay.
final class Resolver: Sendable {
    static let shared = Resolver(maxThreads: 4)

    private struct State {
        var queue: [@Sendable () -> Void] = []
        var threads = 0
        var idle = 0
    }

    private let maxThreads: Int
    private let state = Mutex(State())
    private let wakeup = ThreadSignal()

    init(maxThreads: Int) { self.maxThreads = maxThreads }

    /// Runs `job` on one of the threads, soon.
    func run(_ job: @escaping @Sendable () -> Void) {
        let startThread = state.withLock { s -> Bool in
            s.queue.append(job)
            guard s.idle == 0, s.threads < maxThreads else { return false }
            s.threads += 1
            return true
        }
        if startThread { spawnThread() } else { wakeup.signal() }
    }

    private func nextJob() -> (@Sendable () -> Void) {
        while true {
            let job = state.withLock { s -> (@Sendable () -> Void)? in
                if s.queue.isEmpty {
                    s.idle += 1
                    return nil
                }
                return s.queue.removeFirst()
            }
            if let job { return job }
            wakeup.wait()
            state.withLock { $0.idle -= 1 }
        }
    }

    private func spawnThread() {
        let context = Unmanaged.passRetained(self).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        defer { pthread_attr_destroy(&attributes) }
        var thread = pthread_t()
        let rc = pthread_create(
            &thread, &attributes,
            { raw in
                let resolver = Unmanaged<Resolver>.fromOpaque(raw!).takeRetainedValue()
                rr_set_thread_name("rathole-resolve")
                while true { resolver.nextJob()() }
            }, context)
        if rc != 0 {
            // No thread to be had: run the job here rather than lose it.
            Unmanaged<Resolver>.fromOpaque(context).release()
            state.withLock { $0.threads -= 1 }
            if let job = state.withLock({ $0.queue.isEmpty ? nil : $0.queue.removeFirst() }) { job() }
        }
    }
}
