import Glibc
import TestKit
import XCTest

// Shutting a RingExecutor down with work in flight: waiting operations, idle and busy relays.
@testable import DataPlane

final class ExecutorShutdownTests: XCTestCase {
    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
    }

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
        let listener = try Listener()
        defer { listener.close() }
        let idleListener = try Listener()
        defer { idleListener.close() }
        let check = RingThreadCheck()

        // Tasks blocked in recv, poll, accept and sleep, on both rings.
        var waiting: [Task<IOError?, Never>] = []
        var heldOpen: [Int32] = []
        for i in 0..<100 {
            let ring = group.executors[i % 2]
            let (x, inner) = try listener.pair()
            heldOpen += [x, inner]
            waiting.append(
                Task(executorPreference: ring) { () -> IOError? in
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
            waiting.append(
                Task(executorPreference: ring) { () -> IOError? in
                    do throws(IOError) {
                        let fd = try await ring.accept(idleListener.fd)
                        close(fd)
                        return nil
                    } catch {
                        return error
                    }
                })
            waiting.append(
                Task(executorPreference: ring) { () -> IOError? in
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
        try await Task.sleep(for: .milliseconds(50))  // let every waiting op get in flight
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
        group.shutdown()  // a second call does nothing

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
