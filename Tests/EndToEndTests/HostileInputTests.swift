// Hostile input on the server's public control port: garbage, a wrong protocol version, silence,
// a data channel with a made-up session key, and hundreds of idle connections. After each, the
// tunnel (a real client and a real echo service) must still forward.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class HostileInputTests: EndToEndCase {
    private func tunnel(environment: [String: String] = [:]) throws -> Tunnel {
        let echo = keep(try LocalService.echo())
        let t = try startTunnel(local: echo, environment: environment)
        try echoOnce(port: t.publicPort, payload: Array("before".utf8))
        return t
    }

    private func assertStillForwards(_ t: Tunnel, visitorsSoFar: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNoThrow(try echoOnce(port: t.publicPort, payload: Array("after the hostile input".utf8)), file: file, line: line)
        XCTAssertEqual(t.local.accepted, visitorsSoFar + 1, "the service saw only the real visitors", file: file, line: line)
        XCTAssertTrue(t.server.isRunning, "the server survived", file: file, line: line)
        XCTAssertTrue(t.client.isRunning, "the client survived", file: file, line: line)
    }

    /// Sends `bytes` (ignoring a failed send: the server may already have closed) and expects the
    /// server to close the connection, having sent nothing.
    private func assertDropped(_ bytes: [UInt8], port: UInt16, what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let c = try Conn.connect(port: port)
        try? c.send(bytes)
        guard let got = c.waitClosed(timeout: 10) else {
            XCTFail("\(what): the server kept the connection open", file: file, line: line)
            return
        }
        XCTAssertEqual(hexString(got), "", "\(what): the server must send nothing", file: file, line: line)
    }

    func testGarbageOnControlPort() throws {
        let t = try tunnel()
        try assertDropped(
            Array("GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\r\n".utf8), port: t.controlPort, what: "HTTP request")
        try assertDropped([7, 0, 0, 0, 1] + [UInt8](repeating: 0xAB, count: 32), port: t.controlPort, what: "Hello with tag 7")
        try assertDropped(patternBytes(count: 256 << 10, seed: 99), port: t.controlPort, what: "256 KiB of noise")
        assertStillForwards(t, visitorsSoFar: 1)
    }

    func testWrongProtocolVersion() throws {
        let t = try tunnel()
        for version: UInt8 in [0, 2, 255] {
            try assertDropped(
                [0, 0, 0, 0, version] + Digest.service(named: t.name).bytes, port: t.controlPort,
                what: "control Hello version \(version)")
        }
        try assertDropped([1, 0, 0, 0, 2] + [UInt8](repeating: 1, count: 32), port: t.controlPort, what: "data Hello version 2")
        assertStillForwards(t, visitorsSoFar: 1)
    }

    /// A connection that sends nothing is closed by the 5 s handshake timeout (and not much before).
    func testSilentConnectionDroppedAfterHandshakeTimeout() throws {
        let t = try tunnel()
        let silent = try Conn.connect(port: t.controlPort)
        // Also one that stops in the middle of its Hello, and one that stops before its Auth.
        let partial = try Conn.connect(port: t.controlPort)
        try partial.send([0, 0, 0, 0, 1, 9, 9])
        let noAuth = try Conn.connect(port: t.controlPort)
        try noAuth.send([0, 0, 0, 0, 1] + Digest.service(named: t.name).bytes)
        let start = monoNow()
        XCTAssertEqual(silent.readSome(timeout: 2), .timeout, "dropped before the handshake timeout")
        for (c, what, expectedBytes) in [(silent, "silent", 0), (partial, "partial Hello", 0), (noAuth, "no Auth", 37)] {
            guard let got = c.waitClosed(timeout: 15 - (monoNow() - start)) else {
                XCTFail("\(what): the server did not close the connection within 15 s")
                continue
            }
            XCTAssertEqual(got.count, expectedBytes, "\(what): got \(hexString(got))")
            if expectedBytes == 37 && got.count == 37 {
                XCTAssertEqual(hexString(got[0..<5]), "0000000001", "\(what): the server's Hello is a control channel Hello, version 1")
                XCTAssertNotEqual(Array(got[5...]), [UInt8](repeating: 0, count: 32), "\(what): the nonce must be random")
            }
        }
        let elapsed = monoNow() - start
        XCTAssertGreaterThan(elapsed, 3, "closed after \(elapsed) s, long before the 5 s handshake timeout")
        assertStillForwards(t, visitorsSoFar: 1)
    }

    /// A Hello trickled a byte at a time, each well within any per-read timeout, is still cut off
    /// by the 5 s budget for the whole handshake.
    func testTrickledHelloDroppedAtTheHandshakeDeadline() throws {
        let t = try tunnel()
        let c = try Conn.connect(port: t.controlPort)
        let hello: [UInt8] = [0, 0, 0, 0, 1] + Digest.service(named: t.name).bytes
        let start = monoNow()
        var closedAfter: Double?
        for byte in hello {
            if (try? c.send([byte])) == nil || c.readSome(timeout: 0.7) != .timeout {
                closedAfter = monoNow() - start
                break
            }
        }
        let elapsed = try XCTUnwrap(closedAfter, "the server waited for all 37 bytes (\(monoNow() - start) s)")
        XCTAssertGreaterThan(elapsed, 4, "closed after \(elapsed) s, before the 5 s budget")
        XCTAssertLessThan(elapsed, 9, "closed after \(elapsed) s, long after the 5 s budget")
        assertStillForwards(t, visitorsSoFar: 1)
    }

    /// A data channel hello with a session key nobody was given is closed and never used.
    func testUnknownSessionKeyDataChannel() throws {
        let t = try tunnel()
        var bogus: [Conn] = []
        for i in 0..<3 {
            let c = try Conn.connect(port: t.controlPort)
            try c.send([1, 0, 0, 0, 1] + Digest.sha256(Array("made-up key \(i)".utf8)).bytes)
            bogus.append(c)
        }
        for (i, c) in bogus.enumerated() {
            guard let got = c.waitClosed(timeout: 10) else {
                XCTFail("data channel \(i) with an unknown session key stayed open")
                continue
            }
            XCTAssertEqual(hexString(got), "", "nothing is sent on a refused data channel")
        }
        // A visitor now must be served by the real client's channels only.
        let v = try Conn.connect(port: t.publicPort)
        try v.send("real visitor")
        XCTAssertEqual(try v.readExact(12, timeout: 15), Array("real visitor".utf8))
        v.close()
        XCTAssertEqual(t.local.accepted, 2)
        assertStillForwards(t, visitorsSoFar: 2)
    }

    /// A few hundred idle connections, twice: all closed by the handshake timeout, the server's open
    /// fds go back to where they were, a pending handshake costs a bounded amount of memory, and the
    /// second round reuses the memory of the first instead of adding to it.
    func testIdleConnectionsReleasedByHandshakeTimeout() throws {
        // One worker: one malloc arena, so that what the first round freed is what the second reuses.
        let t = try tunnel(environment: ["RATHOLE_THREADS": "1"])
        let baseline = try stableFDCount(t.server)
        let count = 300
        var rss: [Int] = [try XCTUnwrap(t.server.rssKiB)]
        var data: [Int] = [try XCTUnwrap(t.server.dataKiB)]
        for round in 0..<2 {
            var idle: [Conn] = []
            for _ in 0..<count { idle.append(try Conn.connect(port: t.controlPort)) }
            let start = monoNow()
            XCTAssertTrue(
                waitUntil(timeout: 10) { (t.server.fdCount ?? 0) >= baseline + count },
                "round \(round): the server accepted the idle connections (fds \(t.server.fdCount ?? -1), baseline \(baseline))")
            rss.append(t.server.rssKiB ?? .max)
            data.append(t.server.dataKiB ?? .max)
            var stillOpen = 0
            for c in idle where c.waitClosed(timeout: max(0, 20 - (monoNow() - start))) == nil { stillOpen += 1 }
            XCTAssertEqual(stillOpen, 0, "round \(round): idle connections the server did not close within 20 s")
            idle.forEach { $0.close() }
            XCTAssertTrue(
                waitUntil(timeout: 10) { (t.server.fdCount ?? 0) <= baseline },
                "round \(round): server fds back to the baseline \(baseline): now \(t.server.fdCount ?? -1)")
            XCTAssertEqual(t.server.fdCount, baseline)
        }
        // rss/data: before, peak of round 1, peak of round 2. Measured: about 9 KiB of RSS per
        // pending handshake (debug build), and nothing more in the second round. Under a sanitizer
        // the memory is its allocator's and shadow's, not ours: the fds above are the check there.
        if ProcessInfo.processInfo.environment["RATHOLE_SANITIZER"] != nil { return assertStillForwards(t, visitorsSoFar: 1) }
        let perConnection = (rss[1] - rss[0]) / count
        XCTAssertLessThan(perConnection, 32, "RSS KiB per pending handshake (RSS \(rss))")
        XCTAssertLessThan(rss[2] - rss[1], 1024, "the second round added RSS KiB instead of reusing the first's (RSS \(rss))")
        XCTAssertLessThan(data[2] - data[1], 1024, "the second round added VmData KiB (VmData \(data))")
        assertStillForwards(t, visitorsSoFar: 1)
    }

    /// The fd count once it has stopped moving (the data channel pool refills after a visitor).
    private func stableFDCount(_ p: RatholeProcess) throws -> Int {
        guard let n = settled({ p.fdCount }) else { throw TestFailure("\(p.name) is not running") }
        return n
    }
}
