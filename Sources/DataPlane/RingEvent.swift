import CRatholeRing
import Glibc

/// A wake-up signal for one task on one ring, with an optional timeout: the task waits, other code
/// signals (from any thread). Signals that arrive while nobody waits are remembered. Waits run on
/// the ring thread.
public final class RingEvent: Sendable {
    public let ring: RingExecutor
    /// A signal nobody waited for yet, and the timeout op of the wait in progress.
    private let state: RingBound<(signaled: Bool, sleeping: UInt64?)>

    public init(ring: RingExecutor) {
        self.ring = ring
        state = RingBound((false, nil), ring: ring)
    }

    /// Waits for `signal()` or until `timeout` passes. Returns true when signalled.
    /// Throws `.cancelled` when the task is cancelled or the ring stops.
    public func wait(timeout: Duration?) async throws(IOError) -> Bool {
        try await ring.onRing { () async throws(IOError) -> Bool in try await waitOnRing(timeout: timeout) }
    }

    private func waitOnRing(timeout: Duration?) async throws(IOError) -> Bool {
        if state.value.signaled {
            state.value.signaled = false
            return true
        }
        // A day stands in for "no timeout": the timeout op is also how a signal interrupts the wait.
        let limit = timeout ?? .seconds(86_400)
        let outcome = await ring.perform(submitted: { self.state.value.sleeping = $0 }) { sqe, slot in
            slot.pointee.timeout = __kernel_timespec(limit)
            io_uring_prep_timeout(sqe, slot.timeoutPointer, 0, 0)
        }
        state.value.sleeping = nil
        if state.value.signaled {
            state.value.signaled = false
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
        state.value.signaled = true
        if let sleeping = state.value.sleeping {
            ring.submitCancel(of: sleeping)
            state.value.sleeping = nil
        }
    }
}

/// Runs `body` on `ring` and cancels it when `timeout` passes first; then throws `timedOut`.
public func withTimeout<T: Sendable, E: Error>(
    _ timeout: Duration, on ring: RingExecutor, timedOut: E,
    _ body: @escaping @Sendable () async throws(E) -> T
) async throws(E) -> T {
    let result: Result<T, E>? = await withTaskGroup(of: Result<T, E>?.self) { group in
        group.addTask(executorPreference: ring) {
            do throws(E) { return .success(try await body()) } catch { return .failure(error) }
        }
        group.addTask(executorPreference: ring) {
            do throws(IOError) {
                try await ring.sleep(for: timeout)
                return .failure(timedOut)
            } catch {
                return nil  // cancelled because the body finished first
            }
        }
        var first: Result<T, E>?
        while let next = await group.next() {
            if let value = next {
                first = value
                break
            }
        }
        group.cancelAll()
        return first
    }
    // Neither finished: the ring is stopping.
    guard let result else { throw timedOut }
    return try result.get()
}
