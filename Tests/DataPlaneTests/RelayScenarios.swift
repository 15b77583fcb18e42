import Glibc
import TestKit
import XCTest

// Scenarios run against every relay flavour (the splice relay through both of its APIs, and the
// CopyRelay). Topology, all on loopback:
//
//     x (test peer) <-TCP-> a [relay under test] b <-TCP-> y (test peer)
//
// x and y are blocking sockets driven by plain threads; a and b are the non-blocking sockets the
// relay owns and closes.
@testable import DataPlane

enum Side: Sendable, CustomStringConvertible {
    case a, b
    var description: String { self == .a ? "a" : "b" }
}

enum RelayScenarios {
    /// Many round trips of varying sizes through the relay to an echo peer; then x half-closes and
    /// the FIN travels to the echo peer and back.
    static func echo(_ kind: RelayKind, file: StaticString = #filePath, line: UInt = #line) async throws {
        try await withRelayRing(
            "echo through \(kind)",
            { group, listener in
                let ring = group.executors[0]
                let (x, a) = try listener.pair()
                let (y, b) = try listener.pair()
                let echo = PeerThread { Blocking.echo(y) }
                let relay = await startRelay(kind, on: ring, a, b)

                let client = PeerThread { () -> (failure: String?, bytes: Int) in
                    var total = 0
                    for i in 0..<200 {
                        let size = 1 + (i &* 7919) % 65536
                        let message = RandomPool.shared.slice(seed: i, count: size)
                        if Blocking.sendAll(x, message) != 0 { return ("send \(i): \(Errno.current)", total) }
                        guard let back = Blocking.recvExact(x, count: size) else { return ("no echo for message \(i)", total) }
                        let same = back.withUnsafeBytes { memcmp($0.baseAddress!, message.baseAddress!, size) == 0 }
                        if !same { return ("echo of message \(i) (\(size) bytes) differs", total) }
                        total += size
                    }
                    shutdown(x, Int32(SHUT_WR))
                    var byte: UInt8 = 0
                    let n = recv(x, &byte, 1, 0)
                    if n != 0 { return ("expected EOF after the echo peer shut down, got \(n) (\(Errno.current))", total) }
                    return (nil, total)
                }
                let (failure, total) = await client.value
                XCTAssertNil(failure, file: file, line: line)
                let echoEnd = await echo.value
                XCTAssertEqual(echoEnd, 0, "echo peer ended with an error", file: file, line: line)
                let result = await relay.result.value
                XCTAssertNil(result.error, "\(result)", file: file, line: line)
                XCTAssertFalse(result.stopped, file: file, line: line)
                XCTAssertEqual(result.bytesAToB, UInt64(total), file: file, line: line)
                XCTAssertEqual(result.bytesBToA, UInt64(total), file: file, line: line)
                relay.stop()  // after the end: must do nothing
                close(x)
                close(y)
            }, file: file, line: line)
    }

    /// Streams `aToB` and `bToA` bytes at the same time; both sides hash what they send and what
    /// arrives.
    static func bulk(_ kind: RelayKind, aToB: Int, bToA: Int, file: StaticString = #filePath, line: UInt = #line) async throws {
        try await withRelayRing(
            "\(aToB) + \(bToA) bytes through \(kind)", timeout: 120,
            { group, listener in
                let ring = group.executors[0]
                let (x, a) = try listener.pair()
                let (y, b) = try listener.pair()
                let relay = await startRelay(kind, on: ring, a, b)
                let sendX = PeerThread { Blocking.sendStream(x, count: aToB, seed: 11) }
                let recvY = PeerThread { Blocking.drain(y) }
                let sendY = PeerThread { Blocking.sendStream(y, count: bToA, seed: 22) }
                let recvX = PeerThread { Blocking.drain(x) }
                let (sx, ry, sy, rx) = (await sendX.value, await recvY.value, await sendY.value, await recvX.value)
                XCTAssertEqual(sx.errno, 0, "sender x: \(sx)", file: file, line: line)
                XCTAssertEqual(sy.errno, 0, "sender y: \(sy)", file: file, line: line)
                XCTAssertEqual(ry.errno, 0, "receiver y: \(ry)", file: file, line: line)
                XCTAssertEqual(rx.errno, 0, "receiver x: \(rx)", file: file, line: line)
                XCTAssertEqual(sx.digest.count, UInt64(aToB), file: file, line: line)
                XCTAssertEqual(sy.digest.count, UInt64(bToA), file: file, line: line)
                XCTAssertEqual(ry.digest, sx.digest, "a -> b stream corrupted", file: file, line: line)
                XCTAssertEqual(rx.digest, sy.digest, "b -> a stream corrupted", file: file, line: line)
                let result = await relay.result.value
                XCTAssertNil(result.error, "\(result)", file: file, line: line)
                XCTAssertFalse(result.stopped, file: file, line: line)
                XCTAssertEqual(result.bytesAToB, UInt64(aToB), file: file, line: line)
                XCTAssertEqual(result.bytesBToA, UInt64(bToA), file: file, line: line)
                close(x)
                close(y)
            }, file: file, line: line)
    }

    /// The peer on `first` sends and shuts down writing; the other peer receives it all and EOF,
    /// and only then sends its own stream, which must still arrive; then it finishes too.
    static func halfClose(_ kind: RelayKind, first: Side, file: StaticString = #filePath, line: UInt = #line) async throws {
        try await withRelayRing(
            "half-close from \(first) through \(kind)",
            { group, listener in
                let ring = group.executors[0]
                let (x, a) = try listener.pair()
                let (y, b) = try listener.pair()
                let relay = await startRelay(kind, on: ring, a, b)
                let (early, late) = first == .a ? (x, y) : (y, x)
                let firstSize = (1 << 20) + 17
                let secondSize = (2 << 20) + 5

                let s1 = PeerThread { Blocking.sendStream(early, count: firstSize, seed: 3) }
                let r1 = PeerThread { Blocking.drain(late) }
                let (sent1, got1) = (await s1.value, await r1.value)
                XCTAssertEqual(sent1.errno, 0, "\(sent1)", file: file, line: line)
                XCTAssertEqual(got1.errno, 0, "\(got1)", file: file, line: line)
                XCTAssertEqual(got1.digest, sent1.digest, "first stream corrupted", file: file, line: line)
                // One direction is over; the relay must still carry the other.
                XCTAssertFalse(relay.result.isFulfilled, "relay ended after one direction finished", file: file, line: line)

                let s2 = PeerThread { Blocking.sendStream(late, count: secondSize, seed: 4) }
                let r2 = PeerThread { Blocking.drain(early) }
                let (sent2, got2) = (await s2.value, await r2.value)
                XCTAssertEqual(sent2.errno, 0, "\(sent2)", file: file, line: line)
                XCTAssertEqual(got2.errno, 0, "\(got2)", file: file, line: line)
                XCTAssertEqual(got2.digest, sent2.digest, "second stream corrupted", file: file, line: line)

                let result = await relay.result.value
                XCTAssertNil(result.error, "\(result)", file: file, line: line)
                XCTAssertFalse(result.stopped, file: file, line: line)
                let (aToB, bToA) = first == .a ? (firstSize, secondSize) : (secondSize, firstSize)
                XCTAssertEqual(result.bytesAToB, UInt64(aToB), file: file, line: line)
                XCTAssertEqual(result.bytesBToA, UInt64(bToA), file: file, line: line)
                close(x)
                close(y)
            }, file: file, line: line)
    }

    /// The peer on `side` resets its connection (SO_LINGER 0, close). The relay ends with
    /// ECONNRESET and closes the other connection, whose peer sees EOF or a reset.
    static func reset(_ kind: RelayKind, side: Side, file: StaticString = #filePath, line: UInt = #line) async throws {
        try await withRelayRing(
            "reset on \(side) through \(kind)",
            { group, listener in
                let ring = group.executors[0]
                let (x, a) = try listener.pair()
                let (y, b) = try listener.pair()
                let relay = await startRelay(kind, on: ring, a, b)
                // Traffic both ways first, so the reset hits a relay that is known to work.
                XCTAssertEqual(Blocking.sendAll(x, Array("hello".utf8)), 0, file: file, line: line)
                XCTAssertEqual(Blocking.recvExact(y, count: 5), Array("hello".utf8), file: file, line: line)
                XCTAssertEqual(Blocking.sendAll(y, Array("world!".utf8)), 0, file: file, line: line)
                XCTAssertEqual(Blocking.recvExact(x, count: 6), Array("world!".utf8), file: file, line: line)

                let (gone, other) = side == .a ? (x, y) : (y, x)
                resetClose(gone)
                let end = PeerThread { Blocking.drain(other) }
                let seen = await end.value
                XCTAssertTrue(
                    seen.errno == 0 || seen.errno == ECONNRESET,
                    "the other peer should see EOF or a reset, saw \(seen)", file: file, line: line)
                XCTAssertEqual(seen.digest.count, 0, "nothing more was sent", file: file, line: line)
                let result = await relay.result.value
                XCTAssertEqual(result.error, Errno.connectionReset, "\(result)", file: file, line: line)
                XCTAssertFalse(result.stopped, file: file, line: line)
                XCTAssertEqual(result.bytesAToB, 5, file: file, line: line)
                XCTAssertEqual(result.bytesBToA, 6, file: file, line: line)
                close(other)
            }, file: file, line: line)
    }

    /// Streams flow both ways without end; the relay is stopped from Swift mid-transfer. It reports
    /// `stopped`, and every peer thread ends: the readers at EOF (or a reset), the writers with an error.
    static func stopMidTransfer(_ kind: RelayKind, file: StaticString = #filePath, line: UInt = #line) async throws {
        try await withRelayRing(
            "stopping \(kind) mid-transfer",
            { group, listener in
                let ring = group.executors[0]
                let (x, a) = try listener.pair()
                let (y, b) = try listener.pair()
                let relay = await startRelay(kind, on: ring, a, b)
                let (sentX, sentY, gotX, gotY) = (ByteCounter(), ByteCounter(), ByteCounter(), ByteCounter())
                let writerX = PeerThread { Blocking.sendUntilError(x, progress: sentX) }
                let writerY = PeerThread { Blocking.sendUntilError(y, progress: sentY) }
                let readerX = PeerThread { Blocking.drain(x, progress: gotX) }
                let readerY = PeerThread { Blocking.drain(y, progress: gotY) }
                let mark = 4 << 20
                try await waitUntil(30, "4 MiB each way") { gotX.count >= mark && gotY.count >= mark }
                XCTAssertFalse(relay.result.isFulfilled, file: file, line: line)

                relay.stop()
                let result = try await withDeadline(10, "relay end after stop") { await relay.result.value }
                XCTAssertTrue(result.stopped, "\(result)", file: file, line: line)
                XCTAssertNil(result.error, "\(result)", file: file, line: line)
                XCTAssertGreaterThanOrEqual(result.bytesAToB, UInt64(mark), file: file, line: line)
                XCTAssertGreaterThanOrEqual(result.bytesBToA, UInt64(mark), file: file, line: line)

                for (name, reader) in [("x", readerX), ("y", readerY)] {
                    let seen = try await withDeadline(10, "reader \(name) sees its socket closed") { await reader.value }
                    XCTAssertTrue(
                        seen.errno == 0 || seen.errno == ECONNRESET,
                        "reader \(name) should see EOF or a reset, saw \(seen)", file: file, line: line)
                }
                for (name, writer) in [("x", writerX), ("y", writerY)] {
                    let e = try await withDeadline(10, "writer \(name) sees its socket closed") { await writer.value }
                    XCTAssertTrue(
                        e == EPIPE || e == ECONNRESET,
                        "writer \(name) should fail with EPIPE or ECONNRESET, got \(Errno(e))", file: file, line: line)
                }
                // The relay never delivers more than the peers sent.
                XCTAssertLessThanOrEqual(UInt64(gotY.count), result.bytesAToB, file: file, line: line)
                XCTAssertLessThanOrEqual(UInt64(gotX.count), result.bytesBToA, file: file, line: line)
                XCTAssertGreaterThan(sentX.count + sentY.count, 0, file: file, line: line)
                close(x)
                close(y)
            }, file: file, line: line)
    }

    /// The other peer streams toward the peer on `side`, which stops reading and then resets. The
    /// relay ends with an error and closes the other connection: its peer's reader sees EOF or a
    /// reset and its writer fails.
    static func resetDuringTransfer(_ kind: RelayKind, side: Side, file: StaticString = #filePath, line: UInt = #line) async throws {
        try await withRelayRing(
            "reset on \(side) mid-transfer through \(kind)",
            { group, listener in
                let ring = group.executors[0]
                let (x, a) = try listener.pair()
                let (y, b) = try listener.pair()
                let relay = await startRelay(kind, on: ring, a, b)
                let (gone, other) = side == .a ? (x, y) : (y, x)
                let writer = PeerThread { Blocking.sendUntilError(other, progress: ByteCounter()) }
                let reader = PeerThread { Blocking.drain(other) }
                // The peer that will reset reads 1 MiB and then stops, so data piles up in the relay
                // toward it; the reset hits a relay that is blocked writing.
                let read = PeerThread { () -> Int in
                    var total = 0
                    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
                    while total < 1 << 20 {
                        let n = recv(gone, &chunk, chunk.count, 0)
                        if n <= 0 { break }
                        total += n
                    }
                    return total
                }
                let readBeforeReset = await read.value
                XCTAssertGreaterThanOrEqual(readBeforeReset, 1 << 20, file: file, line: line)
                try await Task.sleep(for: .milliseconds(50))

                resetClose(gone)
                let result = try await withDeadline(10, "relay end after a reset") { await relay.result.value }
                XCTAssertNotNil(result.error, "\(result)", file: file, line: line)
                XCTAssertTrue(result.error == .connectionReset || result.error == .brokenPipe, "\(result)", file: file, line: line)
                XCTAssertFalse(result.stopped, file: file, line: line)
                let seen = try await withDeadline(10, "reader sees the end") { await reader.value }
                XCTAssertTrue(seen.errno == 0 || seen.errno == ECONNRESET, "\(seen)", file: file, line: line)
                let e = try await withDeadline(10, "writer fails") { await writer.value }
                XCTAssertTrue(e == EPIPE || e == ECONNRESET, "\(Errno(e))", file: file, line: line)
                close(other)
            }, file: file, line: line)
    }
}
