import Glibc

/// A counting wake-up between plain threads (a pthread condition with its count): `wait` blocks
/// until a `signal` that no earlier `wait` consumed. For threads that are not tasks: the ring
/// threads' start-up, the resolver's threads, the main thread waiting for the runtime.
public final class ThreadSignal: @unchecked Sendable {  // the pthread objects are only touched under `mutex`
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var pending = 0

    public init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    public func signal() {
        pthread_mutex_lock(&mutex)
        pending += 1
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
    }

    public func wait() {
        pthread_mutex_lock(&mutex)
        while pending == 0 { pthread_cond_wait(&condition, &mutex) }
        pending -= 1
        pthread_mutex_unlock(&mutex)
    }
}
