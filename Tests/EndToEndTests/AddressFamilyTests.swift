// TCP tunnels over IPv6, host names in remote_addr and local_addr, and prefer_ipv6 choosing
// between a name's IPv4 and IPv6 addresses.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class AddressFamilyTests: EndToEndCase {
    private func requireIPv6() throws {
        do {
            _ = try Listener(ipv6: true)
        } catch {
            throw XCTSkip("[::1] is not usable here: \(error)")
        }
    }

    /// Everything on [::1]: the control port, the service port, the local service, the visitors.
    func testTunnelOverIPv6() throws {
        try requireIPv6()
        let echo = keep(try LocalService.echo(ipv6: true))
        var config = TunnelConfig(services: [ServiceSpec("v6", port: Ports.free(), localPort: echo.port, bindHost: "::1", localHost: "::1")]
        )
        config.bindAddr = "[::1]:\(config.controlPort)"
        config.remoteAddr = config.bindAddr
        let (server, client) = try start(config)
        for (i, size) in [1, 5000, 300_000].enumerated() {
            try echoOnce(port: config.services[0].port, payload: patternBytes(count: size, seed: UInt64(60 + i)), ipv6: true)
        }
        XCTAssertEqual(echo.accepted, 3)
        XCTAssertTrue(
            server.tcpSockets.filter { $0.isEstablished && $0.localPort == config.controlPort }.allSatisfy(\.ipv6),
            "the channels run over IPv6")
        XCTAssertThrowsError(try Conn.connect(port: config.services[0].port), "the service listens on [::1] only")
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    /// remote_addr and local_addr may name a host: "localhost" is resolved (to 127.0.0.1 here).
    func testHostNamesInRemoteAndLocalAddr() throws {
        let echo = keep(try LocalService.echo())
        var config = TunnelConfig(services: [ServiceSpec("named", port: Ports.free(), localPort: echo.port)])
        config.services[0].localAddr = "localhost:\(echo.port)"
        config.remoteAddr = "localhost:\(config.controlPort)"
        let (server, client) = try start(config)
        for i in 0..<5 { try echoOnce(port: config.services[0].port, payload: Array("by name \(i)".utf8)) }
        XCTAssertEqual(echo.accepted, 5)
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    /// A name with both an IPv4 and an IPv6 address ("dualhost", from a hosts file the client sees
    /// in its own mount namespace). The server and the local service are on [::1] only: the client
    /// gets there with prefer_ipv6 (client-wide for remote_addr, per service for local_addr), and
    /// without it tries 127.0.0.1 and is refused.
    func testPreferIPv6() throws {
        try requireIPv6()
        let hosts = writeFile("hosts", "127.0.0.1 localhost\n127.0.0.1 dualhost\n::1 dualhost\n")
        let echo = keep(try LocalService.echo(ipv6: true))
        var config = TunnelConfig(services: [
            ServiceSpec(
                "dual", port: Ports.free(), localPort: echo.port, bindHost: "::1",
                clientKeys: ["prefer_ipv6 = true"])
        ])
        config.services[0].localAddr = "dualhost:\(echo.port)"
        config.bindAddr = "[::1]:\(config.controlPort)"
        config.remoteAddr = "dualhost:\(config.controlPort)"

        // Without prefer_ipv6 the client takes the IPv4 address, where nothing listens.
        let server = rathole("server", config: config.serverText)
        try server.start()
        try waitServerReady(server, config)
        let v4 = rathole("client-v4", config: config.clientText)
        v4.launcher = try withHostsFile(hosts)
        try v4.start()
        XCTAssertTrue(v4.waitForLog("retrying", count: 2, timeout: 20), "the IPv4 attempt is refused and retried")
        XCTAssertTrue(
            v4.lines(containing: "retrying").first?.contains("127.0.0.1:\(config.controlPort)") ?? false,
            "it tried the IPv4 address: \(v4.lines(containing: "retrying").first ?? "")")
        XCTAssertEqual(server.connections(acceptedOn: config.controlPort).count, 0)
        v4.killNow()

        config.clientKeys = ["prefer_ipv6 = true"]
        let v6 = rathole("client-v6", config: config.clientText)
        v6.launcher = try withHostsFile(hosts)
        try v6.start()
        try waitClientReady(v6, server: server, config)
        XCTAssertTrue(v6.tcpSockets.filter { $0.isEstablished && $0.remotePort == config.controlPort }.allSatisfy(\.ipv6))
        for i in 0..<5 { try echoOnce(port: config.services[0].port, payload: Array("dual stack \(i)".utf8), ipv6: true) }
        XCTAssertEqual(echo.accepted, 5, "the local service on [::1] was reached by name")
    }

    /// A launcher that runs the program in its own mount namespace with `hosts` as /etc/hosts
    /// (same pid: unshare and sh exec it).
    private func withHostsFile(_ hosts: String) throws -> [String] {
        let unshare = try Programs.require("unshare", package: "util-linux")
        let probe = try Programs.run([unshare, "--mount", "sh", "-c", "mount --bind '\(hosts)' /etc/hosts && getent ahosts dualhost"])
        guard probe.status == 0, probe.output.contains("::1") else {
            throw TestFailure("cannot give a process its own /etc/hosts (unshare --mount, as root): \(probe.output)")
        }
        return [unshare, "--mount", "sh", "-c", "mount --bind '\(hosts)' /etc/hosts && exec \"$0\" \"$@\""]
    }
}
