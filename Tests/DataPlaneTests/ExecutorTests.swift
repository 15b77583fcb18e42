// The RingExecutor: async socket operations on io_uring, where continuations resume, cancellation,
// timeouts, typed errors and shutdown with work in flight.
import DataPlane
import Glibc
import Synchronization
import XCTest

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
        let group = try RingGroup(threads: 2)
        defer { shutdownOrFail(group) }
        let listener = try LoopbackListener()
        defer { listener.close() }
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
                        let fd: Int32
                        do {
                            fd = try await Socket.connect(to: address, on: ring, timeout: .seconds(20))
                        } catch {
                            return "client \(i): \(error)"
                        }
                        defer { close(fd) }
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
    private static func serveEcho(_ group: RingGroup, on ring: RingExecutor, listener: Int32, _ check: RingThreadCheck,
                                  _ served: ByteCounter, _ failures: ByteCounter) async {
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
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let pinned = Pinned(group.executors[0])
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
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
        let listener = try LoopbackListener()
        defer { listener.close() }
        let (x, inner) = try listener.pair()
        defer {
            close(x)
            close(inner)
        }
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

    /// Runs `op` in a task on `ring`, waits until it has had time to get in flight, cancels the
    /// task and returns how the operation ended. Fails the test if it does not end promptly.
    private func cancelInFlight(_ ring: RingExecutor, _ what: String,
                                _ op: @escaping @Sendable () async throws(IOError) -> Void) async throws -> IOError? {
        let task = Task(executorPreference: ring) { () -> IOError? in
            do throws(IOError) {
                try await op()
                return nil
            } catch {
                return error
            }
        }
        try await Task.sleep(for: .milliseconds(100))
        XCTAssertFalse(Task.isCancelled)
        task.cancel()
        return try await withDeadline(5, "\(what) to end after cancellation") { await task.value }
    }

    func testCancellingAnInFlightRecv() async throws {
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
        let listener = try LoopbackListener()
        defer { listener.close() }
        let (x, inner) = try listener.pair()
        defer {
            close(x)
            close(inner)
        }
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
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
        let listener = try LoopbackListener()
        defer { listener.close() }
        let (x, inner) = try listener.pair()
        defer {
            close(x)
            close(inner)
        }
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
        let sendAll = try await cancelInFlight(ring, "sendAll to a peer that never reads") { () async throws(IOError) in
            while true {
                try await ring.sendAll(inner, RandomPool.shared.slice(seed: 1, count: 1 << 20))
            }
        }
        XCTAssertEqual(sendAll, .cancelled)
    }

    /// An operation started in a task that is already cancelled fails at once and submits nothing.
    func testOperationInCancelledTaskThrowsCancelled() async throws {
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
        let listener = try LoopbackListener()
        defer { listener.close() }
        let (x, inner) = try listener.pair()
        defer {
            close(x)
            close(inner)
        }
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
        XCTAssertTrue(Socket.isAlive(inner), "the data must still be unread")
    }

    func testRecvTimeout() async throws {
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
        let listener = try LoopbackListener()
        defer { listener.close() }
        let (x, inner) = try listener.pair()
        defer {
            close(x)
            close(inner)
        }
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
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
        let listener = try LoopbackListener()
        defer { listener.close() }
        let (x, inner) = try listener.pair()
        defer {
            close(x)
            close(inner)
        }
        let error = try await withDeadline(20, "send with a timeout") {
            await Task(executorPreference: ring) { () -> IOError? in
                do throws(IOError) {
                    // Far more than loopback socket buffers hold.
                    for _ in 0..<512 {
                        try await ring.sendAll(inner, RandomPool.shared.slice(seed: 5, count: 1 << 20),
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
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
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
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
        let listener = try LoopbackListener()
        defer { listener.close() }
        let (x, inner) = try listener.pair()
        defer { close(inner) }
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
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
        // A bound socket that does not listen holds the port, so nobody else can take it meanwhile.
        let holder = try Socket.tcp(family: AF_INET)
        defer { close(holder) }
        let any = SocketAddress(ip: "127.0.0.1", port: 0)!
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let rc = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(holder, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(rc, 0)
        let port = try XCTUnwrap(Socket.localAddress(holder)?.port)
        XCTAssertNotEqual(port, any.port)
        let closed = SocketAddress(ip: "127.0.0.1", port: port)!
        let baseline = await FDTable.baseline()

        let error = await Task(executorPreference: ring) { () -> IOError? in
            do throws(IOError) {
                let fd = try await Socket.connect(to: closed, on: ring, timeout: .seconds(10))
                close(fd)
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
        let first = try LoopbackListener()
        defer { first.close() }
        XCTAssertThrowsError(try Socket.listen(first.address, reusePort: false)) { error in
            XCTAssertEqual((error as? IOError)?.errno, .addressInUse, "\(error)")
        }
    }

    // MARK: Shutdown

    /// Shutting a group down while tasks wait in recv, accept, poll and sleep and while relays run
    /// (idle and busy): it returns promptly, every waiting task gets `.cancelled`, every relay
    /// ends `stopped` and closes its sockets, and no fd is left behind once the group is gone.
    func testShutdownWithWorkInFlight() async throws {
        let before = await FDTable.baseline()
        try await shutdownScenario()
        // The executors' eventfds close when the last reference goes; give deinit a moment.
        try? await waitUntil(5, "executors released") { FDTable.current().diff(from: before).opened.isEmpty }
        assertFDsRestored(before, "shutdown with work in flight")
    }

    private func shutdownScenario() async throws {
        let group = try RingGroup(threads: 2)
        let listener = try LoopbackListener()
        defer { listener.close() }
        let idleListener = try LoopbackListener()
        defer { idleListener.close() }
        let check = RingThreadCheck()

        // Tasks blocked in recv, poll, accept and sleep, on both rings.
        var waiting: [Task<IOError?, Never>] = []
        var heldOpen: [Int32] = []
        for i in 0..<100 {
            let ring = group.executors[i % 2]
            let (x, inner) = try listener.pair()
            heldOpen += [x, inner]
            waiting.append(Task(executorPreference: ring) { () -> IOError? in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
                defer { buffer.deallocate() }
                do throws(IOError) {
                    if i % 10 == 0 {
                        _ = try await ring.poll(inner, events: Int32(POLLIN))
                    } else {
                        _ = try await ring.recv(inner, into: buffer)
                    }
                    return nil
                } catch {
                    check.check(ring)
                    return error
                }
            })
        }
        for ring in group.executors {
            waiting.append(Task(executorPreference: ring) { () -> IOError? in
                do throws(IOError) {
                    let fd = try await ring.accept(idleListener.fd)
                    close(fd)
                    return nil
                } catch {
                    return error
                }
            })
            waiting.append(Task(executorPreference: ring) { () -> IOError? in
                do throws(IOError) {
                    try await ring.sleep(for: .seconds(3600))
                    return nil
                } catch {
                    return error
                }
            })
        }

        // Idle relays (both APIs) and one busy relay per ring with streams flowing both ways.
        var relays: [RunningRelay] = []
        var idlePeers: [Int32] = []
        for i in 0..<20 {
            let (x, a) = try listener.pair()
            let (y, b) = try listener.pair()
            idlePeers += [x, y]
            relays.append(await startRelay(i % 2 == 0 ? .spliceAsync : .spliceHandle, on: group.executors[i % 2], a, b))
        }
        var busyPeers: [Int32] = []
        var writers: [PeerThread<Int32>] = []
        var readers: [PeerThread<StreamOutcome>] = []
        var progress: [ByteCounter] = []
        for ring in group.executors {
            let (x, a) = try listener.pair()
            let (y, b) = try listener.pair()
            busyPeers += [x, y]
            relays.append(await startRelay(.spliceAsync, on: ring, a, b))
            let (gotX, gotY) = (ByteCounter(), ByteCounter())
            progress += [gotX, gotY]
            writers.append(PeerThread { Blocking.sendUntilError(x, progress: ByteCounter()) })
            writers.append(PeerThread { Blocking.sendUntilError(y, progress: ByteCounter()) })
            readers.append(PeerThread { Blocking.drain(x, progress: gotX) })
            readers.append(PeerThread { Blocking.drain(y, progress: gotY) })
        }
        let counters = progress
        try await waitUntil(30, "busy relays moving data") { counters.allSatisfy { $0.count >= 1 << 20 } }
        try await Task.sleep(for: .milliseconds(50))   // let every waiting op get in flight
        for (i, task) in waiting.enumerated() {
            XCTAssertFalse(task.isCancelled, "task \(i)")
        }

        let clock = ContinuousClock()
        let shutdown = PeerThread { () -> Duration in
            let start = clock.now
            group.shutdown()
            return clock.now - start
        }
        let took = try await withDeadline(10, "RingGroup.shutdown() with work in flight") { await shutdown.value }
        XCTAssertLessThan(took, .seconds(5), "shutdown took \(took)")
        group.shutdown()   // a second call does nothing

        for (i, task) in waiting.enumerated() {
            let error = try await withDeadline(5, "waiting task \(i) to end") { await task.value }
            XCTAssertEqual(error, .cancelled, "task \(i)")
        }
        XCTAssertEqual(check.missCount, 0)
        for (i, relay) in relays.enumerated() {
            let result = try await withDeadline(5, "relay \(i) to end") { await relay.result.value }
            XCTAssertTrue(result.stopped, "relay \(i): \(result)")
        }
        // Every relay closed its sockets: idle peers see EOF or a reset, busy streams end.
        let idleEnds = idlePeers.map { fd in PeerThread { Blocking.drain(fd) } }
        for end in idleEnds {
            let seen = try await withDeadline(10, "idle relay peer to see its socket closed") { await end.value }
            XCTAssertTrue(seen.errno == 0 || seen.errno == ECONNRESET, "\(seen)")
        }
        for w in writers {
            let e = try await withDeadline(10, "writer to fail") { await w.value }
            XCTAssertTrue(e == EPIPE || e == ECONNRESET, "\(Errno(e))")
        }
        for r in readers {
            let seen = try await withDeadline(10, "reader to see the end") { await r.value }
            XCTAssertTrue(seen.errno == 0 || seen.errno == ECONNRESET, "\(seen)")
        }
        let after = group.counters
        XCTAssertEqual(after.relaysActive, 0)
        XCTAssertEqual(after.pipesLent, 0)
        for fd in heldOpen + idlePeers + busyPeers { close(fd) }
    }
}
