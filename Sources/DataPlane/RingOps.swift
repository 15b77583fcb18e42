import CRatholeRing
import Glibc

/// Async socket operations, each one SQE on this ring whose CQE resumes the caller on the ring thread.
///
/// Callers should run with this executor as their task executor preference; a call from anywhere
/// else hops to the ring first (correct, only slower).
extension RingExecutor {
    enum Outcome {
        case done(Completion)
        case timedOut
        case cancelled
    }

    /// Runs `body` on this ring's thread (at once when already there).
    @inline(__always)
    public func onRing<T>(_ body: () async throws(IOError) -> T) async throws(IOError) -> T {
        if isCurrent { return try await body() }
        return try await withTaskExecutorPreference(self) { () async throws(IOError) -> T in
            try await body()
        }
    }

    /// Submits one operation, optionally bounded by a linked timeout, and waits for its completion.
    /// Must run on the ring thread. The slot passed to `prepare` stays valid until the completion,
    /// so arguments the kernel reads late (timespecs, addresses) belong in it.
    /// `submitted` learns the operation's user_data (to cancel it later).
    func perform(
        timeout: Duration? = nil,
        submitted: ((UInt64) -> Void)? = nil,
        _ prepare: (UnsafeMutablePointer<io_uring_sqe>, UnsafeMutablePointer<OpSlot>) -> Void
    ) async -> Outcome {
        precondition(isCurrent, "ring operations must run on the ring thread")
        if isStopping || Task.isCancelled { return .cancelled }
        let (slot, userData) = slots.allocate()
        let completion = await withTaskCancellationHandler {
            await withUnsafeContinuation { (cont: UnsafeContinuation<Completion, Never>) in
                slot.pointee.waiter = .continuation(cont)
                self.queueSubmission(slot, userData, timeout: timeout, prepare)
                submitted?(userData)
                if slot.pointee.cancelRequested { self.submitCancel(of: userData) }
            }
        } onCancel: {
            self.requestCancel(userData)
        }
        if completion.result == -ECANCELED || (timeout != nil && completion.result == -ETIME) {
            if Task.isCancelled || isStopping || timeout == nil { return .cancelled }
            return .timedOut
        }
        return .done(completion)
    }

    /// Queues the operation's SQE, tagged `userData`, and its linked timeout if it has one.
    func queueSubmission(
        _ slot: UnsafeMutablePointer<OpSlot>, _ userData: UInt64, timeout: Duration?,
        _ prepare: (UnsafeMutablePointer<io_uring_sqe>, UnsafeMutablePointer<OpSlot>) -> Void
    ) {
        // An operation and its linked timeout must never be split over two submissions.
        if timeout != nil { rr_ring_reserve(rawRing, 2) }
        let sqe = self.sqe()
        prepare(sqe, slot)
        io_uring_sqe_set_data64(sqe, userData)
        guard let timeout else { return }
        sqe.pointee.flags |= RR_IOSQE_IO_LINK
        slot.pointee.timeout = __kernel_timespec(timeout)
        let t = self.sqe()
        io_uring_prep_link_timeout(t, slot.timeoutPointer, 0)
        io_uring_sqe_set_data64(t, RR_UD_IGNORE)
    }

    /// Cancels an operation in flight; safe from any thread.
    nonisolated func requestCancel(_ userData: UInt64) {
        if isCurrent {
            cancelNow(userData)
        } else {
            execute { self.cancelNow(userData) }
        }
    }

    private func cancelNow(_ userData: UInt64) {
        guard let slot = slots.lookup(userData) else { return }
        let submitted = slot.pointee.waiter != nil
        slot.pointee.cancelRequested = true  // when not submitted yet, the submitter cancels it
        if let relay = slot.pointee.relay {
            rr_relay_stop(rawRing, relay)
        } else if submitted {
            submitCancel(of: userData)
        }
    }

    @inline(__always)
    private func result(_ outcome: Outcome, _ operation: @autoclosure () -> String) throws(IOError) -> Int32 {
        switch outcome {
        case .done(let c): return try IOError.check(c.result, operation())
        case .timedOut: throw .timedOut(operation: operation())
        case .cancelled: throw .cancelled
        }
    }

    // MARK: Operations

    /// Accepts one connection; the new socket is non-blocking and close-on-exec.
    public func accept(_ listener: Int32) async throws(IOError) -> Int32 {
        try await onRing { () async throws(IOError) -> Int32 in
            let outcome = await perform { sqe, _ in
                io_uring_prep_accept(sqe, listener, nil, nil, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue))
            }
            return try result(outcome, "accept")
        }
    }

    /// Connects a socket, giving up after `timeout`.
    public func connect(_ fd: Int32, to address: SocketAddress, timeout: Duration? = nil) async throws(IOError) {
        try await onRing { () async throws(IOError) in
            let outcome = await perform(timeout: timeout) { sqe, slot in
                slot.pointee.address = address.storage
                io_uring_prep_connect(sqe, fd, slot.addressPointer, address.length)
            }
            _ = try result(outcome, "connect to \(address)")
        }
    }

    /// Receives up to `buffer.count` bytes; 0 means the peer closed its side.
    public func recv(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws(IOError) -> Int {
        try await onRing { () async throws(IOError) -> Int in
            let outcome = await perform(timeout: timeout) { sqe, _ in
                io_uring_prep_recv(sqe, fd, buffer.baseAddress, buffer.count, 0)
            }
            return Int(try result(outcome, "recv"))
        }
    }

    /// Receives exactly `buffer.count` bytes, or throws `.endOfStream` if the peer closes first.
    public func recvExact(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws(IOError) {
        var done = 0
        while done < buffer.count {
            let n = try await recv(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), timeout: timeout)
            if n == 0 { throw .endOfStream }
            done += n
        }
    }

    /// Sends some of `buffer`; returns how many bytes the kernel took.
    public func send(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws(IOError) -> Int {
        try await onRing { () async throws(IOError) -> Int in
            let outcome = await perform(timeout: timeout) { sqe, _ in
                io_uring_prep_send(sqe, fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL))
            }
            return Int(try result(outcome, "send"))
        }
    }

    /// Sends all of `buffer`.
    public func sendAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws(IOError) {
        var done = 0
        while done < buffer.count {
            done += try await send(fd, UnsafeRawBufferPointer(rebasing: buffer[done...]), timeout: timeout)
        }
    }

    /// Sends all of `bytes` (control-plane convenience; copies once).
    public func sendAll(_ fd: Int32, bytes: [UInt8], timeout: Duration? = nil) async throws(IOError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: bytes)
        try await sendAll(fd, UnsafeRawBufferPointer(buffer), timeout: timeout)
    }

    /// Receives exactly `count` bytes (control-plane convenience).
    public func recvExact(_ fd: Int32, count: Int, timeout: Duration? = nil) async throws(IOError) -> [UInt8] {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 1)
        defer { buffer.deallocate() }
        try await recvExact(fd, into: buffer, timeout: timeout)
        return Array(buffer)
    }

    /// Waits until `fd` is ready for `events` (POLLIN, POLLOUT, ...); returns the ready events.
    public func poll(_ fd: Int32, events: Int32, timeout: Duration? = nil) async throws(IOError) -> Int32 {
        try await onRing { () async throws(IOError) -> Int32 in
            let outcome = await perform(timeout: timeout) { sqe, _ in
                io_uring_prep_poll_add(sqe, fd, UInt32(events))
            }
            return try result(outcome, "poll")
        }
    }

    /// Suspends for `duration` using a ring timeout (never `Task.sleep` on the ring).
    public func sleep(for duration: Duration) async throws(IOError) {
        try await onRing { () async throws(IOError) in
            let outcome = await perform { sqe, slot in
                slot.pointee.timeout = __kernel_timespec(duration)
                io_uring_prep_timeout(sqe, slot.timeoutPointer, 0, 0)
            }
            switch outcome {
            case .done(let c) where c.result == -ETIME || c.result >= 0: return
            case .done(let c): _ = try IOError.check(c.result, "timeout")
            case .timedOut, .cancelled: throw .cancelled
            }
        }
    }
}

extension __kernel_timespec {
    init(_ d: Duration) {
        let (seconds, attoseconds) = d.components
        self.init(tv_sec: max(0, seconds), tv_nsec: max(0, attoseconds / 1_000_000_000))
    }
}
