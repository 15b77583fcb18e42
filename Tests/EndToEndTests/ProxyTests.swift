// The client reaching the server through a real proxy on loopback: dante (SOCKS5, without and with
// username authentication) and tinyproxy (HTTP CONNECT, without and with Basic auth). 64 MiB
// through each; a wrong proxy password refused, retried, then fixed; Noise on top of a proxy.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class ProxyTests: EndToEndCase {
    static let user = "ratholeproxy"
    static let password = "proxy-pass-1"

    enum Proxy {
        case socks5, http
    }

    /// The system user dante checks SOCKS5 usernames against (tests run as root).
    private func ensureProxyUser() throws {
        if try Programs.run(["id", "-u", Self.user]).status != 0 {
            let (status, out) = try Programs.run(["useradd", "-M", "-s", "/usr/sbin/nologin", Self.user])
            guard status == 0 || status == 9 else { throw TestFailure("useradd \(Self.user) failed (\(status)): \(out)") }
        }
        let (status, out) = try Programs.run(["/bin/sh", "-c", "echo '\(Self.user):\(Self.password)' | chpasswd"])
        guard status == 0 else { throw TestFailure("chpasswd for \(Self.user) failed (\(status)): \(out)") }
    }

    /// Starts danted (SOCKS5) on a free port; returns the process and its port.
    private func startDante(auth: Bool) throws -> (ExternalProgram, UInt16) {
        let binary = try Programs.require("danted", package: "dante-server")
        if auth { try ensureProxyUser() }
        let port = Ports.free()
        let conf = writeFile(
            "danted-\(port).conf",
            """
            logoutput: stderr
            internal: 127.0.0.1 port = \(port)
            external: 127.0.0.1
            clientmethod: none
            socksmethod: \(auth ? "username" : "none")
            user.privileged: root
            user.unprivileged: nobody
            client pass {
                from: 127.0.0.0/8 to: 0.0.0.0/0
                log: error
            }
            socks pass {
                from: 127.0.0.0/8 to: 0.0.0.0/0
                command: connect
                log: error connect
            }

            """)
        let p = program("danted-\(port)", [binary, "-f", conf, "-N", "1"])
        try p.start()
        guard waitForPortOpen(port, timeout: 10) else { throw TestFailure("danted did not listen on \(port):\n\(p.log)") }
        return (p, port)
    }

    /// Starts tinyproxy (HTTP CONNECT) on a free port, allowing CONNECT to `connectPort` only.
    private func startTinyproxy(auth: Bool, connectPort: UInt16) throws -> (ExternalProgram, UInt16) {
        let binary = try Programs.require("tinyproxy", package: "tinyproxy")
        let port = Ports.free()
        var text = """
            Port \(port)
            Listen 127.0.0.1
            Timeout 600
            Allow 127.0.0.1
            MaxClients 200
            LogLevel Connect
            ConnectPort \(connectPort)

            """
        if auth { text += "BasicAuth \(Self.user) \(Self.password)\n" }
        let conf = writeFile("tinyproxy-\(port).conf", text)
        let p = program("tinyproxy-\(port)", [binary, "-d", "-c", conf])
        try p.start()
        guard waitForPortOpen(port, timeout: 10) else { throw TestFailure("tinyproxy did not listen on \(port):\n\(p.log)") }
        return (p, port)
    }

    private func proxyURL(_ kind: Proxy, port: UInt16, password: String?) -> String {
        let scheme = kind == .socks5 ? "socks5" : "http"
        let credentials = password.map { "\(Self.user):\($0)@" } ?? ""
        return "\(scheme)://\(credentials)127.0.0.1:\(port)"
    }

    /// The client's transport tables: plain TCP or Noise NK, through `url`.
    private func clientTables(proxy url: String, noisePublicKey: String?) -> String {
        var t = "[client.transport]\ntype = \"\(noisePublicKey == nil ? "tcp" : "noise")\"\n\n"
        t += "[client.transport.tcp]\nproxy = \"\(url)\"\n"
        if let noisePublicKey { t += "\n[client.transport.noise]\nremote_public_key = \"\(noisePublicKey)\"\n" }
        return t
    }

    private struct Setup {
        let server: RatholeProcess
        let client: RatholeProcess
        let proxy: ExternalProgram
        let config: TunnelConfig
        let echo: LocalService
        var control: UInt16 { config.controlPort }
        var service: ServiceSpec { config.services[0] }
    }

    /// A proxy, a server, a client through the proxy; one echo service. Waits for the control
    /// channel when `expectConnected`.
    private func setUpTunnel(
        _ kind: Proxy, auth: Bool, clientPassword: String? = nil, noise: Bool = false,
        expectConnected: Bool = true
    ) throws -> Setup {
        let echo = keep(try LocalService.echo())
        let control = Ports.free()
        let (proxy, proxyPort) = kind == .socks5 ? try startDante(auth: auth) : try startTinyproxy(auth: auth, connectPort: control)
        var config = TunnelConfig(controlPort: control, services: [ServiceSpec("proxied", port: Ports.free(), localPort: echo.port)])
        var key: String?
        if noise {
            let k = try Programs.genkey()
            config.serverTables = Transports.noise("server", privateKey: k.privateKey)
            key = k.publicKey
        }
        let url = proxyURL(kind, port: proxyPort, password: auth ? (clientPassword ?? Self.password) : nil)
        config.clientTables = clientTables(proxy: url, noisePublicKey: key)
        let server = rathole("server", config: config.serverText)
        let client = rathole("client", config: config.clientText)
        try server.start()
        try waitServerReady(server, config)
        try client.start()
        if expectConnected { try waitClientReady(client, server: server, config) }
        return Setup(server: server, client: client, proxy: proxy, config: config, echo: echo)
    }

    /// The proxy's log shows connections to the server's control port (so the client went through it).
    private func assertWentThroughProxy(_ s: Setup, _ kind: Proxy, file: StaticString = #filePath, line: UInt = #line) {
        let marker = kind == .socks5 ? "127.0.0.1.\(s.control)" : "CONNECT 127.0.0.1:\(s.control)"
        let n = s.proxy.log.split(separator: "\n").filter { $0.contains(marker) }.count
        // The control channel and at least one data channel.
        XCTAssertGreaterThanOrEqual(n, 2, "the proxy's log shows \(n) connections to the server:\n\(s.proxy.log)", file: file, line: line)
    }

    private func checkForwarding(_ kind: Proxy, auth: Bool, noise: Bool = false) throws {
        let s = try setUpTunnel(kind, auth: auth, noise: noise)
        try echoOnce(port: s.service.port, payload: Array("through \(kind)".utf8))
        XCTAssertNoThrow(try echoTransfer(port: s.service.port, data: bigPattern), "64 MiB through \(kind)")
        let failures = concurrentEchoes(port: s.service.port, count: 10, bytesEach: 16 << 10)
        XCTAssertEqual(failures, [], "10 concurrent connections through \(kind)")
        XCTAssertEqual(s.echo.accepted, 12)
        assertWentThroughProxy(s, kind)
        XCTAssertTrue(s.server.isRunning && s.client.isRunning && s.proxy.isRunning)
    }

    // MARK: Forwarding through each proxy

    func testSocks5WithoutAuth() throws { try checkForwarding(.socks5, auth: false) }
    func testSocks5WithUsernameAuth() throws { try checkForwarding(.socks5, auth: true) }
    func testHTTPConnectWithoutAuth() throws { try checkForwarding(.http, auth: false) }
    func testHTTPConnectWithBasicAuth() throws { try checkForwarding(.http, auth: true) }
    func testNoiseThroughSocks5() throws { try checkForwarding(.socks5, auth: true, noise: true) }
    func testNoiseThroughHTTPConnect() throws { try checkForwarding(.http, auth: true, noise: true) }

    // MARK: Wrong password

    /// Refused and retried with a clear log line; nothing forwarded; fixed by a hot reload.
    func testSocks5WrongPasswordRetriedThenFixedByReload() throws {
        let s = try setUpTunnel(.socks5, auth: true, clientPassword: "wrong-password", expectConnected: false)
        XCTAssertTrue(s.client.waitForLog("rejected the username/password", count: 2, timeout: 10), "refused, and retried")
        let line = s.client.lines(containing: "rejected the username/password").first ?? ""
        XCTAssertTrue(line.contains("ERROR") && line.contains("proxied") && line.contains("retrying"), "a clear error line: \(line)")
        XCTAssertFalse(line.contains("wrong-password"), "the password must not be logged: \(line)")
        try assertNothingForwarded(publicPort: s.service.port, local: s.echo)

        // Fixed in the file: the running client reloads and connects.
        let fixed = try String(contentsOfFile: s.client.configPath, encoding: .utf8)
            .replacingOccurrences(of: ":wrong-password@", with: ":\(Self.password)@")
        try ConfigFile.rewriteInPlace(s.client.configPath, fixed)
        try waitClientReady(s.client, server: s.server, s.config)
        XCTAssertNotNil(secondsUntilForwarding(port: s.service.port, timeout: 10), "forwarding after the fix")
        XCTAssertNoThrow(try echoTransfer(port: s.service.port, data: Array(bigPattern.prefix(8 << 20))))
        assertWentThroughProxy(s, .socks5)
    }

    /// Refused (tinyproxy answers 401, others 407) and retried with a clear log line; nothing
    /// forwarded; fixed by a restart.
    func testHTTPWrongPasswordRetriedThenFixedByRestart() throws {
        let s = try setUpTunnel(.http, auth: true, clientPassword: "wrong-password", expectConnected: false)
        let refusal = "CONNECT 127.0.0.1:\(s.control) refused: HTTP/"
        XCTAssertTrue(s.client.waitForLog(refusal, count: 2, timeout: 10), "refused, and retried")
        let line = s.client.lines(containing: refusal).first ?? ""
        XCTAssertTrue(line.contains("ERROR") && line.contains("proxied") && line.contains("retrying"), "a clear error line: \(line)")
        XCTAssertTrue(line.contains(" 401 ") || line.contains(" 407 "), "the proxy's status is logged: \(line)")
        XCTAssertFalse(line.contains("wrong-password"), "the password must not be logged: \(line)")
        try assertNothingForwarded(publicPort: s.service.port, local: s.echo)

        s.client.signal(SIGTERM)
        XCTAssertEqual(s.client.waitForExit(timeout: 10), .exited(0))
        let fixed = try String(contentsOfFile: s.client.configPath, encoding: .utf8)
            .replacingOccurrences(of: ":wrong-password@", with: ":\(Self.password)@")
        try ConfigFile.replaceByRename(s.client.configPath, fixed)
        try s.client.start()
        try waitClientReady(s.client, server: s.server, s.config)
        XCTAssertNotNil(secondsUntilForwarding(port: s.service.port, timeout: 10), "forwarding after the fix")
        XCTAssertNoThrow(try echoTransfer(port: s.service.port, data: Array(bigPattern.prefix(8 << 20))))
        assertWentThroughProxy(s, .http)
    }
}
