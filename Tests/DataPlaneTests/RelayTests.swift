import Glibc
import Synchronization
import TestKit
import XCTest

// The zero-copy splice relay, end to end over loopback.
@testable import DataPlane

final class RelayTests: XCTestCase {
    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
    }

    // MARK: Single relays

    func testEchoThroughRelay() async throws {
        try await RelayScenarios.echo(.spliceAsync)
    }

    func testEchoThroughRelayStartedWithHandle() async throws {
        try await RelayScenarios.echo(.spliceHandle)
    }

    /// 1 GiB one way and, at the same time, 64 MiB the other way; both hashed on both sides.
    func testOneGiBArrivesIntact() async throws {
        try await RelayScenarios.bulk(.spliceAsync, aToB: 1 << 30, bToA: 64 << 20)
    }

    /// Small pieces, one per readiness event, to a peer that does not read until all were sent:
    /// the relay's socket takes only part of them (both buffers are tiny), the rest waits in the
    /// pipe and in the kernel, and everything arrives, in order, once the peer reads.
    func testSmallPiecesToAStalledPeerArriveIntact() async throws {
        try await withRelayRing("small pieces to a stalled peer") { group, listener in
            let ring = group.executors[0]
            let (x, a) = try listener.pair()
            let (y, b) = try listener.pair()
            var tiny: Int32 = 4096
            setsockopt(y, SOL_SOCKET, SO_RCVBUF, &tiny, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(b, SOL_SOCKET, SO_SNDBUF, &tiny, socklen_t(MemoryLayout<Int32>.size))
            let relay = await startRelay(.spliceAsync, on: ring, a, b)
            let pieces = 64
            let sent = await PeerThread { () -> (digest: StreamDigest, errno: Int32) in
                let hasher = StreamHasher()
                for i in 0..<pieces {
                    let piece = RandomPool.shared.slice(seed: i, count: 1000)
                    hasher.update(piece)
                    let e = Blocking.sendAll(x, piece)
                    if e != 0 { return (hasher.finish(), e) }
                    usleep(300)  // one piece per readiness event
                }
                shutdown(x, Int32(SHUT_WR))
                return (hasher.finish(), 0)
            }.value
            XCTAssertEqual(sent.errno, 0, "\(sent)")
            let seen = await PeerThread { Blocking.drain(y) }.value
            XCTAssertEqual(seen.errno, 0, "\(seen)")
            XCTAssertEqual(seen.digest, sent.digest)
            shutdown(y, Int32(SHUT_WR))
            let result = await relay.result.value
            XCTAssertNil(result.error, "\(result)")
            XCTAssertEqual(result.bytesAToB, UInt64(pieces * 1000))
            close(x)
            close(y)
        }
    }

    func testHalfCloseFromA() async throws {
        try await RelayScenarios.halfClose(.spliceAsync, first: .a)
    }

    func testHalfCloseFromB() async throws {
        try await RelayScenarios.halfClose(.spliceHandle, first: .b)
    }

    func testResetOnAEndsRelayAndClosesB() async throws {
        try await RelayScenarios.reset(.spliceAsync, side: .a)
    }

    func testResetOnBEndsRelayAndClosesA() async throws {
        try await RelayScenarios.reset(.spliceHandle, side: .b)
    }

    func testStopWithHandleMidTransfer() async throws {
        try await RelayScenarios.stopMidTransfer(.spliceHandle)
    }

    func testCancellingRelayTaskMidTransfer() async throws {
        try await RelayScenarios.stopMidTransfer(.spliceAsync)
    }

    /// A relay whose task is already cancelled stops at once, closes both sockets and moves nothing.
    func testRelayInCancelledTaskStopsAtOnce() async throws {
        try await withRelayRing("relay in a cancelled task") { group, listener in
            let ring = group.executors[0]
            let (x, a) = try listener.pair()
            let (y, b) = try listener.pair()
            XCTAssertEqual(Blocking.sendAll(x, Array("never relayed".utf8)), 0)
            let task = Task(executorPreference: ring) { () -> RelayResult in
                withUnsafeCurrentTask { $0?.cancel() }
                return await ring.relay(FileDescriptor(adopting: a), FileDescriptor(adopting: b))
            }
            let result = await task.value
            XCTAssertTrue(result.stopped, "\(result)")
            XCTAssertEqual(result.bytesAToB + result.bytesBToA, 0)
            let seenX = PeerThread { Blocking.drain(x) }
            let seenY = PeerThread { Blocking.drain(y) }
            for seen in [await seenX.value, await seenY.value] {
                XCTAssertTrue(seen.errno == 0 || seen.errno == ECONNRESET, "\(seen)")
                XCTAssertEqual(seen.digest.count, 0)
            }
            close(x)
            close(y)
        }
    }

    /// A handle of a relay that ended must not reach the relay that reuses its slot.
    func testStaleHandleDoesNotStopANewerRelay() async throws {
        try await withRelayRing("stale relay handle") { group, listener in
            let ring = group.executors[0]
            let (x1, a1) = try listener.pair()
            let (y1, b1) = try listener.pair()
            let first = await startRelay(.spliceHandle, on: ring, a1, b1)
            shutdown(x1, Int32(SHUT_WR))
            shutdown(y1, Int32(SHUT_WR))
            let r1 = await first.result.value
            XCTAssertNil(r1.error)
            XCTAssertFalse(r1.stopped)
            close(x1)
            close(y1)

            let (x2, a2) = try listener.pair()
            let (y2, b2) = try listener.pair()
            let second = await startRelay(.spliceHandle, on: ring, a2, b2)
            first.stop()
            // Let the stale stop reach the ring before checking that the new relay still works.
            _ = await Task(executorPreference: ring) { () -> Bool in
                try? await ring.sleep(for: .milliseconds(20))
                return true
            }.value
            XCTAssertEqual(Blocking.sendAll(x2, Array("still here".utf8)), 0)
            XCTAssertEqual(Blocking.recvExact(y2, count: 10), Array("still here".utf8))
            XCTAssertFalse(second.result.isFulfilled)
            second.stop()
            let r2 = await second.result.value
            XCTAssertTrue(r2.stopped)
            XCTAssertEqual(r2.bytesAToB, 10)
            close(x2)
            close(y2)
        }
    }

    /// With only two pipes to lend, twenty relays streaming both ways must queue for pipes and
    /// still deliver every byte intact. The receivers start only once a direction has had to wait,
    /// so the waiting path is sure to be taken (the streams are larger than the socket buffers, so
    /// a direction whose receiver is not reading holds on to a full pipe).
    func testRelaysWaitForScarcePipes() async throws {
        let group = try RingGroup(threads: 1, maxLentPipesPerWorker: 2)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
        let listener = try Listener()
        defer { listener.close() }
        let baseline = await FDTable.baseline()
        let count = 20
        let size = 8 << 20
        struct Peers {
            var x, y: Int32
            var sendX, sendY: PeerThread<StreamOutcome>
        }
        var peers: [Peers] = []
        var relays: [RunningRelay] = []
        for i in 0..<count {
            let (x, a) = try listener.pair()
            let (y, b) = try listener.pair()
            relays.append(await startRelay(i % 2 == 0 ? .spliceAsync : .spliceHandle, on: ring, a, b))
            peers.append(
                Peers(
                    x: x, y: y,
                    sendX: PeerThread { Blocking.sendStream(x, count: size, seed: 2 * i) },
                    sendY: PeerThread { Blocking.sendStream(y, count: size + i, seed: 2 * i + 1) }))
        }
        try await waitUntil(30, "a direction waiting for a pipe") { group.counters.pipeWaits > 0 }
        XCTAssertLessThanOrEqual(group.counters.pipesLent, 2)
        let receivers = peers.map { p in (x: PeerThread { Blocking.drain(p.x) }, y: PeerThread { Blocking.drain(p.y) }) }
        let everything = peers
        let allRelays = relays
        try await withDeadline(60, "relays sharing two pipes") {
            for (i, p) in everything.enumerated() {
                let (sx, sy) = (await p.sendX.value, await p.sendY.value)
                let (rx, ry) = (await receivers[i].x.value, await receivers[i].y.value)
                close(p.x)
                close(p.y)
                XCTAssertTrue(
                    sx.errno == 0 && sy.errno == 0 && rx.errno == 0 && ry.errno == 0,
                    "relay \(i): \(sx) / \(sy) / \(rx) / \(ry)")
                XCTAssertEqual(ry.digest, sx.digest, "relay \(i): a -> b corrupted")
                XCTAssertEqual(rx.digest, sy.digest, "relay \(i): b -> a corrupted")
            }
            for (i, r) in allRelays.enumerated() {
                let result = await r.result.value
                XCTAssertNil(result.error, "relay \(i): \(result)")
                XCTAssertEqual(result.bytesAToB, UInt64(size), "relay \(i)")
                XCTAssertEqual(result.bytesBToA, UInt64(size + i), "relay \(i)")
            }
        }
        let counters = await settledCounters(group)
        XCTAssertEqual(counters.pipesLent, 0)
        XCTAssertEqual(counters.relaysActive, 0)
        XCTAssertLessThanOrEqual(counters.pipesPooled, 2)
        assertFDsRestored(baseline, pooledPipes: counters.pipesPooled, "relays sharing two pipes")
    }

    // MARK: Many relays

    private struct Quad: Sendable {
        var x, a, b, y: Int32
    }

    private static func size(_ i: Int, _ direction: Int) -> Int {
        1 + (i &* 7919 &+ direction &* 104_729) % 40_000
    }

    /// 2,000 relays at once on two rings, each carrying its own data both ways, driven by peers
    /// that use ring I/O on two more rings. Afterwards every relay reports exact byte counts, no
    /// pipe is lent, no relay is active, and the fds are exactly as before (plus pooled pipes).
    func testTwoThousandConcurrentRelays() async throws {
        let limit = Socket.raiseOpenFileLimit()
        let n = 2000
        // Sockets: 4 per relay (2 the relay owns, 2 peers). Pipes: at most 512 lent + 64 pooled per
        // relay ring, 2 fds each. Plus a few dozen for the process itself.
        let needed = 4 * n + 2 * 2 * (512 + 64) + 100
        guard limit >= UInt64(needed) else { throw XCTSkip("open-file limit \(limit) < \(needed)") }

        let relays = try RingGroup(threads: 2)
        let peers = try RingGroup(threads: 2)
        defer {
            shutdownOrFail(relays)
            shutdownOrFail(peers)
        }
        let listener = try Listener()
        defer { listener.close() }
        let baseline = await FDTable.baseline()

        var quads: [Quad] = []
        quads.reserveCapacity(n)
        for _ in 0..<n {
            let (x, a) = try listener.pair()
            let (y, b) = try listener.pair()
            quads.append(Quad(x: x, a: a, b: b, y: y))
        }
        let all = quads
        let check = RingThreadCheck()

        let relayResults = Task { () -> [RelayResult?] in
            await withTaskGroup(of: (Int, RelayResult).self) { group in
                for i in 0..<n {
                    let ring = relays.executors[i % 2]
                    let q = all[i]
                    group.addTask(executorPreference: ring) {
                        (i, await ring.relay(FileDescriptor(adopting: q.a), FileDescriptor(adopting: q.b)))
                    }
                }
                var out = [RelayResult?](repeating: nil, count: n)
                for await (i, r) in group { out[i] = r }
                return out
            }
        }

        let failures = try await withDeadline(60, "2000 peer exchanges") { () -> [String] in
            await withTaskGroup(of: String?.self) { group in
                for i in 0..<n {
                    let ring = peers.executors[i % 2]
                    let q = all[i]
                    group.addTask(executorPreference: ring) {
                        async let fromX = Self.exchange(
                            ring, q.x, send: (2 * i, Self.size(i, 0)),
                            expect: (2 * i + 1, Self.size(i, 1)), check)
                        async let fromY = Self.exchange(
                            ring, q.y, send: (2 * i + 1, Self.size(i, 1)),
                            expect: (2 * i, Self.size(i, 0)), check)
                        let (fx, fy) = await (fromX, fromY)
                        check.check(ring)
                        close(q.x)
                        close(q.y)
                        if let f = fx ?? fy { return "pair \(i): \(f)" }
                        return nil
                    }
                }
                var failures: [String] = []
                for await f in group { if let f { failures.append(f) } }
                return failures
            }
        }
        XCTAssertEqual(failures.count, 0, "\(failures.prefix(10))")

        let results = try await withDeadline(30, "2000 relay ends") { await relayResults.value }
        var wrong: [String] = []
        for i in 0..<n {
            guard let r = results[i] else {
                wrong.append("relay \(i): no result")
                continue
            }
            if r.error != nil || r.stopped || r.bytesAToB != UInt64(Self.size(i, 0)) || r.bytesBToA != UInt64(Self.size(i, 1)) {
                wrong.append("relay \(i): \(r), expected \(Self.size(i, 0)) / \(Self.size(i, 1))")
            }
        }
        XCTAssertEqual(wrong.count, 0, "\(wrong.prefix(10))")
        XCTAssertEqual(check.missCount, 0, "continuations resumed off their ring thread")

        let counters = await settledCounters(relays)
        XCTAssertEqual(counters.relaysStarted, UInt64(n))
        XCTAssertEqual(counters.relaysActive, 0)
        XCTAssertEqual(counters.pipesLent, 0)
        let expectedBytes = (0..<n).reduce(0) { $0 + Self.size($1, 0) + Self.size($1, 1) }
        XCTAssertEqual(counters.bytesRelayed, UInt64(expectedBytes))
        assertFDsRestored(baseline, pooledPipes: counters.pipesPooled, "2000 relays")
    }

    /// Sends one stream on `fd` and shuts down writing while receiving the expected stream until
    /// EOF; returns what went wrong, if anything. Runs on `ring`.
    private static func exchange(
        _ ring: RingExecutor, _ fd: Int32, send: (seed: Int, count: Int),
        expect: (seed: Int, count: Int), _ check: RingThreadCheck
    ) async -> String? {
        async let received = receive(ring, fd, expect: expect, check)
        var failure: String?
        do {
            try await ring.sendAll(fd, RandomPool.shared.slice(seed: send.seed, count: send.count))
            check.check(ring)
            Glibc.shutdown(fd, Int32(SHUT_WR))
        } catch {
            failure = "send: \(error)"
        }
        let r = await received
        return failure ?? r
    }

    private static func receive(
        _ ring: RingExecutor, _ fd: Int32, expect: (seed: Int, count: Int),
        _ check: RingThreadCheck
    ) async -> String? {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: expect.count + 1, alignment: 8)
        defer { buffer.deallocate() }
        var got = 0
        do {
            while true {
                let n = try await ring.recv(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[got...]))
                check.check(ring)
                if n == 0 { break }
                got += n
                if got > expect.count { return "more bytes than were sent" }
            }
        } catch {
            return "recv after \(got) bytes: \(error)"
        }
        if got != expect.count { return "got \(got) bytes, expected \(expect.count)" }
        let want = RandomPool.shared.slice(seed: expect.seed, count: expect.count)
        if memcmp(buffer.baseAddress!, want.baseAddress!, got) != 0 { return "data differs" }
        return nil
    }
}

extension RelayTests {
    func testResetDuringTransferEndsRelay() async throws {
        try await RelayScenarios.resetDuringTransfer(.spliceAsync, side: .b)
    }
}

extension RelayTests {
    /// Two relays end in the same batch of completions, and each one's `onEnd` stops the other.
    /// The second stop targets a relay whose end is already reaped (its C state freed) but not yet
    /// dispatched: it must do nothing. A stop that reached the freed state would read stale memory,
    /// which by itself shows nothing without a sanitizer; so the memory is reused the way it is
    /// under load: this ring thread's malloc cache for the relays' size class is filled just before
    /// the batch is reaped, so the freed relays go to glibc's fast bins, where the next calloc (a
    /// new relay, started by the first `onEnd` before its stop) takes the last one freed, which is
    /// the relay that stop targets. A stop that reaches it would stop the new relay.
    func testStoppingARelayThatEndedInTheSameBatch() async throws {
        try await withRelayRing("stop from another relay's onEnd") { group, listener in
            let ring = group.executors[0]
            let ending = try (0..<2).map { _ in (try listener.pair(), try listener.pair()) }
            let fresh = try (0..<2).map { _ in (try listener.pair(), try listener.pair()) }
            let handles = Synchronization.Mutex<[OperationHandle]>([])
            let freshHandles = Synchronization.Mutex<[OperationHandle]>([])
            let ends = (0..<4).map { _ in Promise<RelayResult>() }
            let firstEnd = Atomic<Bool>(true)
            @Sendable func startFresh() {
                for (k, ((_, a), (_, b))) in fresh.enumerated() {
                    let h = ring.startRelay(FileDescriptor(adopting: a), FileDescriptor(adopting: b)) { ends[2 + k].fulfill($0) }
                    freshHandles.withLock { $0.append(h) }
                }
            }
            await Task(executorPreference: ring) {
                for (i, ((_, a), (_, b))) in ending.enumerated() {
                    let h = ring.startRelay(FileDescriptor(adopting: a), FileDescriptor(adopting: b)) { r in
                        ends[i].fulfill(r)
                        if firstEnd.exchange(false, ordering: .relaxed) { startFresh() }
                        handles.withLock { $0 }[1 - i].stop()
                    }
                    handles.withLock { $0.append(h) }
                }
            }.value
            // Hold the ring thread while both relays see EOF both ways, so that all their
            // completions are reaped together; fill the malloc cache meanwhile.
            let held = Promise<Void>()
            ring.execute {
                held.fulfill(())
                usleep(100_000)
                let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 16)
                for k in 0..<16 { blocks[k] = malloc(120) }
                for k in 0..<16 { free(blocks[k]) }
                blocks.deallocate()
            }
            await held.value
            for ((x, _), (y, _)) in ending { for fd in [x, y] { shutdown(fd, Int32(SHUT_WR)) } }
            for i in 0..<2 {
                let r = await ends[i].value
                XCTAssertNil(r.error, "relay \(i): \(r)")
                XCTAssertFalse(r.stopped, "relay \(i): \(r)")
            }
            for ((x, _), (y, _)) in ending {
                for fd in [x, y] {
                    let seen = Blocking.drain(fd)
                    XCTAssertEqual(seen.errno, 0, "\(seen)")
                    close(fd)
                }
            }
            // The relays started meanwhile were not touched by the stray stop: both still carry
            // bytes both ways and end on their own.
            XCTAssertEqual(freshHandles.withLock { $0.count }, 2)
            for (k, ((x, _), (y, _))) in fresh.enumerated() {
                XCTAssertEqual(Blocking.sendAll(x, Array("to y \(k)".utf8)), 0)
                XCTAssertEqual(Blocking.recvExact(y, count: 6), Array("to y \(k)".utf8), "new relay \(k)")
                XCTAssertEqual(Blocking.sendAll(y, Array("to x \(k)".utf8)), 0)
                XCTAssertEqual(Blocking.recvExact(x, count: 6), Array("to x \(k)".utf8), "new relay \(k)")
                shutdown(x, Int32(SHUT_WR))
                shutdown(y, Int32(SHUT_WR))
                let r = await ends[2 + k].value
                XCTAssertFalse(r.stopped, "new relay \(k) was stopped by a stop meant for an ended relay: \(r)")
                XCTAssertNil(r.error, "new relay \(k): \(r)")
                XCTAssertEqual(r.bytesAToB, 6)
                XCTAssertEqual(r.bytesBToA, 6)
                close(x)
                close(y)
            }
        }
    }
}
