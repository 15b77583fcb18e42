#if RATHOLE_TSAN
import Glibc

/// ThreadSanitizer builds only (`scripts/test --sanitize=thread` defines RATHOLE_TSAN). The
/// Synchronization module's Mutex waits and wakes a contended lock inside its own, uninstrumented
/// library (futex), so TSan misses the ordering the lock gives and reports the data it guards as
/// raced. Inside this module this pthread mutex, which TSan intercepts, stands in for it, with the
/// same use (`Mutex(value)`, `withLock`). One copy per module: a public one would be ambiguous with
/// Synchronization's in every module importing both, and an alias of DataPlane's would need
/// `import DataPlane` in every file that locks (MemberImportVisibility).
final class Mutex<Value: ~Copyable>: @unchecked Sendable {
    private var value: Value
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init(_ initialValue: consuming Value) {
        value = initialValue
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    func withLock<Result: ~Copyable, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return try body(&value)
    }
}
#endif
