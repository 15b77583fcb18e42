import Glibc
import Synchronization
import TestKit
import XCTest

// Ring operations that report to a callback instead of resuming a task (the client's data channels
// are set up with them), and the ConnectionSet that stops them: real loopback sockets.
@testable import DataPlane

final class RingCallbackTests: XCTestCase {
    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
    }

    /// Starts `start` on the ring's thread and waits (at most 10 s) for the one result it reports.
    private func onRing<T: Sendable>(
        _ ring: RingExecutor, _ what: String,
        _ start: @escaping @Sendable (@escaping @Sendable (T) -> Void) -> Void
    ) async throws -> T {
        try await withDeadline(10, what) {
            await withCheckedContinuation { (done: CheckedContinuation<T, Never>) in
                ring.execute {
                    XCTAssertTrue(ring.isCurrent)
                    start { result in
                        XCTAssertTrue(ring.isCurrent, "\(what): the callback ran off the ring")
                        done.resume(returning: result)
                    }
                }
            }
        }
    }

    func testConnectHandsOverAConnectedStream() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let baseline = await FDTable.baseline()
        let result = try await onRing(ring, "connect") { (done: @escaping @Sendable (Result<SocketStream, IOError>) -> Void) in
            Socket.connect(to: f.listener.address, on: ring, timeout: .seconds(10), speaksFirst: true) { done($0) }
        }
        let stream = try result.get()
        let peer = try XCTUnwrap(f.listener.accept(timeout: 10))
        let sent = Array("callback".utf8).withUnsafeBytes { try? stream.sendNow($0) }
        XCTAssertEqual(sent, 8)
        XCTAssertEqual(try peer.readExact(8, timeout: 10), Array("callback".utf8))
        stream.close()
        XCTAssertNotNil(peer.waitClosed(timeout: 10))
        peer.close()
        assertFDsRestored(baseline, "connected stream closed")
    }

    func testConnectRefusedIsATypedErrorAndClosesTheSocket() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let closed = try Listener()
        let address = closed.address
        closed.close()
        let baseline = await FDTable.baseline()
        let result = try await onRing(ring, "connect to a closed port") {
            (done: @escaping @Sendable (Result<SocketStream, IOError>) -> Void) in
            Socket.connect(to: address, on: ring, timeout: .seconds(10)) { done($0) }
        }
        guard case .failure(.system(let errno, let operation)) = result else {
            return XCTFail("expected a refusal, got \(result)")
        }
        XCTAssertEqual(errno, .connectionRefused)
        XCTAssertTrue(operation.contains("connect to \(address)"), operation)
        assertFDsRestored(baseline, "refused connect")
    }

    /// A listener whose one-connection queue is full drops the next SYN: the connect hangs until
    /// its linked timeout, which is reported as a timeout, not as a cancel.
    func testConnectTimeoutIsTimedOut() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let full = try Listener(backlog: 0)
        defer { full.close() }
        let queued = try await onRing(ring, "first connect") { (done: @escaping @Sendable (Result<SocketStream, IOError>) -> Void) in
            Socket.connect(to: full.address, on: ring, timeout: .seconds(10)) { done($0) }
        }
        let first = try queued.get()
        defer { first.close() }
        let start = ContinuousClock.now
        let result = try await onRing(ring, "connect to a full queue") {
            (done: @escaping @Sendable (Result<SocketStream, IOError>) -> Void) in
            Socket.connect(to: full.address, on: ring, timeout: .milliseconds(300)) { done($0) }
        }
        guard case .failure(.timedOut(let operation)) = result else {
            return XCTFail("expected a timeout, got \(result)")
        }
        XCTAssertTrue(operation.contains("connect"), operation)
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - start, .milliseconds(250))
    }

    /// Stopping a step through its handle reports `.cancelled` and consumes nothing; a later wait
    /// on the same socket sees the bytes.
    func testStoppedWaitIsCancelledAndTheSocketStaysUsable() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let (outer, inner) = try f.pair(closingInner: false)
        let stream = SocketStream(FileDescriptor(adopting: inner), ring: ring)
        defer { stream.close() }
        let stopped = try await onRing(ring, "stopped wait") { (done: @escaping @Sendable (Result<Void, IOError>) -> Void) in
            let handle = stream.whenReadable { done($0) }
            handle.stop()
        }
        XCTAssertEqual(stopped.failure, .cancelled)
        XCTAssertEqual(Blocking.sendAll(outer, Array("x".utf8)), 0)
        let ready = try await onRing(ring, "wait for a byte") { (done: @escaping @Sendable (Result<Void, IOError>) -> Void) in
            _ = stream.whenReadable { done($0) }
        }
        XCTAssertNoThrow(try ready.get())
        XCTAssertEqual(stream.bytesWaiting, 1)
    }

    func testSleepThenRuns() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let start = ContinuousClock.now
        let slept = try await onRing(ring, "sleep") { (done: @escaping @Sendable (Result<Void, IOError>) -> Void) in
            ring.sleep(for: .milliseconds(100)) { done($0) }
        }
        XCTAssertNoThrow(try slept.get())
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - start, .milliseconds(90))
    }

    /// A set that was stopped stops what registers later (a step that was between two operations
    /// when its service went away), and stops what it holds.
    func testStoppedConnectionSetStopsLateRegistrations() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let (_, first) = try f.pair()
        let (_, late) = try f.pair()
        let set = ConnectionSet()
        let held = try await onRing(ring, "held wait") { (done: @escaping @Sendable (Result<Void, IOError>) -> Void) in
            set.register(set.reserve(), .onRing(ring.poll(first, events: Int32(POLLIN)) { done($0.map { _ in }) }))
            ring.execute { set.stopAll() }
        }
        XCTAssertEqual(held.failure, .cancelled)
        XCTAssertEqual(set.count, 0)
        let registeredLate = try await onRing(ring, "late wait") { (done: @escaping @Sendable (Result<Void, IOError>) -> Void) in
            set.register(set.reserve(), .onRing(ring.poll(late, events: Int32(POLLIN)) { done($0.map { _ in }) }))
        }
        XCTAssertEqual(registeredLate.failure, .cancelled)
        XCTAssertEqual(set.count, 0)
    }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}
