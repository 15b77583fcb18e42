import CRatholeRing
import Glibc

/// An operation in flight on a ring (a relay, or one step of a connection started with a callback).
/// Stopping it from any thread ends it early: a relay closes both sockets and reports `stopped`, a
/// step completes with `.cancelled`. Stopping one that already ended does nothing.
public struct OperationHandle: Sendable {
    let ring: RingExecutor
    let userData: UInt64

    public func stop() { ring.requestCancel(userData) }
}

/// Operations whose completion runs a callback on the ring thread instead of resuming a task: the
/// steps of a connection that would otherwise need a task of its own (a task, its frames and its
/// awaits cost more than the steps). Call on the ring thread; `then` runs there exactly once, with
/// `.cancelled` when the step was stopped through its handle or the ring is shutting down.
extension RingExecutor {
    /// Connects a socket, giving up after `timeout`.
    @discardableResult
    public func connect(
        _ fd: Int32, to address: SocketAddress, timeout: Duration?,
        then: @escaping (Result<Void, IOError>) -> Void
    ) -> OperationHandle {
        submit(timeout: timeout, "connect to \(address)") { sqe, slot in
            slot.pointee.address = address.storage
            io_uring_prep_connect(sqe, fd, slot.addressPointer, address.length)
        } then: {
            then($0.map { _ in })
        }
    }

    /// Waits until `fd` is ready for `events`; reports the ready events.
    @discardableResult
    public func poll(_ fd: Int32, events: Int32, then: @escaping (Result<Int32, IOError>) -> Void) -> OperationHandle {
        submit(timeout: nil, "poll", { sqe, _ in io_uring_prep_poll_add(sqe, fd, UInt32(events)) }, then: then)
    }

    /// Calls `then` after `duration` (with `.cancelled` when stopped first).
    @discardableResult
    public func sleep(for duration: Duration, then: @escaping (Result<Void, IOError>) -> Void) -> OperationHandle {
        submit(timeout: nil, "timeout") { sqe, slot in
            slot.pointee.timeout = __kernel_timespec(duration)
            io_uring_prep_timeout(sqe, slot.timeoutPointer, 0, 0)
        } then: { result in
            // A timeout that expires completes with -ETIME: that is its success.
            if case .failure(.system(let e, _)) = result, e.rawValue == ETIME { return then(.success(())) }
            then(result.map { _ in })
        }
    }

    private func submit(
        timeout: Duration?, _ operation: @autoclosure @escaping () -> String,
        _ prepare: (UnsafeMutablePointer<io_uring_sqe>, UnsafeMutablePointer<OpSlot>) -> Void,
        then: @escaping (Result<Int32, IOError>) -> Void
    ) -> OperationHandle {
        precondition(isCurrent, "ring operations must run on the ring thread")
        let (slot, userData) = slots.allocate()
        slot.pointee.waiter = .callback { [unowned self] completion in
            let result = completion.result
            if result >= 0 { return then(.success(result)) }
            if result == -ECANCELED || (timeout != nil && result == -ETIME) {
                let cancelled = completion.cancelRequested || self.isStopping || timeout == nil
                return then(.failure(cancelled ? .cancelled : .timedOut(operation: operation())))
            }
            then(.failure(.system(Errno(-result), operation: operation())))
        }
        queueSubmission(slot, userData, timeout: timeout, prepare)
        // Too late for the shutdown's cancels: cancelled now, reported as any completion is.
        if isStopping {
            slot.pointee.cancelRequested = true
            submitCancel(of: userData)
        }
        return OperationHandle(ring: self, userData: userData)
    }
}
