// End to end: a real server and a real client process on loopback, real services behind the
// client, visitors on the server's public port, bytes checked at both ends.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class TunnelTests: EndToEndCase {
    func testEchoThroughTunnel() throws {
        let echo = keep(try LocalService.echo())
        let t = try startTunnel(local: echo)
        for i in 0..<3 {
            let payload = Array("hello rathole-\(i)".utf8)
            try echoOnce(port: t.publicPort, payload: payload)
        }
        // A bigger message in one connection, several round trips.
        let c = try Conn.connect(port: t.publicPort)
        for round in 0..<5 {
            let p = patternBytes(count: 100_000 + round, seed: UInt64(round + 1))
            try c.send(p)
            XCTAssertEqual(try c.readExact(p.count, timeout: 15), p, "round \(round)")
        }
        c.close()
        XCTAssertEqual(echo.accepted, 4)
    }

    /// 64 MiB each way, hashed at both ends: visitor -> sink (the service hashes), and
    /// source -> visitor (the visitor hashes).
    func testLargeTransferIntact() throws {
        let size = 64 << 20
        let data = patternBytes(count: size, seed: 0x5eed)
        let expected = Digest.sha256(data).bytes
        let sink = keep(try LocalService.sink())
        let source = keep(try LocalService.source(data))

        let sinkPort = Ports.free()
        let sourcePort = Ports.free()
        _ = try start(
            TunnelConfig(services: [
                ServiceSpec("sink", port: sinkPort, localPort: sink.port),
                ServiceSpec("source", port: sourcePort, localPort: source.port),
            ]))

        // Upload.
        let up = try Conn.connect(port: sinkPort)
        try up.send(data)
        up.shutdownWrite()
        let reply = try up.readExact(40, timeout: 120)
        let count = reply[0..<8].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian
        XCTAssertEqual(count, UInt64(size), "the service received every byte")
        XCTAssertEqual(hexString(reply[8...]), hexString(expected), "the service's hash of what it received")
        XCTAssertEqual(up.readSome(timeout: 10), .eof)

        // Download.
        let down = try Conn.connect(port: sourcePort)
        let got = try down.readToEOF(timeout: 120, limit: size + 1)
        XCTAssertEqual(got.count, size)
        XCTAssertEqual(sha256Hex(got), hexString(expected), "the visitor's hash of what it received")
        XCTAssertEqual(sink.accepted, 1)
        XCTAssertEqual(source.accepted, 1)
    }

    func testHundredConcurrentConnections() throws {
        let echo = keep(try LocalService.echo())
        let t = try startTunnel(local: echo)
        try echoOnce(port: t.publicPort, payload: Array("warm-up".utf8))
        let serverSockets = settled { t.server.socketCount }
        let clientSockets = settled { t.client.socketCount }
        // Written and read in turns so neither side's buffers matter.
        let failures = concurrentEchoes(port: t.publicPort, count: 100, bytesEach: 20_000, chunk: 8192)
        XCTAssertEqual(failures, [], "\(failures.count) of 100 connections failed")
        XCTAssertEqual(echo.accepted, 101, "one local connection per visitor")
        // Every relayed connection is gone from both processes; the pools are back to their size.
        XCTAssertTrue(
            waitUntil(timeout: 10) { t.server.socketCount == serverSockets },
            "server sockets: \(serverSockets ?? -1) before, \(t.server.socketCount ?? -1) after")
        XCTAssertTrue(
            waitUntil(timeout: 10) { t.client.socketCount == clientSockets },
            "client sockets: \(clientSockets ?? -1) before, \(t.client.socketCount ?? -1) after")
    }

    // MARK: Refusals

    func testWrongTokenRefusedNothingForwarded() throws {
        let local = keep(try LocalService.echo())
        let publicPort = Ports.free()
        var config = TunnelConfig(services: [ServiceSpec("svc", port: publicPort, localPort: local.port)], token: "right-token")
        config.clientToken = "wrong-token"
        let server = rathole("server", config: config.serverText)
        let client = rathole("client", config: config.clientText)
        try server.start()
        try waitServerReady(server, config)
        try client.start()
        XCTAssertTrue(server.waitForLog("wrong token", timeout: 10), "the server logs the refusal")
        XCTAssertTrue(client.waitForLog("refused the token", timeout: 10), "the client logs the refusal")
        try assertNothingForwarded(publicPort: publicPort, local: local)
        XCTAssertEqual(client.occurrences(of: "control channel established"), 0)
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    func testUnknownServiceRefusedNothingForwarded() throws {
        let local = keep(try LocalService.echo())
        let publicPort = Ports.free()
        let config = TunnelConfig(services: [
            ServiceSpec("echo", port: publicPort, localPort: local.port, sides: .serverOnly),
            ServiceSpec("nosuch", port: 0, localPort: local.port, sides: .clientOnly),
        ])
        let server = rathole("server", config: config.serverText)
        let client = rathole("client", config: config.clientText)
        try server.start()
        try waitServerReady(server, config)
        try client.start()
        XCTAssertTrue(client.waitForLog("does not know this service", timeout: 10), "the client logs the refusal")
        try assertNothingForwarded(publicPort: publicPort, local: local)
        XCTAssertEqual(client.occurrences(of: "control channel established"), 0)
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    // MARK: Start order and restarts

    func testClientStartedBeforeServer() throws {
        let echo = keep(try LocalService.echo())
        let publicPort = Ports.free()
        let config = TunnelConfig(services: [ServiceSpec("svc", port: publicPort, localPort: echo.port)])
        let server = rathole("server", config: config.serverText)
        let client = rathole("client", config: config.clientText)
        try client.start()
        XCTAssertTrue(client.waitForLog("retrying", count: 2, timeout: 10), "the client keeps retrying while the server is down")
        XCTAssertTrue(client.isRunning)
        try server.start()
        try waitServerReady(server, config)
        try waitClientReady(client, server: server, config)
        XCTAssertTrue(waitUntilForwarding(port: publicPort, timeout: 15))
    }

    func testServerRestartRecovers() throws {
        let echo = keep(try LocalService.echo())
        let t = try startTunnel(local: echo)
        try echoOnce(port: t.publicPort, payload: Array("before the restart".utf8))
        let clientSockets = settled { t.client.socketCount }
        t.server.killNow()
        XCTAssertTrue(t.client.waitForLog("retrying", timeout: 10), "the client notices the server is gone")
        try t.server.start()
        try waitServerReady(t.server, t.config)
        try waitClientReady(t.client, server: t.server, t.config)
        XCTAssertTrue(waitUntilForwarding(port: t.publicPort, timeout: 15), "forwarding works again after the server restart")
        XCTAssertTrue(
            waitUntil(timeout: 10) { t.client.socketCount == clientSockets },
            "client sockets: \(clientSockets ?? -1) before the restart, \(t.client.socketCount ?? -1) after (leaked?)")
    }

    func testClientRestartRecovers() throws {
        let echo = keep(try LocalService.echo())
        let t = try startTunnel(local: echo)
        try echoOnce(port: t.publicPort, payload: Array("before the restart".utf8))
        let serverSockets = settled { t.server.socketCount }
        let before = channels(of: t.server, t.config)
        t.client.killNow()
        XCTAssertTrue(t.server.waitForLog(" ended: ", timeout: 10), "the server notices the client is gone")
        try t.client.start()
        try waitClientReady(t.client, server: t.server, t.config, since: before)
        XCTAssertTrue(waitUntilForwarding(port: t.publicPort, timeout: 15), "forwarding works again after the client restart")
        // And with a graceful stop as well.
        t.client.signal(SIGTERM)
        XCTAssertEqual(t.client.waitForExit(timeout: 10), .exited(0))
        let second = channels(of: t.server, t.config)
        try t.client.start()
        try waitClientReady(t.client, server: t.server, t.config, since: second)
        XCTAssertTrue(waitUntilForwarding(port: t.publicPort, timeout: 15), "forwarding works again after the second client restart")
        XCTAssertTrue(
            waitUntil(timeout: 10) { t.server.socketCount == serverSockets },
            "server sockets: \(serverSockets ?? -1) before the restarts, \(t.server.socketCount ?? -1) after (leaked?)")
    }

    /// Heartbeats every second keep an idle control channel alive past twice the client's 4 s
    /// timeout (the server holds the same connections throughout); SIGSTOP freezes the server, the
    /// client's timeout fires (not before the timeout) and it reconnects; after SIGCONT forwarding
    /// works again and the abandoned session is cleaned up on both sides.
    func testFrozenServerDetectedByHeartbeatTimeout() throws {
        let echo = keep(try LocalService.echo())
        let t = try startTunnel(local: echo, serverKeys: ["heartbeat_interval = 1"], clientKeys: ["heartbeat_timeout = 4"])
        try echoOnce(port: t.publicPort, payload: Array("before the freeze".utf8))
        let serverSockets = settled { t.server.socketCount }
        let clientSockets = settled { t.client.socketCount }
        let idle = channels(of: t.server, t.config)
        sleepSeconds(8)  // twice the timeout, idle: only the heartbeats keep the channel
        XCTAssertEqual(t.client.occurrences(of: "no heartbeat"), 0, "heartbeats every 1 s must satisfy a 4 s timeout")
        XCTAssertTrue(channels(of: t.server, t.config).isSuperset(of: idle), "the idle control channel was replaced")

        t.server.signal(SIGSTOP)
        let frozenAt = monoNow()
        let detected = t.client.waitForLog("no heartbeat", timeout: 30)
        let detectedAfter = monoNow() - frozenAt
        t.server.signal(SIGCONT)
        XCTAssertTrue(detected, "the client did not log a heartbeat timeout while the server was frozen")
        // The last heartbeat came at most 1 s before the freeze.
        XCTAssertGreaterThan(detectedAfter, 3, "the client gave up before its 4 s heartbeat timeout")
        try waitClientReady(t.client, server: t.server, t.config, since: idle)
        XCTAssertTrue(waitUntilForwarding(port: t.publicPort, timeout: 30), "forwarding works after SIGCONT")
        XCTAssertTrue(
            waitUntil(timeout: 20) { t.server.socketCount == serverSockets },
            "server sockets: \(serverSockets ?? -1) before the freeze, \(t.server.socketCount ?? -1) after")
        XCTAssertTrue(
            waitUntil(timeout: 20) { t.client.socketCount == clientSockets },
            "client sockets: \(clientSockets ?? -1) before the freeze, \(t.client.socketCount ?? -1) after")
    }

    /// SIGSTOP freezes the client while 60 visitors arrive: those that find an idle data channel are
    /// relayed into the frozen client and stay open; every other one is closed once no channel has
    /// arrived for the 10 s patience, and not before. After SIGCONT new visitors are forwarded, and
    /// the channels opened for visitors long gone do not pile up.
    func testFrozenClientRecoversAfterSIGCONT() throws {
        let echo = keep(try LocalService.echo())
        let t = try startTunnel(local: echo)
        try echoOnce(port: t.publicPort, payload: Array("before the freeze".utf8))
        let serverSockets = settled { t.server.socketCount }
        let pooled = settled { channels(of: t.server, t.config).count } - 1  // less the control channel
        XCTAssertGreaterThanOrEqual(pooled, 8, "idle data channels before the freeze")
        t.client.signal(SIGSTOP)
        let frozenAt = monoNow()
        let stranded = try (0..<60).map { i -> Conn in
            let c = try Conn.connect(port: t.publicPort)
            try c.send(Array("stranded \(i)".utf8))
            return c
        }
        var closed: [Int: Double] = [:]
        let allClosed = waitUntil(timeout: 45, interval: 0.1) {
            for (i, c) in stranded.enumerated() where closed[i] == nil && c.peerClosed { closed[i] = monoNow() - frozenAt }
            return closed.count >= 60 - pooled
        }
        XCTAssertTrue(t.server.isRunning)
        XCTAssertTrue(allClosed, "visitors closed: \(closed.count), expected the \(60 - pooled) without a channel")
        XCTAssertGreaterThan(closed.values.min() ?? 0, 9.5, "a waiting visitor was closed before the 10 s patience")
        XCTAssertFalse(
            stranded.enumerated().contains { closed[$0.offset] == nil && $0.element.peerClosed },
            "the visitors relayed into the frozen client stay open")
        XCTAssertEqual(stranded.count - closed.count, pooled, "visitors relayed into the frozen client")
        t.client.signal(SIGCONT)
        stranded.forEach { $0.close() }
        XCTAssertTrue(waitUntilForwarding(port: t.publicPort, timeout: 30), "forwarding works after SIGCONT")
        for i in 0..<20 { try echoOnce(port: t.publicPort, payload: Array("after the freeze \(i)".utf8)) }
        XCTAssertTrue(
            waitUntil(timeout: 30) { (t.server.socketCount ?? .max) <= (serverSockets ?? 0) + 8 },
            "server sockets: \(serverSockets ?? -1) before the freeze, \(t.server.socketCount ?? -1) after")
        XCTAssertTrue(t.server.isRunning && t.client.isRunning)
    }

    // MARK: Half-close

    /// The visitor shuts down its writing side and keeps receiving what the service sends after
    /// it saw EOF.
    func testHalfClosePassesThrough() throws {
        let service = keep(try LocalService.halfClose())
        let t = try startTunnel(local: service)
        let v = try Conn.connect(port: t.publicPort)
        XCTAssertEqual(String(decoding: try v.readExact(9, timeout: 15), as: UTF8.self), "greeting;")
        try v.send("ping-half-close")
        v.shutdownWrite()
        let rest = try v.readToEOF(timeout: 15)
        XCTAssertEqual(String(decoding: rest, as: UTF8.self), "saw EOF after 15 bytes;you said <ping-half-close>")
    }

    /// The other way round: the service finishes sending first; the visitor sees EOF and can
    /// still send, and the service receives it all.
    func testHalfCloseFromTheServiceSide() throws {
        let received = Locked<[UInt8]?>(nil)
        let service = keep(
            try LocalService(name: "early-closer") { conn in
                try? conn.send("bye;")
                conn.shutdownWrite()
                let got = try? conn.readToEOF(timeout: 30)
                received.withLock { $0 = got }
            })
        let t = try startTunnel(local: service)
        let v = try Conn.connect(port: t.publicPort)
        XCTAssertEqual(try v.readToEOF(timeout: 15), Array("bye;".utf8), "the service's FIN reaches the visitor")
        let late = patternBytes(count: 300_000, seed: 7)
        try v.send(late)
        v.shutdownWrite()
        XCTAssertTrue(waitUntil(timeout: 15) { received.get != nil }, "the service never saw the visitor's EOF")
        XCTAssertEqual(received.get?.count, late.count)
        XCTAssertTrue(received.get == late, "bytes sent after the other side's FIN arrive intact")
    }

    /// When nothing listens at local_addr the visitor is closed, and the tunnel keeps working once
    /// the service is back.
    func testLocalServiceDownClosesVisitor() throws {
        // A port that nothing listens on (yet).
        let localPort = Ports.free()
        let publicPort = Ports.free()
        let (server, client) = try start(TunnelConfig(services: [ServiceSpec("svc", port: publicPort, localPort: localPort)]))
        for _ in 0..<3 {
            let v = try Conn.connect(port: publicPort)
            try? v.send("anyone?")
            guard let got = v.waitClosed(timeout: 15) else {
                XCTFail("the visitor stays open although local_addr refuses connections")
                return
            }
            XCTAssertEqual(got, [], "no bytes for a visitor whose service is down")
        }
        XCTAssertTrue(client.waitForLog("cannot connect to local_addr", timeout: 5))
        // The service comes up on that port.
        let listener = try Listener(port: localPort)
        let v = try Conn.connect(port: publicPort)
        try v.send("now?")
        guard let s = listener.accept(timeout: 15) else {
            XCTFail("no connection reached the service once it was up")
            return
        }
        XCTAssertEqual(try s.readExact(4, timeout: 10), Array("now?".utf8))
        try s.send("yes")
        XCTAssertEqual(try v.readExact(3, timeout: 10), Array("yes".utf8))
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    // MARK: Config errors and signals

    func testConfigErrorsExitOneNamingTheKey() throws {
        let p1 = Ports.free()
        let p2 = Ports.free()
        let cases: [(name: String, config: String, key: String)] = [
            (
                "server-no-token",
                """
                [server]
                bind_addr = "127.0.0.1:\(p1)"

                [server.services.echo]
                bind_addr = "127.0.0.1:\(p2)"
                """, "server.services.echo.token"
            ),
            (
                "client-no-token",
                """
                [client]
                remote_addr = "127.0.0.1:\(p1)"

                [client.services.echo]
                local_addr = "127.0.0.1:\(p2)"
                """, "client.services.echo.token"
            ),
            (
                "server-unknown-key",
                """
                [server]
                bind_addr = "127.0.0.1:\(p1)"
                default_token = "x"
                bogus_knob = 3

                [server.services.echo]
                bind_addr = "127.0.0.1:\(p2)"
                """, "bogus_knob"
            ),
            (
                "client-unknown-service-key",
                """
                [client]
                remote_addr = "127.0.0.1:\(p1)"
                default_token = "x"

                [client.services.echo]
                local_addr = "127.0.0.1:\(p2)"
                colour = "red"
                """, "client.services.echo.colour"
            ),
        ]
        for c in cases {
            let p = rathole(c.name, config: c.config)
            try p.start()
            XCTAssertEqual(p.waitForExit(timeout: 10), .exited(1), c.name)
            let log = p.log
            XCTAssertTrue(log.contains(c.key), "\(c.name): stderr must name \(c.key): \(log)")
            XCTAssertTrue(log.contains(p.configPath), "\(c.name): stderr should name the file: \(log)")
        }
        XCTAssertThrowsError(try Conn.connect(port: p1), "a server with a bad config must not listen")
    }

    /// RATHOLE_THREADS sets how many io_uring workers (threads named rathole-ring-N) run; a value
    /// that is not a sensible count is refused naming the variable.
    func testWorkerThreadsFromEnvironment() throws {
        let echo = keep(try LocalService.echo())
        let t = try startTunnel(local: echo, environment: ["RATHOLE_THREADS": "3"])
        for i in 0..<8 { try echoOnce(port: t.publicPort, payload: Array("three workers \(i)".utf8)) }
        XCTAssertEqual(ringThreads(of: t.server.pid), ["rathole-ring-0", "rathole-ring-1", "rathole-ring-2"])
        XCTAssertEqual(ringThreads(of: t.client.pid), ["rathole-ring-0", "rathole-ring-1", "rathole-ring-2"])

        for bad in ["0", "many", "-2", "100000"] {
            let config = TunnelConfig(services: [ServiceSpec("svc", port: Ports.free(), localPort: 1)])
            let p = rathole("threads-\(bad)", config: config.serverText)
            p.environment["RATHOLE_THREADS"] = bad
            try p.start()
            XCTAssertEqual(p.waitForExit(timeout: 10), .exited(1), "RATHOLE_THREADS=\(bad)")
            XCTAssertTrue(p.log.contains("RATHOLE_THREADS=\(bad)"), "the error names the variable: \(p.log)")
        }
    }

    private func ringThreads(of pid: pid_t) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return names.compactMap { tid in
            ProcFS.readWhole("/proc/\(pid)/task/\(tid)/comm")?.trimmingCharacters(in: .whitespacesAndNewlines)
        }.filter { $0.hasPrefix("rathole-ring-") }.sorted()
    }

    func testSigtermExitsZero() throws {
        let echo = keep(try LocalService.echo())
        let t = try startTunnel(local: echo)
        // A visitor mid-connection while the processes are stopped.
        let v = try Conn.connect(port: t.publicPort)
        try v.send("still here")
        XCTAssertEqual(try v.readExact(10, timeout: 15), Array("still here".utf8))
        t.client.signal(SIGTERM)
        XCTAssertEqual(t.client.waitForExit(timeout: 10), .exited(0), "client on SIGTERM")
        t.server.signal(SIGTERM)
        XCTAssertEqual(t.server.waitForExit(timeout: 10), .exited(0), "server on SIGTERM")
        XCTAssertThrowsError(try Conn.connect(port: t.controlPort), "the control port is closed after exit")
        XCTAssertNotNil(v.waitClosed(timeout: 10), "the visitor's connection ends with the processes")
    }
}
