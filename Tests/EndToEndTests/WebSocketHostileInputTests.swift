// Hostile input on the websocket path. On the server's control port: strangers speaking plain
// TCP or TLS, bad upgrade requests, oversized and trickled heads, and after a good upgrade text,
// unmasked, oversized, truncated and malformed frames. Each is closed within the 5 s handshake
// deadline and logged in one line naming the peer, while a visitor already being relayed
// through the same tunnel keeps going, byte for byte. Frame lengths cost no memory. On the client:
// servers that refuse the upgrade or send masked frames are logged and retried.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class WebSocketHostileInputTests: EndToEndCase {
    private let wsTables = { (side: String) in "[\(side).transport]\ntype = \"websocket\"\n\n[\(side).transport.websocket]\ntls = false\n" }

    private struct WSTunnel {
        let server: RatholeProcess
        let client: RatholeProcess
        let control: UInt16
        let publicPort: UInt16
        let echo: LocalService
    }

    private func tunnel() throws -> WSTunnel {
        let echo = keep(try LocalService.echo())
        var config = TunnelConfig(services: [ServiceSpec("ws", port: Ports.free(), localPort: echo.port)])
        config.serverTables = wsTables("server")
        config.clientTables = wsTables("client")
        let (server, client) = try start(config)
        try echoOnce(port: config.services[0].port, payload: Array("before".utf8))
        return WSTunnel(server: server, client: client, control: config.controlPort, publicPort: config.services[0].port, echo: echo)
    }

    /// A visitor relayed through the tunnel while the hostile input goes on: it sends a chunk and
    /// reads it back every few milliseconds; `finish` checks every byte came back.
    private final class BusyVisitor: @unchecked Sendable {
        let conn: Conn
        private let result = Locked<(rounds: Int, error: String?)>((0, nil))
        private let stop = Locked(false)
        private let done = DispatchSemaphore(value: 0)

        init(port: UInt16) throws {
            conn = try Conn.connect(port: port)
            let t = Thread { [self] in
                defer { done.signal() }
                var round = 0
                while !stop.get {
                    let chunk = patternBytes(count: 3000 + round % 5000, seed: UInt64(round + 1))
                    do {
                        try conn.send(chunk)
                        guard try conn.readExact(chunk.count, timeout: 10) == chunk else { throw TestFailure("wrong bytes") }
                    } catch {
                        result.withLock { $0.error = "round \(round): \(error)" }
                        return
                    }
                    round += 1
                    result.withLock { $0.rounds = round }
                    usleep(5000)
                }
            }
            t.start()
        }

        /// Stops after a few more rounds (so some ran after the hostile input too).
        func finish() -> (rounds: Int, error: String?) {
            let target = result.get.rounds + 3
            _ = waitUntil(timeout: 10) { result.get.rounds >= target || result.get.error != nil }
            stop.withLock { $0 = true }
            done.wait()
            conn.close()
            return result.get
        }
    }

    private static let goodUpgrade = WebSocketHandshake.request(host: "example.com", key: "dGhlIHNhbXBsZSBub25jZQ==")

    /// Connects, sends `bytes`, and expects the server to close within `within` seconds, having
    /// sent `reply` (nothing by default), and to log one line naming this connection's port.
    private func assertRefused(
        _ t: WSTunnel, _ bytes: [UInt8], reply: [UInt8] = [], within: Double = 2, log expected: String,
        what: String, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let c = try Conn.connect(port: t.control)
        let port = localPort(c.fd)
        let start = monoNow()
        try? c.send(bytes)
        guard let got = c.waitClosed(timeout: 10) else { return XCTFail("\(what): still open after 10 s", file: file, line: line) }
        let elapsed = monoNow() - start
        XCTAssertLessThan(elapsed, within, "\(what): closed after \(elapsed) s", file: file, line: line)
        XCTAssertEqual(String(decoding: got, as: UTF8.self), String(decoding: reply, as: UTF8.self), what, file: file, line: line)
        let peer = "connection from 127.0.0.1:\(port): "
        XCTAssertTrue(t.server.waitForLog(peer, timeout: 5), "\(what): no log line naming 127.0.0.1:\(port)", file: file, line: line)
        let lines = t.server.lines(containing: peer)
        XCTAssertEqual(lines.count, 1, "\(what): one line", file: file, line: line)
        XCTAssertTrue(lines.first?.contains(expected) == true, "\(what): \(lines)", file: file, line: line)
    }

    func testStrangersAreRefusedAtTheUpgrade() throws {
        let t = try tunnel()
        let busy = try BusyVisitor(port: t.publicPort)
        let notHTTP = "not an HTTP websocket upgrade"
        try assertRefused(t, [0, 0, 0, 0, 1] + Digest.service(named: "ws").bytes, log: notHTTP, what: "a client speaking plain TCP")
        try assertRefused(t, [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03], log: notHTTP, what: "a TLS ClientHello")
        try assertRefused(t, Array("POST / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), log: notHTTP, what: "POST")
        try assertRefused(t, patternBytes(count: 64 << 10, seed: 5), log: notHTTP, what: "64 KiB of noise")
        let noKey = Array(
            String(decoding: Self.goodUpgrade, as: UTF8.self).replacingOccurrences(of: "Sec-WebSocket-Key", with: "X-Key").utf8)
        try assertRefused(t, noKey, reply: WebSocketHandshake.badRequestResponse, log: "no Sec-WebSocket-Key", what: "no key")
        let curl = Array("GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n".utf8)
        try assertRefused(
            t, curl, reply: WebSocketHandshake.badRequestResponse, log: "no \"Connection: Upgrade\"", what: "a plain HTTP GET")
        let old = Array(String(decoding: Self.goodUpgrade, as: UTF8.self).replacingOccurrences(of: "Version: 13", with: "Version: 8").utf8)
        try assertRefused(t, old, reply: WebSocketHandshake.badRequestResponse, log: "Sec-WebSocket-Version", what: "version 8")
        let huge =
            Array("GET / HTTP/1.1\r\n".utf8)
            + Array(repeating: Array("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n".utf8), count: 600).flatMap { $0 }
        try assertRefused(t, huge, log: "HTTP head longer than", what: "a 20 KiB head")
        let outcome = busy.finish()
        XCTAssertNil(outcome.error, "the visitor relayed meanwhile")
        XCTAssertGreaterThan(outcome.rounds, 3)
        XCTAssertNoThrow(try echoOnce(port: t.publicPort, payload: Array("after".utf8)))
        XCTAssertTrue(t.server.isRunning && t.client.isRunning)
    }

    /// Silence, a head trickled a byte every 300 ms, a frame header announcing 16 MiB that never
    /// comes: all closed by the 5 s deadline, not before it.
    func testSlowStrangersAreClosedAtTheDeadline() throws {
        let t = try tunnel()
        let silent = try Conn.connect(port: t.control)
        let bigFrame = try Conn.connect(port: t.control)
        try bigFrame.send(Self.goodUpgrade)
        _ = try bigFrame.readHead(timeout: 5)
        try bigFrame.send([0x82, 0xFF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 9, 9, 9])
        let trickled = try Conn.connect(port: t.control)
        let start = monoNow()
        var trickledClosed: Double?
        for byte in Self.goodUpgrade {
            if (try? trickled.send([byte])) == nil || trickled.readSome(timeout: 0.3) != .timeout {
                trickledClosed = monoNow() - start
                break
            }
        }
        for (c, what) in [(silent, "silent"), (bigFrame, "a 16 MiB frame that never comes")] {
            XCTAssertNotNil(c.waitClosed(timeout: 12 - (monoNow() - start)), "\(what): not closed")
        }
        let elapsed = monoNow() - start
        XCTAssertGreaterThan(elapsed, 4, "closed after \(elapsed) s, before the 5 s budget")
        XCTAssertLessThan(elapsed, 9, "closed after \(elapsed) s")
        let trickle = try XCTUnwrap(trickledClosed, "the trickled head was never cut off")
        XCTAssertGreaterThan(trickle, 4)
        XCTAssertLessThan(trickle, 9)
        XCTAssertTrue(t.server.waitForLog(": timed out", count: 3, timeout: 5), "one line each:\n\(t.server.log)")
        XCTAssertNoThrow(try echoOnce(port: t.publicPort, payload: Array("after".utf8)))
    }

    /// After a good upgrade: frames rathole does not send, each closed at once with its reason.
    func testBadFramesAfterTheUpgrade() throws {
        let t = try tunnel()
        let busy = try BusyVisitor(port: t.publicPort)
        let key: [UInt8] = [0x11, 0x22, 0x33, 0x44]
        let hello = [0, 0, 0, 0, 1] + Digest.service(named: "ws").bytes
        let masked = { (opcode: UInt8, payload: [UInt8]) in WebSocketFrame.encode(opcode: opcode, payload: payload, mask: 0x4433_2211) }
        let cases: [(String, [UInt8], String)] = [
            ("a text message", masked(1, hello), "websocket text message"),
            ("an unmasked frame", WebSocketFrame.encode(opcode: 2, payload: hello, mask: nil), "unmasked websocket frame"),
            ("a 1 TiB frame", [0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0] + key, "websocket frame of 1099511627776 bytes"),
            ("reserved bits", [0xF2, 0x85] + key + [1, 2, 3, 4, 5], "reserved bits"),
            ("an unknown opcode", [0x83, 0x80] + key, "unknown opcode 3"),
            ("a 126-byte ping", [0x89, 0xFE, 0, 126] + key + [UInt8](repeating: 0, count: 126), "control frame of 126 bytes"),
            ("a stray continuation", [0x80, 0x81] + key + [0], "continuation frame outside a message"),
        ]
        for (what, frames, expected) in cases {
            try assertRefused(
                t, Self.goodUpgrade + frames, reply: WebSocketHandshake.response(key: "dGhlIHNhbXBsZSBub25jZQ=="),
                log: expected, what: what)
        }
        // Half a frame, then the stranger's FIN.
        let c = try Conn.connect(port: t.control)
        let port = localPort(c.fd)
        try c.send(Self.goodUpgrade + Array(masked(2, hello).prefix(20)))
        c.shutdownWrite()
        XCTAssertNotNil(c.waitClosed(timeout: 2), "a truncated frame: closed at once")
        XCTAssertTrue(
            t.server.waitForLog("connection from 127.0.0.1:\(port): connection closed in the middle of a websocket frame", timeout: 5),
            t.server.log)
        let outcome = busy.finish()
        XCTAssertNil(outcome.error, "the visitor relayed meanwhile")
        XCTAssertTrue(t.server.isRunning && t.client.isRunning)
        XCTAssertNoThrow(try echoOnce(port: t.publicPort, payload: Array("after".utf8)))
    }

    /// 300 connections that each announce a 16 MiB frame and send the first 30 bytes of a Hello in
    /// it: the server's memory does not follow the announced lengths (nothing is allocated by a
    /// length field), and the deadline closes them all.
    func testAnnouncedFrameLengthsCostNoMemory() throws {
        let t = try tunnel()
        let before = try XCTUnwrap(t.server.dataKiB)
        var conns: [Conn] = []
        for _ in 0..<300 {
            let c = try Conn.connect(port: t.control)
            let partialHello = WebSocketFrame.encode(
                opcode: 2, payload: [0, 0, 0, 0, 1] + [UInt8](repeating: 7, count: 25), mask: 0x0403_0201
            ).suffix(30)
            try c.send(Self.goodUpgrade + [0x82, 0xFF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4] + partialHello)
            conns.append(c)
        }
        for c in conns { _ = try c.readHead(timeout: 10) }
        let during = try XCTUnwrap(t.server.dataKiB)
        XCTAssertLessThan(during - before, 32 << 10, "VmData \(before) KiB -> \(during) KiB with 300 x 16 MiB announced")
        XCTAssertEqual(conns[0].readSome(timeout: 2), .timeout, "waiting for the rest of the frame")
        for c in conns { XCTAssertNotNil(c.waitClosed(timeout: 15), "closed by the deadline") }
        XCTAssertNoThrow(try echoOnce(port: t.publicPort, payload: Array("after".utf8)))
    }

    // MARK: Bad servers, seen by our client

    /// A server that answers the upgrade with a 404, a wrong accept value, or masked frames: our
    /// client logs why in one line and tries again, forwarding nothing.
    func testClientRefusesBadServers() throws {
        let fake = try Listener()
        let echo = keep(try LocalService.echo())
        var config = TunnelConfig(controlPort: fake.port, services: [ServiceSpec("ws", port: 1, localPort: echo.port)])
        config.clientTables = wsTables("client")
        let client = rathole("client", config: config.clientText)
        try client.start()
        let answers: [(String, ([UInt8]) -> [UInt8], String)] = [
            (
                "404", { _ in Array("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".utf8) },
                "the server answered \"HTTP/1.1 404 Not Found\""
            ),
            ("wrong accept", { _ in WebSocketHandshake.response(key: "c29tZXRoaW5nIGVsc2UhIQ==") }, "wrong Sec-WebSocket-Accept"),
            ("a TLS alert", { _ in [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46] }, "not an HTTP websocket upgrade"),
            (
                "masked frames",
                { request in
                    let key = (try? WebSocketHandshake.checkRequest(request)) ?? ""
                    return WebSocketHandshake.response(key: key)
                        + WebSocketFrame.encode(opcode: 2, payload: [UInt8](repeating: 0, count: 37), mask: 1)
                }, "masked websocket frame from a server"
            ),
        ]
        for (what, answer, expected) in answers {
            guard let c = fake.accept(timeout: 15) else { return XCTFail("\(what): our client did not (re)connect") }
            let request = try c.readHead(timeout: 10)
            try c.send(answer(request))
            XCTAssertNotNil(c.waitClosed(timeout: 10), "\(what): our client closed the connection")
            XCTAssertTrue(client.waitForLog(expected, timeout: 10), "\(what): \(client.log)")
        }
        XCTAssertNotNil(fake.accept(timeout: 15), "and it keeps trying")
        XCTAssertEqual(echo.accepted, 0)
        XCTAssertTrue(client.isRunning)
    }
}
