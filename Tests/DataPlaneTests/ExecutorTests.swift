import Glibc
import Synchronization
import TestKit
import XCTest

// The RingExecutor: async socket operations on io_uring, where continuations resume, cancellation,
// timeouts and typed errors.
@testable import DataPlane

final class ExecutorTests: XCTestCase {
    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
    }

    // MARK: Concurrency and thread affinity

    /// 2,000 clients at once, spread over two rings, each connecting, sending its own message and
    /// reading it back from an echo server on the same rings. Every continuation must resume on
    /// the thread of the ring the task runs on.
    func testTwoThousandConcurrentEchoRoundTrips() async throws {
        let n = 2000
        let f = try RingFixture(threads: 2)
        defer { f.close() }
        let (group, listener) = (f.group, f.listener)
        let baseline = await FDTable.baseline()
        let check = RingThreadCheck()
        let served = ByteCounter()
        let serverFailures = ByteCounter()

        let acceptRing = group.executors[0]
        let server = Task(executorPreference: acceptRing) {
            await ExecutorTests.serveEcho(group, on: acceptRing, listener: listener.fd, check, served, serverFailures)
        }

        let address = listener.address
        let failures = try await withDeadline(60, "2000 echo clients") { () -> [String] in
            await withTaskGroup(of: String?.self) { clients in
                for i in 0..<n {
                    let ring = group.executors[i % 2]
                    clients.addTask(executorPreference: ring) {
                        check.check(ring)
                        let size = 64 + (i &* 7919) % 4000
                        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
                        defer { buffer.deallocate() }
                        let client: SocketStream
                        do {
                            client = try await Socket.connect(to: address, on: ring, timeout: .seconds(20))
                        } catch {
                            return "client \(i): \(error)"
                        }
                        defer { client.close() }
                        let fd = client.fd
                        check.check(ring)
                        do {
                            let message = RandomPool.shared.slice(seed: i, count: size)
                            try await ring.sendAll(fd, message)
                            check.check(ring)
                            try await ring.recvExact(fd, into: buffer)
                            check.check(ring)
                            if memcmp(buffer.baseAddress!, message.baseAddress!, size) != 0 {
                                return "client \(i): echo differs"
                            }
                        } catch {
                            return "client \(i): \(error)"
                        }
                        return nil
                    }
                }
                var failures: [String] = []
                for await f in clients { if let f { failures.append(f) } }
                return failures
            }
        }
        XCTAssertEqual(failures, [])
        try await waitUntil(20, "every connection served") { served.count == n }
        XCTAssertEqual(serverFailures.count, 0)
        server.cancel()
        try await withDeadline(5, "accept loop ends when cancelled") { await server.value }
        XCTAssertEqual(check.missCount, 0, "continuations resumed off their ring thread")
        XCTAssertGreaterThanOrEqual(check.checkCount, 8 * n)
        assertFDsRestored(baseline, "2000 echo round trips")
    }

    /// Accepts on `ring` until cancelled and echoes each connection, alternating between the rings
    /// of `group` (so half the fds move to another worker).
    private static func serveEcho(
        _ group: RingGroup, on ring: RingExecutor, listener: Int32, _ check: RingThreadCheck,
        _ served: ByteCounter, _ failures: ByteCounter
    ) async {
        await withDiscardingTaskGroup { handlers in
            var i = 0
            while true {
                let fd: Int32
                do {
                    fd = try await ring.accept(listener)
                } catch {
                    return
                }
                check.check(ring)
                let worker = group.executors[i % 2]
                i += 1
                handlers.addTask(executorPreference: worker) {
                    if !(await ExecutorTests.echo(worker, fd, check)) { failures.add(1) }
                    served.add(1)
                }
            }
        }
    }

    /// Echoes until EOF; true unless an operation failed.
    private static func echo(_ ring: RingExecutor, _ fd: Int32, _ check: RingThreadCheck) async -> Bool {
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
        defer { buffer.deallocate() }
        do {
            while true {
                let n = try await ring.recv(fd, into: buffer)
                check.check(ring)
                if n == 0 { return true }
                try await ring.sendAll(fd, UnsafeRawBufferPointer(rebasing: buffer[..<n]))
                check.check(ring)
            }
        } catch {
            return false
        }
    }

    /// An actor whose executor is a ring runs there.
    func testActorPinnedToRingRunsOnIt() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let pinned = Pinned(f.ring)
        let results = await withTaskGroup(of: Bool.self) { g in
            for _ in 0..<1000 { g.addTask { await pinned.hit() } }
            var all: [Bool] = []
            for await r in g { all.append(r) }
            return all
        }
        XCTAssertEqual(results.filter { !$0 }.count, 0, "actor methods ran off the ring")
        let hits = await pinned.hits
        XCTAssertEqual(hits, 1000)
    }

    private actor Pinned {
        let ring: RingExecutor
        var hits = 0
        init(_ ring: RingExecutor) { self.ring = ring }
        nonisolated var unownedExecutor: UnownedSerialExecutor { ring.serial.asUnownedSerialExecutor() }

        func hit() async -> Bool {
            hits += 1
            try? await ring.sleep(for: .microseconds(10))
            return ring.isCurrent && RingExecutor.current === ring
        }
    }

    /// Ring operations called from a task that does not prefer the ring still work (they hop over),
    /// and the caller is not left stranded on the ring thread afterwards.
    func testOperationsFromOffTheRing() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let (x, inner) = try f.pair()
        let outcome = await Task.detached { () -> String? in
            do {
                try await ring.sendAll(inner, bytes: Array("from off the ring".utf8))
                if RingExecutor.current != nil { return "resumed on a ring after send" }
                let back = Blocking.recvExact(x, count: 17)
                if back != Array("from off the ring".utf8) { return "peer got \(String(describing: back))" }
                _ = Blocking.sendAll(x, Array("reply".utf8))
                let reply = try await ring.recvExact(inner, count: 5)
                if RingExecutor.current != nil { return "resumed on a ring after recv" }
                return reply == Array("reply".utf8) ? nil : "got \(reply)"
            } catch {
                return "\(error)"
            }
        }.value
        XCTAssertNil(outcome)
    }

    // MARK: Cancellation and timeouts

    /// Runs `op` in a task on `ring`, waits until the ring has it in flight (and `stuck` holds: the
    /// operation cannot complete on its own), cancels the task and returns how the operation
    /// ended. Fails the test if it never gets in flight, does not end promptly, or leaves its slot
    /// behind. An operation that never reached the ring would fail at once in a cancelled task
    /// without testing anything, hence the wait.
    private func cancelInFlight(
        _ ring: RingExecutor, _ what: String, stuck: @escaping @Sendable () -> Bool = { true },
        _ op: @escaping @Sendable () async throws(IOError) -> Void
    ) async throws -> IOError? {
        let before = await operationsInFlight(ring)
        let task = Task(executorPreference: ring) { () -> IOError? in
            do throws(IOError) {
                try await op()
                return nil
            } catch {
                return error
            }
        }
        try await waitForOperationInFlight(ring, moreThan: before, what, alsoTrue: stuck)
        task.cancel()
        let error = try await withDeadline(10, "\(what) to end after cancellation") { await task.value }
        let after = await operationsInFlight(ring)
        XCTAssertEqual(after, before, "\(what): the cancelled operation still holds its slot")
        return error
    }

    /// Whether `fd` could take more bytes now.
    private static func writable(_ fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        return poll(&p, 1, 0) == 1
    }

    func testCancellingAnInFlightRecv() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let (x, inner) = try f.pair()
        let check = RingThreadCheck()
        let error = try await cancelInFlight(ring, "recv") { () async throws(IOError) in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
            defer { buffer.deallocate() }
            defer { check.check(ring) }
            _ = try await ring.recv(inner, into: buffer)
        }
        XCTAssertEqual(error, .cancelled)
        XCTAssertEqual(check.missCount, 0)
        // The cancelled recv consumed nothing: the socket still delivers what comes next.
        XCTAssertEqual(Blocking.sendAll(x, Array("next".utf8)), 0)
        let got = try await Task(executorPreference: ring) { () async throws -> [UInt8] in
            try await ring.recvExact(inner, count: 4, timeout: .seconds(10))
        }.value
        XCTAssertEqual(got, Array("next".utf8))
    }

    func testCancellingAcceptPollAndSleep() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let (_, inner) = try f.pair()
        let listener = f.listener
        let accept = try await cancelInFlight(ring, "accept") { () async throws(IOError) in
            let fd = try await ring.accept(listener.fd)
            close(fd)
        }
        XCTAssertEqual(accept, .cancelled)
        let poll = try await cancelInFlight(ring, "poll") { () async throws(IOError) in
            _ = try await ring.poll(inner, events: Int32(POLLIN))
        }
        XCTAssertEqual(poll, .cancelled)
        let sleep = try await cancelInFlight(ring, "sleep") { () async throws(IOError) in
            try await ring.sleep(for: .seconds(3600))
        }
        XCTAssertEqual(sleep, .cancelled)
        // In flight and not writable: the send in flight waits for room that never comes.
        let sendAll = try await cancelInFlight(ring, "sendAll to a peer that never reads", stuck: { !Self.writable(inner) }) {
            () async throws(IOError) in
            while true {
                try await ring.sendAll(inner, RandomPool.shared.slice(seed: 1, count: 1 << 20))
            }
        }
        XCTAssertEqual(sendAll, .cancelled)
    }

    /// An operation started in a task that is already cancelled fails at once and submits nothing.
    func testOperationInCancelledTaskThrowsCancelled() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let (x, inner) = try f.pair()
        XCTAssertEqual(Blocking.sendAll(x, Array("data".utf8)), 0)
        let outcome = await Task(executorPreference: ring) { () -> Result<[UInt8], IOError> in
            withUnsafeCurrentTask { $0?.cancel() }
            do throws(IOError) {
                return .success(try await ring.recvExact(inner, count: 4))
            } catch {
                return .failure(error)
            }
        }.value
        XCTAssertEqual(outcome, .failure(.cancelled))
        let inFlight = await operationsInFlight(ring)
        XCTAssertEqual(inFlight, 0, "nothing was submitted")
        XCTAssertTrue(Socket.isAlive(inner), "the data must still be unread")
    }

    func testRecvTimeout() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let (x, inner) = try f.pair()
        let clock = ContinuousClock()
        let (error, elapsed) = try await withDeadline(10, "recv with a timeout") {
            await Task(executorPreference: ring) { () -> (IOError?, Duration) in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
                defer { buffer.deallocate() }
                let start = clock.now
                do throws(IOError) {
                    _ = try await ring.recv(inner, into: buffer, timeout: .milliseconds(200))
                    return (nil, clock.now - start)
                } catch {
                    return (error, clock.now - start)
                }
            }.value
        }
        XCTAssertEqual(error, .timedOut(operation: "recv"))
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(190), "timed out before the deadline")
        // The socket is still usable and nothing was lost.
        XCTAssertEqual(Blocking.sendAll(x, Array("late".utf8)), 0)
        let got = try await Task(executorPreference: ring) { () async throws -> [UInt8] in
            try await ring.recvExact(inner, count: 4, timeout: .seconds(10))
        }.value
        XCTAssertEqual(got, Array("late".utf8))
    }

    func testSendTimeoutWhenPeerDoesNotRead() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let (_, inner) = try f.pair()
        let error = try await withDeadline(20, "send with a timeout") {
            await Task(executorPreference: ring) { () -> IOError? in
                do throws(IOError) {
                    // Far more than loopback socket buffers hold.
                    for _ in 0..<512 {
                        try await ring.sendAll(
                            inner, RandomPool.shared.slice(seed: 5, count: 1 << 20),
                            timeout: .milliseconds(200))
                    }
                    return nil
                } catch {
                    return error
                }
            }.value
        }
        XCTAssertEqual(error, .timedOut(operation: "send"))
    }

    func testSleepWaitsOnTheRing() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let clock = ContinuousClock()
        let (onRing, elapsed) = try await Task(executorPreference: ring) { () async throws -> (Bool, Duration) in
            let start = clock.now
            try await ring.sleep(for: .milliseconds(50))
            return (ring.isCurrent, clock.now - start)
        }.value
        XCTAssertTrue(onRing)
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(49))
    }

    func testRecvExactThrowsEndOfStream() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let (x, inner) = try f.pair(closingOuter: false)
        XCTAssertEqual(Blocking.sendAll(x, [1, 2, 3]), 0)
        close(x)
        let outcome = await Task(executorPreference: ring) { () -> Result<[UInt8], IOError> in
            do throws(IOError) {
                return .success(try await ring.recvExact(inner, count: 10, timeout: .seconds(10)))
            } catch {
                return .failure(error)
            }
        }.value
        XCTAssertEqual(outcome, .failure(.endOfStream))
    }

    // MARK: Errors

    func testConnectToClosedPortIsRefused() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        // A bound socket that does not listen holds the port, so nobody else can take it meanwhile.
        let holder = try Socket.tcp(family: AF_INET)
        let any = SocketAddress.loopback(port: 0)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let rc = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(holder.rawValue, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(rc, 0)
        let port = try XCTUnwrap(Socket.address(holder.rawValue, peer: false)?.port)
        XCTAssertNotEqual(port, any.port)
        let closed = SocketAddress.loopback(port: port)
        let baseline = await FDTable.baseline()

        let error = await Task(executorPreference: ring) { () -> IOError? in
            do throws(IOError) {
                let socket = try await Socket.connect(to: closed, on: ring, timeout: .seconds(10))
                socket.close()
                return nil
            } catch {
                return error
            }
        }.value
        guard case .system(let errno, let operation)? = error else {
            return XCTFail("expected a system error, got \(String(describing: error))")
        }
        XCTAssertEqual(errno, .connectionRefused)
        XCTAssertTrue(operation.contains("connect"), operation)
        XCTAssertEqual(error?.errno, Errno(ECONNREFUSED))
        assertFDsRestored(baseline, "failed connect")
    }

    func testListenOnPortInUseIsATypedError() throws {
        let first = try Listener()
        defer { first.close() }
        XCTAssertThrowsError(try TCPListener(first.address, reusePort: false)) { error in
            XCTAssertEqual((error as? IOError)?.errno, .addressInUse, "\(error)")
        }
    }
}
