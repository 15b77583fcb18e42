import CRatholeRing
import Glibc

/// How a relay ended, and how much it moved.
public struct RelayResult: Sendable, CustomStringConvertible {
    /// Bytes from the first socket to the second, and back.
    public var bytesAToB: UInt64
    public var bytesBToA: UInt64
    /// Set when an error (a reset, for example) ended the relay; both sockets were then closed.
    public var error: Errno?
    /// True when the relay was stopped from Swift before both directions ended.
    public var stopped: Bool

    init(error: Errno) {
        bytesAToB = 0
        bytesBToA = 0
        self.error = error
        stopped = false
    }

    init(_ c: Completion) {
        bytesAToB = c.bytes.0
        bytesBToA = c.bytes.1
        stopped = c.result == -ECANCELED
        error = c.result < 0 && c.result != -ECANCELED ? Errno(-c.result) : nil
    }

    public var description: String {
        let how = stopped ? "stopped" : error.map { "error: \($0)" } ?? "closed"
        return "\(how), \(bytesAToB) bytes out, \(bytesBToA) bytes back"
    }
}

/// The zero-copy relay: bytes go socket -> pipe -> socket with splice(2), driven in C by polls on
/// this ring. No Swift code runs per chunk and an idle relay holds no pipe and no task.
extension RingExecutor {
    /// Starts relaying between two connected non-blocking sockets, which the relay now owns and
    /// closes when it ends. `onEnd` runs once, on this ring's thread. Call on the ring thread.
    @discardableResult
    public func startRelay(
        _ a: consuming FileDescriptor, _ b: consuming FileDescriptor,
        onEnd: @escaping (RelayResult) -> Void
    ) -> OperationHandle {
        precondition(isCurrent, "startRelay must be called on the ring thread")
        let (slot, userData) = slots.allocate()
        start(slot: slot, userData: userData, a.release(), b.release(), onEnd: onEnd)
        return OperationHandle(ring: self, userData: userData)
    }

    /// Relays between two sockets until the relay ends; cancelling the task stops the relay.
    public func relay(_ a: consuming FileDescriptor, _ b: consuming FileDescriptor) async -> RelayResult {
        let (fa, fb) = (a.release(), b.release())
        return try! await onRing { () async throws(IOError) -> RelayResult in
            let (slot, userData) = slots.allocate()
            let handle = OperationHandle(ring: self, userData: userData)
            return await withTaskCancellationHandler {
                await withUnsafeContinuation { (cont: UnsafeContinuation<RelayResult, Never>) in
                    start(slot: slot, userData: userData, fa, fb) { cont.resume(returning: $0) }
                }
            } onCancel: {
                handle.stop()
            }
        }
    }

    private func start(
        slot: UnsafeMutablePointer<OpSlot>, userData: UInt64, _ a: Int32, _ b: Int32,
        onEnd: @escaping (RelayResult) -> Void
    ) {
        slot.pointee.waiter = .callback { onEnd(RelayResult($0)) }
        guard let relay = rr_relay_start(rawRing, a, b, userData) else {
            Glibc.close(a)
            Glibc.close(b)
            slots.release(userData: userData)
            onEnd(RelayResult(Completion(result: -ENOMEM, flags: 0, bytes: (0, 0))))
            return
        }
        slot.pointee.relay = relay
        if isStopping || slot.pointee.cancelRequested { rr_relay_stop(rawRing, relay) }
    }
}
