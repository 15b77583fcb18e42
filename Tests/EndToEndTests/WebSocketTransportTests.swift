// The websocket transport end to end, real processes on loopback: ws and wss tunnels with a TCP
// and a UDP service (echo, 64 MiB, 50 concurrent connections, datagrams), the same through an
// HTTP CONNECT proxy (tinyproxy), and each side against an independent websocket implementation
// (the `websockets` package from PyPI, in Tests/ControlPlaneTests/Fixtures/ws_bridge.py) that
// pings every 100 ms and sends its messages in fragments.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class WebSocketTransportTests: EndToEndCase {
    static let p12Password = "ws p12 pass"

    /// `[side.transport]` for websocket; with TLS, the TLS keys of the test certificates.
    private func tables(_ side: String, tls: Bool, proxy: String? = nil) throws -> String {
        var t = "[\(side).transport]\ntype = \"websocket\"\n\n[\(side).transport.websocket]\ntls = \(tls)\n"
        if tls {
            let d = try certs()
            t +=
                side == "server"
                ? "\n[server.transport.tls]\npkcs12 = \"\(d)/server.p12\"\npkcs12_password = \"\(Self.p12Password)\"\n"
                : "\n[client.transport.tls]\ntrusted_root = \"\(d)/ca.pem\"\nhostname = \"localhost\"\n"
        }
        if let proxy { t += "\n[client.transport.tcp]\nproxy = \"\(proxy)\"\n" }
        return t
    }

    private func certs() throws -> String {
        let d = dir + "/certs"
        if !FileManager.default.fileExists(atPath: d + "/server.p12") { try Programs.makeCerts(in: d, password: Self.p12Password) }
        return d
    }

    private struct Setup {
        let server: RatholeProcess
        let client: RatholeProcess
        let tcpPort: UInt16
        let udpPort: UInt16
        let echo: LocalService
        let udpEcho: UDPEcho
    }

    /// A server and a client with a TCP and a UDP echo service; the client reaches the server at
    /// `remotePort` (a proxy or bridge in between) or the control port.
    private func start(
        serverTables: String, clientTables: String, control: UInt16 = Ports.free(),
        remotePort: UInt16? = nil
    ) throws -> Setup {
        let echo = keep(try LocalService.echo())
        let udpEcho = keep(try UDPEcho())
        var config = TunnelConfig(
            controlPort: control,
            services: [
                ServiceSpec("wstcp", port: Ports.free(), localPort: echo.port),
                ServiceSpec("wsudp", type: "udp", port: Ports.freeUDP(), localPort: udpEcho.port),
            ])
        config.serverTables = serverTables
        config.clientTables = clientTables
        if let remotePort { config.remoteAddr = "127.0.0.1:\(remotePort)" }
        let (server, client) = try start(config)
        return Setup(
            server: server, client: client, tcpPort: config.services[0].port, udpPort: config.services[1].port, echo: echo, udpEcho: udpEcho
        )
    }

    /// Echoes of several sizes, `big` bytes hashed, 50 concurrent connections, datagrams.
    private func checkForwarding(_ s: Setup, _ what: String, big: Int = 64 << 20, concurrent: Int = 50) throws {
        for (i, size) in [1, 5000, 200_000].enumerated() {
            XCTAssertNoThrow(
                try echoOnce(port: s.tcpPort, payload: patternBytes(count: size, seed: UInt64(i + 1))), "\(what): \(size) bytes")
        }
        XCTAssertNoThrow(try echoTransfer(port: s.tcpPort, data: Array(bigPattern.prefix(big))), "\(what): \(big >> 20) MiB")
        let failures = concurrentEchoes(port: s.tcpPort, count: concurrent)
        XCTAssertEqual(failures, [], "\(what): \(failures.count) of \(concurrent) concurrent connections failed")
        XCTAssertEqual(s.echo.accepted, 3 + 1 + concurrent, "\(what): one local connection per visitor")

        let visitor = try UDPSocket()
        defer { visitor.close() }
        for (i, size) in [1, 100, 1400, 2000].enumerated() {
            let datagram = patternBytes(count: size, seed: UInt64(100 + i))
            XCTAssertEqual(
                visitor.roundTrip(datagram, toPort: s.udpPort, attempts: 5), datagram, "\(what): a UDP datagram of \(size) bytes")
        }
        XCTAssertTrue(s.server.isRunning && s.client.isRunning, what)
        for p in [s.server, s.client] {
            XCTAssertTrue(
                p.lines(containing: "WARN").isEmpty && p.lines(containing: "ERROR").isEmpty,
                "\(what): \(p.name) complained:\n\(p.log)")
        }
    }

    // MARK: Ours against ours

    func testWebSocket() throws {
        let s = try start(serverTables: try tables("server", tls: false), clientTables: try tables("client", tls: false))
        try checkForwarding(s, "ws")
    }

    func testSecureWebSocket() throws {
        let s = try start(serverTables: try tables("server", tls: true), clientTables: try tables("client", tls: true))
        try checkForwarding(s, "wss")
    }

    /// wss to a server whose certificate the client does not trust: refused, nothing forwarded.
    func testSecureWebSocketUntrustedCertificateRefused() throws {
        let echo = keep(try LocalService.echo())
        let service = ServiceSpec("wss", port: Ports.free(), localPort: echo.port)
        let d = try certs()
        var config = TunnelConfig(services: [service])
        config.serverTables = try tables("server", tls: true)
        config.clientTables =
            "[client.transport]\ntype = \"websocket\"\n\n[client.transport.websocket]\ntls = true\n\n"
            + "[client.transport.tls]\ntrusted_root = \"\(d)/other-ca.pem\"\nhostname = \"localhost\"\n"
        let server = rathole("server", config: config.serverText)
        let client = rathole("client", config: config.clientText)
        try server.start()
        try waitServerReady(server, config)
        try client.start()
        XCTAssertTrue(client.waitForLog("cannot connect to server", timeout: 15), client.log)
        try assertNothingForwarded(publicPort: service.port, local: echo)
    }

    /// A FIN is a close frame, one each way: after the visitor's FIN the service's answer still
    /// comes back, and after the service's FIN 300 KB from the visitor still get through.
    func testHalfCloseBothWays() throws {
        for tls in [false, true] {
            let what = tls ? "wss" : "ws"
            let received = Locked<[UInt8]?>(nil)
            let answering = keep(try LocalService.halfClose())
            let closing = keep(
                try LocalService(name: "early-closer") { conn in
                    try? conn.send("bye;")
                    conn.shutdownWrite()
                    let got = try? conn.readToEOF(timeout: 30)
                    received.withLock { $0 = got }
                })
            let services = [
                ServiceSpec("answering", port: Ports.free(), localPort: answering.port),
                ServiceSpec("closing", port: Ports.free(), localPort: closing.port),
            ]
            var config = TunnelConfig(services: services)
            config.serverTables = try tables("server", tls: tls)
            config.clientTables = try tables("client", tls: tls)
            let (server, client) = try start(config, serverName: "server-\(what)", clientName: "client-\(what)")

            let v = try Conn.connect(port: services[0].port)
            XCTAssertEqual(String(decoding: try v.readExact(9, timeout: 15), as: UTF8.self), "greeting;", what)
            try v.send("ping-half-close")
            v.shutdownWrite()
            XCTAssertEqual(
                String(decoding: try v.readToEOF(timeout: 15), as: UTF8.self),
                "saw EOF after 15 bytes;you said <ping-half-close>", what)

            let w = try Conn.connect(port: services[1].port)
            XCTAssertEqual(try w.readToEOF(timeout: 15), Array("bye;".utf8), "\(what): the service's FIN reaches the visitor")
            let late = patternBytes(count: 300_000, seed: 7)
            try w.send(late)
            w.shutdownWrite()
            XCTAssertTrue(waitUntil(timeout: 15) { received.get != nil }, "\(what): the service never saw the visitor's EOF")
            XCTAssertTrue(received.get == late, "\(what): bytes sent after the other side's FIN arrive intact")
            client.killNow()
            server.killNow()
        }
    }

    // MARK: Through an HTTP CONNECT proxy

    private func startTinyproxy(connectPort: UInt16) throws -> UInt16 {
        let binary = try Programs.require("tinyproxy", package: "tinyproxy")
        let port = Ports.free()
        let conf = writeFile(
            "tinyproxy-\(port).conf",
            """
            Port \(port)
            Listen 127.0.0.1
            Timeout 600
            Allow 127.0.0.1
            MaxClients 200
            LogLevel Connect
            ConnectPort \(connectPort)

            """)
        let p = program("tinyproxy-\(port)", [binary, "-d", "-c", conf])
        try p.start()
        guard waitForPortOpen(port, timeout: 10) else { throw TestFailure("tinyproxy did not listen on \(port):\n\(p.log)") }
        return port
    }

    func testWebSocketsThroughHTTPProxy() throws {
        for tls in [false, true] {
            let control = Ports.free()
            let proxy = try startTinyproxy(connectPort: control)
            let s = try start(
                serverTables: try tables("server", tls: tls),
                clientTables: try tables("client", tls: tls, proxy: "http://127.0.0.1:\(proxy)"), control: control)
            try checkForwarding(s, tls ? "wss via tinyproxy" : "ws via tinyproxy", big: 16 << 20, concurrent: 20)
            s.client.killNow()
            s.server.killNow()
        }
    }

    // MARK: Against an independent implementation (Python websockets)

    /// /usr/bin/python3 (or another on PATH) that can import websockets.
    private func pythonWithWebsockets() throws -> String {
        let candidates =
            ["/usr/bin/python3"] + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/python3" }
        for p in candidates where access(p, X_OK) == 0 {
            if (try? Programs.run([p, "-c", "import websockets.sync.server"]))?.status == 0 { return p }
        }
        throw TestFailure("no python3 can import websockets (>= 13): run scripts/install-deps (it installs it with pip)")
    }

    /// Starts ws_bridge.py; returns the process and the port it listens on.
    private func startBridge(_ mode: String, to port: UInt16) throws -> (ExternalProgram, UInt16) {
        let script = Paths.packageRoot + "/Tests/ControlPlaneTests/Fixtures/ws_bridge.py"
        let p = program("ws-bridge-\(mode)", [try pythonWithWebsockets(), script, mode, "--to", "\(port)", "--ping", "0.1", "--fragment"])
        try p.start()
        var listening: UInt16?
        _ = waitUntil(timeout: 20) {
            listening = p.log.split(separator: "\n").first { $0.hasPrefix("ready ") }.flatMap { UInt16($0.dropFirst(6)) }
            return listening != nil || !p.isRunning
        }
        guard let listening else { throw TestFailure("ws_bridge.py \(mode) did not start:\n\(p.log)") }
        return (p, listening)
    }

    private func checkBridge(_ bridge: ExternalProgram, _ what: String) {
        let log = bridge.log
        let lines = log.split(separator: "\n")
        XCTAssertTrue(lines.filter { $0.contains("ERROR") }.isEmpty, "\(what): the websockets peer objected:\n\(log)")
        let pongs = lines.filter { $0.contains("end ") }.compactMap { line in
            line.split(separator: " ").first { $0.hasPrefix("pongs=") }.flatMap { Int($0.dropFirst(6)) }
        }.reduce(0, +)
        XCTAssertGreaterThan(pongs, 0, "\(what): our side answered the bridge's pings:\n\(log)")
    }

    /// Our client (websocket) -> Python websockets server -> TCP -> our server (tcp transport).
    func testOurClientAgainstPythonWebsocketsServer() throws {
        let control = Ports.free()
        let (bridge, port) = try startBridge("server", to: control)
        let s = try start(serverTables: "", clientTables: try tables("client", tls: false), control: control, remotePort: port)
        try checkForwarding(s, "our ws client via python websockets", big: 8 << 20, concurrent: 20)
        s.client.killNow()
        sleepSeconds(0.5)
        checkBridge(bridge, "python websockets server")
    }

    /// Our client (tcp) -> TCP -> Python websockets client -> our server (websocket transport).
    func testOurServerAgainstPythonWebsocketsClient() throws {
        let control = Ports.free()
        let (bridge, port) = try startBridge("client", to: control)
        let s = try start(serverTables: try tables("server", tls: false), clientTables: "", control: control, remotePort: port)
        try checkForwarding(s, "our ws server via python websockets", big: 8 << 20, concurrent: 20)
        s.client.killNow()
        sleepSeconds(0.5)
        checkBridge(bridge, "python websockets client")
    }
}
