// Plain OS threads for blocking peers and services, and the small synchronisation pieces the tests
// share between them and async code: a locked value, a counter, a one-shot latch, a promise.
import Foundation
import Glibc
import Synchronization

/// A value several threads read and write.
public final class Locked<T>: @unchecked Sendable {  // every access goes through the lock
    private let lock = NSLock()
    private var value: T
    public init(_ value: T) { self.value = value }
    public func withLock<R>(_ body: (inout T) -> R) -> R { lock.withLock { body(&value) } }
    public var get: T { lock.withLock { value } }
}

public final class ByteCounter: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    public func add(_ n: Int) { value.add(n, ordering: .relaxed) }
    public var count: Int { value.load(ordering: .relaxed) }
}

private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Runs `body` on a new detached OS thread (1 MiB stack).
public func spawnThread(_ body: @escaping @Sendable () -> Void) {
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
    pthread_attr_setstacksize(&attr, 1 << 20)
    var tid = pthread_t()
    let rc = pthread_create(
        &tid, &attr,
        { raw in
            Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, Unmanaged.passRetained(ThreadBody(body)).toOpaque())
    pthread_attr_destroy(&attr)
    precondition(rc == 0, "pthread_create failed: \(rc)")
}

/// Runs `body(i)` for i in 0..<count on `count` threads at once; waits at most `timeout` seconds.
public func runConcurrently(_ count: Int, timeout: Double, _ body: @escaping @Sendable (Int) -> Void) -> Bool {
    let done = Latch(count: count)
    for i in 0..<count {
        spawnThread {
            body(i)
            done.open()
        }
    }
    return done.wait(seconds: timeout)
}

/// A gate on pthread primitives that opens after `count` calls to `open()`, for bounded waits
/// from synchronous code (`defer`, plain threads).
public final class Latch: @unchecked Sendable {  // state only under `mutex`
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var remaining: Int

    public init(count: Int = 1) {
        remaining = count
        pthread_mutex_init(&mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    public func open() {
        pthread_mutex_lock(&mutex)
        remaining -= 1
        if remaining <= 0 { pthread_cond_broadcast(&cond) }
        pthread_mutex_unlock(&mutex)
    }

    /// Waits until open or `seconds` pass; true when it opened.
    public func wait(seconds: Double) -> Bool {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let whole = Int(seconds)
        deadline.tv_sec += whole
        deadline.tv_nsec += Int((seconds - Double(whole)) * 1e9)
        if deadline.tv_nsec >= 1_000_000_000 {
            deadline.tv_sec += 1
            deadline.tv_nsec -= 1_000_000_000
        }
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while remaining > 0 {
            if pthread_cond_timedwait(&cond, &mutex, &deadline) == ETIMEDOUT { return remaining <= 0 }
        }
        return true
    }
}

/// Delivers a value produced by a callback or a thread to async waiters.
public final class Promise<T: Sendable>: Sendable {
    private struct State {
        var value: T?
        var waiters: [CheckedContinuation<T, Never>] = []
    }
    private let state = Mutex(State())

    public init() {}

    public func fulfill(_ value: T) {
        let waiters = state.withLock { s -> [CheckedContinuation<T, Never>] in
            precondition(s.value == nil, "fulfilled twice")
            s.value = value
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume(returning: value) }
    }

    public var isFulfilled: Bool { state.withLock { $0.value != nil } }

    public var value: T {
        get async {
            await withCheckedContinuation { cont in
                let ready = state.withLock { s -> T? in
                    if let v = s.value { return v }
                    s.waiters.append(cont)
                    return nil
                }
                if let ready { cont.resume(returning: ready) }
            }
        }
    }
}

/// A plain OS thread for a blocking peer, whose result can be awaited.
public final class PeerThread<T: Sendable>: Sendable {
    private let result = Promise<T>()

    public init(_ body: @escaping @Sendable () -> T) {
        let promise = result
        spawnThread { promise.fulfill(body()) }
    }

    public var value: T {
        get async { await result.value }
    }
}
