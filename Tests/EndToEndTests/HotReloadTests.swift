// Hot reload end to end: both config files edited while a real server and client run (rewritten in
// place, replaced by rename, or edited then SIGHUP), with traffic running across the reload.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class HotReloadTests: EndToEndCase {
    private func start(
        _ services: [ServiceSpec], symlinked: Bool = false
    )
        throws -> (server: RatholeProcess, client: RatholeProcess, control: UInt16)
    {
        let config = TunnelConfig(services: services)
        let server: RatholeProcess
        let client: RatholeProcess
        if symlinked {
            server = try ratholeBehindSymlink("server", config: config.serverText).0
            client = try ratholeBehindSymlink("client", config: config.clientText).0
        } else {
            server = rathole("server", config: config.serverText)
            client = rathole("client", config: config.clientText)
        }
        try server.start()
        try waitServerReady(server, config)
        try client.start()
        try waitClientReady(client, server: server, config)
        return (server, client, config.controlPort)
    }

    private func echoService(_ name: String) throws -> (ServiceSpec, LocalService) {
        let echo = keep(try LocalService.echo())
        return (ServiceSpec(name, port: Ports.free(), localPort: echo.port), echo)
    }

    /// Rewrites both files (server first) with `services`.
    private func rewrite(
        _ server: RatholeProcess, _ client: RatholeProcess, control: UInt16, _ services: [ServiceSpec],
        byRename: Bool = false, serverPath: String? = nil, clientPath: String? = nil
    ) throws {
        let write = byRename ? ConfigFile.replaceByRename : ConfigFile.rewriteInPlace
        let config = TunnelConfig(controlPort: control, services: services)
        try write(serverPath ?? server.configPath, config.serverText)
        try write(clientPath ?? client.configPath, config.clientText)
    }

    /// Forwarding through `port` starts after an edit (within a generous deadline: how fast a
    /// reload is, is not a test's business).
    private func assertForwards(port: UInt16, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotNil(
            secondsUntilForwarding(port: port, timeout: 30), "\(what): not forwarding 30 s after the edit",
            file: file, line: line)
    }

    // MARK: Add

    func testAddedServiceForwardsWhileLongTransferContinues() throws {
        let (long, longEcho) = try echoService("long")
        let (added, addedEcho) = try echoService("added")
        let (server, client, control) = try start([long])
        let streamer = try Streamer(port: long.port)
        cleanup { streamer.stop() }
        XCTAssertTrue(waitUntil(timeout: 20) { streamer.bytes >= 4 << 20 || streamer.error != nil }, "the long transfer is under way")
        XCTAssertFalse(ProcFS.tcpListening(port: added.port))

        try rewrite(server, client, control: control, [long, added])
        assertForwards(port: added.port, "the added service")
        XCTAssertTrue(server.waitForLog("service added added", timeout: 20))
        XCTAssertTrue(client.waitForLog("service added added", timeout: 20))

        // The transfer went on across the reload, on the same connection, byte for byte.
        let atReload = streamer.bytes
        XCTAssertTrue(
            waitUntil(timeout: 20) { streamer.bytes >= atReload + (8 << 20) || streamer.error != nil },
            "the long transfer keeps going after the reload")
        let (bytes, error) = streamer.stop()
        XCTAssertNil(error, "the long transfer broke")
        XCTAssertGreaterThan(bytes, 12 << 20)
        XCTAssertEqual(longEcho.accepted, 1, "the long transfer's local connection was never replaced")
        XCTAssertGreaterThanOrEqual(addedEcho.accepted, 1)
        for p in [server, client] {
            XCTAssertFalse(
                p.log.contains("long changed") || p.log.contains("long removed") || p.log.contains("restarting the"),
                "\(p.name): the running service was restarted")
        }
    }

    // MARK: Remove

    func testRemovedServiceClosesItsPortOthersUnaffected() throws {
        let (a, aEcho) = try echoService("a")
        let (b, _) = try echoService("b")
        let (server, client, control) = try start([a, b])
        XCTAssertTrue(ProcFS.tcpListening(port: b.port))
        try echoOnce(port: b.port, payload: Array("b before".utf8))
        let open = try Conn.connect(port: a.port)
        defer { open.close() }
        try open.send("first half;")
        XCTAssertEqual(try open.readExact(11, timeout: 10), Array("first half;".utf8))

        try rewrite(server, client, control: control, [a])
        XCTAssertTrue(waitUntil(timeout: 20) { !ProcFS.tcpListening(port: b.port) }, "b's port still listens")
        XCTAssertThrowsError(try Conn.connect(port: b.port), "connecting to the removed service must be refused")
        XCTAssertTrue(server.waitForLog("service b removed", timeout: 20))
        XCTAssertTrue(client.waitForLog("service b removed", timeout: 20))

        // a: the connection open across the reload, and new ones.
        try open.send("second half")
        XCTAssertEqual(try open.readExact(11, timeout: 10), Array("second half".utf8))
        try echoOnce(port: a.port, payload: Array("a after".utf8))
        XCTAssertEqual(aEcho.accepted, 2)
        XCTAssertFalse(server.log.contains("service a changed") || client.log.contains("service a changed"))
    }

    // MARK: Token

    func testTokenChangedOnBothSidesReconnects() throws {
        let echo = keep(try LocalService.echo())
        var svc = ServiceSpec("svc", port: Ports.free(), localPort: echo.port, token: "old-token")
        let (server, client, control) = try start([svc])
        try echoOnce(port: svc.port, payload: Array("with the old token".utf8))

        let before = server.connections(acceptedOn: control)
        svc.token = "new-token"
        try rewrite(server, client, control: control, [svc])
        try waitClientReady(client, server: server, TunnelConfig(controlPort: control, services: [svc]), since: before)
        XCTAssertTrue(server.waitForLog("service svc changed", timeout: 20))
        XCTAssertTrue(client.waitForLog("service svc changed", timeout: 20))
        XCTAssertNotNil(secondsUntilForwarding(port: svc.port, timeout: 10), "forwarding with the new token")
        try echoOnce(port: svc.port, payload: Array("with the new token".utf8))

        // The server now refuses the old token (a hand-made client; a refused one replaces nobody).
        let (c, ack, _) = try RawClient.handshake(port: control, service: "svc", token: "old-token")
        c.close()
        XCTAssertEqual(ack, 2, "the old token must be refused (AuthFailed)")
        try echoOnce(port: svc.port, payload: Array("still forwarding".utf8))
    }

    /// default_token changes on both sides: the services that use it restart with it (and the old
    /// one is refused), a service with its own token is left alone, its transfer going on.
    func testDefaultTokenChangeRestartsTheServicesThatUseIt() throws {
        let (a, _) = try echoService("a")
        let (b, bEcho) = try echoService("b")
        var config = TunnelConfig(services: [a, b], token: "old-default")
        config.services[1].token = "own-b"
        let (server, client) = try start(config)
        let streamer = try Streamer(port: b.port)
        cleanup { streamer.stop() }
        XCTAssertTrue(streamer.waitForProgress(2 << 20), "the transfer through b is under way: \(streamer.error ?? "stalled")")

        let before = channels(of: server, config)
        config.serverToken = "new-default"
        config.clientToken = "new-default"
        try ConfigFile.rewriteInPlace(server.configPath, config.serverText)
        try ConfigFile.rewriteInPlace(client.configPath, config.clientText)
        try waitClientReady(client, server: server, config, since: before, count: 1 + a.poolSize)
        for p in [server, client] {
            XCTAssertTrue(p.waitForLog("service a changed", timeout: 20), "\(p.name) restarts a")
            XCTAssertEqual(p.occurrences(of: "service b changed"), 0, "\(p.name) restarted b, which has its own token")
        }
        XCTAssertNotNil(secondsUntilForwarding(port: a.port, timeout: 30), "a forwards with the new default token")
        let (c, ack, _) = try RawClient.handshake(port: config.controlPort, service: "a", token: "old-default")
        c.close()
        XCTAssertEqual(ack, 2, "the old default token must be refused (AuthFailed)")
        XCTAssertTrue(streamer.waitForProgress(4 << 20), "b's transfer goes on: \(streamer.error ?? "stalled")")
        XCTAssertNil(streamer.stop().error)
        XCTAssertEqual(bEcho.accepted, 1, "b's local connection was never replaced")
    }

    /// The top-level retry_interval (the cap of the reconnect backoff) changes from 1 s to 4 s
    /// while the server refuses every control channel: the service restarts, and the client's
    /// attempts (seen as connections on the server's port) spread out past what 1 s allowed.
    func testRetryIntervalChange() throws {
        let refuser = try Listener()
        let attempts = Locked<[Double]>([])
        spawnThread {
            while let fd = refuser.acceptBlocking() {
                attempts.withLock { $0.append(monoNow()) }
                close(fd)
            }
        }
        cleanup { refuser.shutdown() }
        var config = TunnelConfig(controlPort: refuser.port, services: [ServiceSpec("svc", port: 1, localPort: 9)])
        config.clientKeys = ["retry_interval = 1"]
        let client = rathole("client", config: config.clientText)
        try client.start()
        func gaps(_ times: [Double]) -> [Double] { zip(times, times.dropFirst()).map { $1 - $0 } }
        // Backoff from 100 ms doubles up to the cap: by the eighth attempt it is at 1 s.
        XCTAssertTrue(waitUntil(timeout: 30) { attempts.get.count >= 12 }, "the client keeps trying: \(attempts.get.count) attempts")
        let capped = gaps(Array(attempts.get.suffix(5)))
        XCTAssertGreaterThanOrEqual(
            capped.filter { $0 < 1.5 }.count, 3, "with retry_interval = 1 the attempts come about every second: \(capped)")

        config.clientKeys = ["retry_interval = 4"]
        try ConfigFile.rewriteInPlace(client.configPath, config.clientText)
        XCTAssertTrue(client.waitForLog("service svc changed", timeout: 20), "the service restarts with the new cap")
        let changedAt = monoNow()
        // Up to 4 s, drawn from the upper half of each step: past the ramp, gaps of 2 s and more.
        let spread = waitUntil(timeout: 40) {
            gaps(attempts.get.filter { $0 > changedAt }).contains { $0 >= 2 }
        }
        XCTAssertTrue(spread, "no gap of 2 s between attempts after the reload: \(gaps(attempts.get.filter { $0 > changedAt }))")
        XCTAssertTrue(client.isRunning)
    }

    /// A removed service's relays get the reload grace to finish (30 s; 6 s here through
    /// RATHOLE_RELOAD_GRACE_SECS), then they are stopped; its port closes at once.
    func testRemovedServiceRelaysGetTheGraceThenStop() throws {
        let grace = 6.0
        let (kept, _) = try echoService("kept")
        let (gone, _) = try echoService("gone")
        var config = TunnelConfig(services: [kept, gone])
        let (server, client) = try start(config, environment: ["RATHOLE_RELOAD_GRACE_SECS": "\(Int(grace))"])
        let streamer = try Streamer(port: gone.port)
        cleanup { streamer.stop() }
        XCTAssertTrue(streamer.waitForProgress(2 << 20), "the transfer through the service is under way: \(streamer.error ?? "stalled")")

        config.services.removeLast()
        let editedAt = monoNow()
        try ConfigFile.rewriteInPlace(server.configPath, config.serverText)
        try ConfigFile.rewriteInPlace(client.configPath, config.clientText)
        XCTAssertTrue(server.waitForLog("service gone removed", timeout: 20))
        XCTAssertTrue(client.waitForLog("service gone removed", timeout: 20))
        XCTAssertTrue(waitUntil(timeout: 20) { !server.listens(onTCP: gone.port) }, "the removed service's port still listens")
        let atRemoval = streamer.bytes
        XCTAssertTrue(waitUntil(timeout: 40) { streamer.error != nil }, "the relay of the removed service was never stopped")
        let stoppedAfter = monoNow() - editedAt
        let moved = streamer.stop().bytes - atRemoval
        XCTAssertGreaterThan(stoppedAfter, grace, "stopped before the grace was over")
        XCTAssertGreaterThan(moved, 256 << 10, "the transfer went on during the grace (\(moved) bytes)")
        XCTAssertNotNil(secondsUntilForwarding(port: kept.port, timeout: 10), "the other service is untouched")
    }

    // MARK: Invalid edits

    func testInvalidEditIgnoredWithOneLineErrorNamingTheKey() throws {
        let (svc, echo) = try echoService("svc")
        let (later, _) = try echoService("later")
        let (server, client, control) = try start([svc])
        let open = try Conn.connect(port: svc.port)
        defer { open.close() }
        try open.send("ping 1")
        XCTAssertEqual(try open.readExact(6, timeout: 10), Array("ping 1".utf8))

        // Server: a port out of range. Client: a key that does not exist.
        let good = TunnelConfig(controlPort: control, services: [svc])
        let badServer = good.serverText.replacingOccurrences(of: "127.0.0.1:\(svc.port)", with: "127.0.0.1:99999")
        let badClient = good.clientText + "colour = \"red\"\n"
        XCTAssertTrue(badClient.hasSuffix("local_addr = \"127.0.0.1:\(echo.port)\"\ncolour = \"red\"\n"))
        try ConfigFile.rewriteInPlace(server.configPath, badServer)
        try ConfigFile.rewriteInPlace(client.configPath, badClient)
        for (p, key) in [(server, "server.services.svc.bind_addr"), (client, "client.services.svc.colour")] {
            XCTAssertTrue(p.waitForLog("config not reloaded", timeout: 20), "\(p.name): no error logged for the invalid edit")
            let lines = p.lines(containing: "config not reloaded")
            XCTAssertEqual(lines.count, 1, "\(p.name): \(lines)")
            let line = lines.first ?? ""
            XCTAssertTrue(line.contains("ERROR"), "\(p.name): \(line)")
            XCTAssertTrue(line.contains(key), "\(p.name): the error names \(key): \(line)")
            XCTAssertTrue(line.contains(p.configPath), "\(p.name): the error names the file: \(line)")
            let strays = p.log.split(separator: "\n").filter { !$0.hasPrefix("20") }
            XCTAssertEqual(strays, [], "\(p.name): every log line is one timestamped line")
        }

        // Forwarding goes on: the open connection and new visitors.
        try open.send("ping 2")
        XCTAssertEqual(try open.readExact(6, timeout: 10), Array("ping 2".utf8))
        try echoOnce(port: svc.port, payload: Array("a new visitor".utf8))
        XCTAssertTrue(server.isRunning && client.isRunning)

        // A valid edit afterwards is applied (the watcher survived the bad one).
        try rewrite(server, client, control: control, [svc, later])
        assertForwards(port: later.port, "the service added after the invalid edit")
        try open.send("ping 3")
        XCTAssertEqual(try open.readExact(6, timeout: 10), Array("ping 3".utf8))
    }

    // MARK: Rename and SIGHUP

    func testReplaceByRenameThenEditAndSIGHUP() throws {
        let (svc, _) = try echoService("svc")
        let (renamed, _) = try echoService("renamed")
        let (hup, _) = try echoService("hup")
        let (server, client, control) = try start([svc])

        // Saved the way editors do: a new file renamed over the old one.
        try rewrite(server, client, control: control, [svc, renamed], byRename: true)
        assertForwards(port: renamed.port, "the service added by rename")

        // Edited, then SIGHUP at once: the watcher and the signal both reload; the service is added once.
        try rewrite(server, client, control: control, [svc, renamed, hup])
        server.signal(SIGHUP)
        client.signal(SIGHUP)
        assertForwards(port: hup.port, "the service added by edit + SIGHUP")
        for p in [server, client] {
            XCTAssertTrue(p.waitForLog("SIGHUP: reloading", timeout: 20), "\(p.name) logs the SIGHUP")
            XCTAssertEqual(p.occurrences(of: "service hup added"), 1, "\(p.name): added once")
            // The client may reach the server before the server has reloaded: that refusal is fine.
            let errors = p.lines(containing: "ERROR").filter { !$0.contains("does not know this service") }
            XCTAssertEqual(errors, [], "\(p.name) logged errors")
        }
        for port in [svc.port, renamed.port, hup.port] {
            try echoOnce(port: port, payload: Array("all three after the reloads, port \(port)".utf8))
        }
    }

    /// The config files are symlinks into another directory and the edits go to their targets,
    /// which the watcher does not see: SIGHUP alone reloads.
    func testSIGHUPAloneReloads() throws {
        let (svc, _) = try echoService("svc")
        let (hup, _) = try echoService("hup")
        let (server, client, control) = try start([svc], symlinked: true)
        let realServer = dir + "/real/server.toml"
        let realClient = dir + "/real/client.toml"
        try rewrite(server, client, control: control, [svc, hup], serverPath: realServer, clientPath: realClient)
        sleepSeconds(1.5)  // five times the watcher's quiet period; the log order below is the proof
        XCTAssertFalse(ProcFS.tcpListening(port: hup.port), "reloaded without SIGHUP (the test needs the watcher not to see it)")
        XCTAssertEqual(server.occurrences(of: "service hup added"), 0)

        server.signal(SIGHUP)
        client.signal(SIGHUP)
        assertForwards(port: hup.port, "the service added by SIGHUP")
        for p in [server, client] {
            XCTAssertTrue(p.waitForLog("SIGHUP: reloading", timeout: 20))
            XCTAssertTrue(p.waitForLog("service hup added", timeout: 20))
            // Added by the SIGHUP's reload, not by the watcher before it.
            let lines = p.log.split(separator: "\n")
            let hupAt = lines.firstIndex { $0.contains("SIGHUP: reloading") } ?? .max
            let addedAt = lines.firstIndex { $0.contains("service hup added") } ?? -1
            XCTAssertLessThan(hupAt, addedAt, "\(p.name): the service was added before the SIGHUP")
        }
        try echoOnce(port: svc.port, payload: Array("the first service still forwards".utf8))
    }
}
