import CRatholeRing
import Glibc

/// A wake-up signal for one task on one ring, with an optional timeout: the task waits, other code
/// signals (from any thread). Signals that arrive while nobody waits are remembered. Waits run on
/// the ring thread.
public final class RingEvent: @unchecked Sendable {
    public let ring: RingExecutor
    private var signaled = false
    private var sleeping: UInt64?

    public init(ring: RingExecutor) { self.ring = ring }

    /// Waits for `signal()` or until `timeout` passes. Returns true when signalled.
    /// Throws `.cancelled` when the task is cancelled or the ring stops.
    public func wait(timeout: Duration?) async throws(IOError) -> Bool {
        try await ring.onRing { () async throws(IOError) -> Bool in try await waitOnRing(timeout: timeout) }
    }

    private func waitOnRing(timeout: Duration?) async throws(IOError) -> Bool {
        if signaled {
            signaled = false
            return true
        }
        // A day stands in for "no timeout": the timeout op is also how a signal interrupts the wait.
        let limit = timeout ?? .seconds(86_400)
        let outcome = await ring.perform(submitted: { self.sleeping = $0 }) { sqe, slot in
            slot.pointee.timeout = __kernel_timespec(limit)
            io_uring_prep_timeout(sqe, slot.timeoutPointer, 0, 0)
        }
        sleeping = nil
        if signaled {
            signaled = false
            return true
        }
        switch outcome {
        case .done: return false
        case .timedOut, .cancelled: throw .cancelled
        }
    }

    /// Wakes the waiting task (or the next one to wait). From another thread it takes effect on the
    /// ring, soon after.
    public func signal() {
        guard ring.isCurrent else {
            ring.execute { self.signal() }
            return
        }
        signaled = true
        if let sleeping {
            ring.submitCancel(of: sleeping)
            self.sleeping = nil
        }
    }
}

/// Runs `body` on `ring` and cancels it when `timeout` passes first; then throws `.timedOut`.
public func withTimeout<T: Sendable>(
    _ timeout: Duration, on ring: RingExecutor, operation: String,
    _ body: @escaping @Sendable () async throws(IOError) -> T
) async throws(IOError) -> T {
    let result: Result<T, IOError> = await withTaskGroup(of: Result<T, IOError>?.self) { group in
        group.addTask(executorPreference: ring) {
            do throws(IOError) { return .success(try await body()) } catch { return .failure(error) }
        }
        group.addTask(executorPreference: ring) {
            do throws(IOError) {
                try await ring.sleep(for: timeout)
                return .failure(.timedOut(operation: operation))
            } catch {
                return nil   // cancelled because the body finished first
            }
        }
        var first: Result<T, IOError> = .failure(.cancelled)
        while let next = await group.next() {
            if let value = next {
                first = value
                break
            }
        }
        group.cancelAll()
        return first
    }
    return try result.get()
}
