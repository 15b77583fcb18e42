// Hot reload of the server's and the client's own settings (bind_addr, remote_addr, the transport,
// the heartbeat keys): the instance restarts gracefully, relays going on through it, and when the
// new settings cannot start the old ones stay (client) or come back (server).
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class ReloadRestartTests: EndToEndCase {
    private struct Running {
        let server: RatholeProcess
        let client: RatholeProcess
        var config: TunnelConfig
        let echo: LocalService
        let streamer: Streamer
        var port: UInt16 { config.services[0].port }
    }

    /// A tunnel for one echo service with a transfer under way through it.
    private func running(_ edit: (inout TunnelConfig) -> Void = { _ in }) throws -> Running {
        let echo = keep(try LocalService.echo())
        var config = TunnelConfig(services: [ServiceSpec("svc", port: Ports.free(), localPort: echo.port)])
        edit(&config)
        let (server, client) = try start(config)
        let streamer = try Streamer(port: config.services[0].port)
        cleanup { streamer.stop() }
        XCTAssertTrue(streamer.waitForProgress(4 << 20), "the long transfer is under way: \(streamer.error ?? "stalled")")
        return Running(server: server, client: client, config: config, echo: echo, streamer: streamer)
    }

    private func rewrite(_ r: Running, server: Bool = true, client: Bool = true) throws {
        if server { try ConfigFile.rewriteInPlace(r.server.configPath, r.config.serverText) }
        if client { try ConfigFile.rewriteInPlace(r.client.configPath, r.config.clientText) }
    }

    /// New visitors are served, and the transfer that was running goes on, byte for byte, on its
    /// one connection (the local service saw no other connection for it).
    private func assertServedAndTransferGoesOn(_ r: Running, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotNil(secondsUntilForwarding(port: r.port, timeout: 30), "\(what): new visitors are not served", file: file, line: line)
        XCTAssertTrue(
            r.streamer.waitForProgress(8 << 20), "\(what): the running transfer stopped: \(r.streamer.error ?? "stalled")",
            file: file, line: line)
        let (bytes, error) = r.streamer.stop()
        XCTAssertNil(error, "\(what): the running transfer broke", file: file, line: line)
        XCTAssertGreaterThan(bytes, 12 << 20, file: file, line: line)
        XCTAssertTrue(r.server.isRunning && r.client.isRunning, file: file, line: line)
    }

    /// server.bind_addr and client.remote_addr move to another port: both restart, the server
    /// listens on the new port only, the client's channels come back there.
    func testServerAndClientMoveToANewPort() throws {
        var r = try running()
        let old = r.config.controlPort
        r.config.controlPort = Ports.free()
        r.config.bindAddr = "127.0.0.1:\(r.config.controlPort)"
        r.config.remoteAddr = r.config.bindAddr
        try rewrite(r)
        let moved = waitUntil(timeout: 30) { r.server.listens(onTCP: r.config.controlPort) && !r.server.listens(onTCP: old) }
        XCTAssertTrue(moved, "the server listens on \(r.config.controlPort) instead of \(old)")
        try waitClientReady(r.client, server: r.server, r.config)
        XCTAssertTrue(r.server.waitForLog("restarting the server", timeout: 20))
        XCTAssertTrue(r.client.waitForLog("restarting the client", timeout: 20))
        assertServedAndTransferGoesOn(r, "after the move")
    }

    /// client.remote_addr alone changes (to a relay in front of the same server): the client
    /// restarts and its channels now come through the relay.
    func testClientRemoteAddrChange() throws {
        var r = try running()
        let relay = try TCPRelay(targetPort: r.config.controlPort)
        cleanup { relay.stop() }
        let before = channels(of: r.server, r.config)
        r.config.remoteAddr = "127.0.0.1:\(relay.port)"
        try rewrite(r, server: false)
        try waitClientReady(r.client, server: r.server, r.config, since: before)
        XCTAssertGreaterThanOrEqual(r.client.connections(to: relay.port).count, 9, "the client's channels go through the relay")
        XCTAssertTrue(r.client.waitForLog("restarting the client", timeout: 20))
        XCTAssertEqual(r.server.occurrences(of: "restarting the server"), 0)
        assertServedAndTransferGoesOn(r, "after the client moved")
    }

    /// The transport changes from plain TCP to Noise on both sides: both restart, new visitors go
    /// through Noise (a client still on TCP could not be served), the running transfer goes on.
    func testTransportChangeToNoise() throws {
        var r = try running()
        let before = channels(of: r.server, r.config)
        r.config.transport = try Transports.tables(.noiseNK, dir: dir)
        try rewrite(r)
        try waitClientReady(r.client, server: r.server, r.config, since: before)
        XCTAssertTrue(r.server.waitForLog("restarting the server", timeout: 20))
        XCTAssertTrue(r.client.waitForLog("restarting the client", timeout: 20))
        assertServedAndTransferGoesOn(r, "over Noise")
        // A plain-TCP client is refused now: its Hello is not a Noise handshake.
        let (c, _, _) =
            (try? RawClient.handshake(port: r.config.controlPort, service: "svc", token: TunnelConfig.defaultToken)) ?? (nil, 0, [])
        XCTAssertNil(c, "the restarted server still speaks plain TCP")
    }

    /// server.heartbeat_interval and client.heartbeat_timeout change (30 s and 40 s to 1 s and 4 s):
    /// after the restart an idle channel lives on heartbeats past twice the new timeout, and a frozen
    /// server is noticed within the new timeout (the old 40 s would not fire within the deadline).
    func testHeartbeatKeysChange() throws {
        var r = try running()
        _ = r.streamer.stop()
        let before = channels(of: r.server, r.config)
        r.config.serverKeys = ["heartbeat_interval = 1"]
        r.config.clientKeys = ["heartbeat_timeout = 4"]
        try rewrite(r)
        try waitClientReady(r.client, server: r.server, r.config, since: before)
        XCTAssertTrue(r.server.waitForLog("restarting the server", timeout: 20))
        XCTAssertTrue(r.client.waitForLog("restarting the client", timeout: 20))
        let idle = settled { self.channels(of: r.server, r.config) }
        sleepSeconds(8)
        XCTAssertEqual(r.client.occurrences(of: "no heartbeat"), 0, "the new 1 s heartbeat interval did not reach the server")
        XCTAssertTrue(channels(of: r.server, r.config).isSuperset(of: idle), "the idle control channel was replaced")
        r.server.signal(SIGSTOP)
        let detected = r.client.waitForLog("no heartbeat", timeout: 30)
        r.server.signal(SIGCONT)
        XCTAssertTrue(detected, "the new 4 s heartbeat timeout did not reach the client")
        XCTAssertNotNil(secondsUntilForwarding(port: r.port, timeout: 30), "served after SIGCONT")
    }

    /// The new server.bind_addr is taken by another socket: the server says so and comes back on
    /// its previous settings; the client reconnects there; the running transfer goes on.
    func testServerRollsBackWhenTheNewSettingsCannotStart() throws {
        var r = try running()
        let busy = try Listener()
        let old = r.config.controlPort
        let before = channels(of: r.server, r.config)
        r.config.bindAddr = "127.0.0.1:\(busy.port)"
        try rewrite(r, client: false)
        XCTAssertTrue(r.server.waitForLog("restoring the previous ones", timeout: 20), "the failed restart is logged")
        let line = r.server.lines(containing: "restoring the previous ones").first ?? ""
        XCTAssertTrue(line.contains("ERROR") && line.contains("127.0.0.1:\(busy.port)"), "the error names the address: \(line)")
        XCTAssertTrue(waitUntil(timeout: 20) { r.server.listens(onTCP: old) }, "the server listens on its previous port again")
        r.config.bindAddr = "127.0.0.1:\(old)"
        try waitClientReady(r.client, server: r.server, r.config, since: before)
        assertServedAndTransferGoesOn(r, "after the rollback")
        busy.close()
    }

    /// The new client settings cannot start (a TLS root that does not exist): the client says so
    /// and keeps running on the old ones, its control channel untouched.
    func testClientKeepsItsSettingsWhenTheNewOnesCannotStart() throws {
        var r = try running()
        let held = channels(of: r.server, r.config)
        r.config.clientTables = Transports.tlsClient(trustedRoot: dir + "/no-such-ca.pem")
        try rewrite(r, server: false)
        XCTAssertTrue(r.client.waitForLog("new client settings rejected", timeout: 20), "the rejection is logged")
        let line = r.client.lines(containing: "new client settings rejected").first ?? ""
        XCTAssertTrue(line.contains("ERROR") && line.contains("no-such-ca.pem"), "the error names the file: \(line)")
        XCTAssertTrue(channels(of: r.server, r.config).isSuperset(of: held), "the client's channels were replaced")
        assertServedAndTransferGoesOn(r, "after the rejected edit")
    }
}
