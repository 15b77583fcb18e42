// systemd's notification protocol end to end: a real rathole process with $NOTIFY_SOCKET pointing
// at a real AF_UNIX datagram socket of the test (a path or an abstract name), and the messages a
// Type=notify unit depends on: READY=1 once the ports are open, RELOADING=1 (with MONOTONIC_USEC)
// and READY=1 around every reload, STOPPING=1 on shutdown, STATUS= lines.
import Foundation
import Glibc
import TestKit
import XCTest

/// The receiving end of $NOTIFY_SOCKET, as systemd holds it.
final class NotifySocket {
    let fd: Int32
    /// The value for $NOTIFY_SOCKET.
    let address: String

    /// Bound to `path`, or with `abstract`, to that name in the abstract namespace ("@name").
    init(path: String? = nil, abstract: String? = nil) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var name: [UInt8]
        if let abstract {
            name = [0] + Array(abstract.utf8)
            address = "@" + abstract
        } else {
            name = Array(path!.utf8)
            address = path!
        }
        precondition(name.count < MemoryLayout.size(ofValue: addr.sun_path))
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: name) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + name.count)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw TestFailure("bind \(address): \(String(cString: strerror(e)))")
        }
    }

    deinit { Glibc.close(fd) }

    /// The next datagram within `timeout` seconds.
    func next(timeout: Double) -> String? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&p, 1, Int32(timeout * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n >= 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
    }

    /// The next message as its assignments (KEY=value lines); fails the test if none comes.
    func expect(_ first: String, timeout: Double = 15, file: StaticString = #filePath, line: UInt = #line) -> [String: String] {
        guard let message = next(timeout: timeout) else {
            XCTFail("no notification within \(timeout) s (expected \(first))", file: file, line: line)
            return [:]
        }
        let lines = message.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, first, "first line of \(message.debugDescription)", file: file, line: line)
        var fields: [String: String] = [:]
        for l in lines {
            guard let eq = l.firstIndex(of: "=") else {
                XCTFail("not an assignment: \(l.debugDescription)", file: file, line: line)
                continue
            }
            fields[String(l[..<eq])] = String(l[l.index(after: eq)...])
        }
        return fields
    }
}

final class SystemdNotifyTests: EndToEndCase {
    private func start(_ name: String, config: String, notify: NotifySocket?, extra: [String: String] = [:]) throws -> RatholeProcess {
        let p = rathole(name, config: config)
        if let notify { p.environment["NOTIFY_SOCKET"] = notify.address }
        p.environment.merge(extra) { $1 }
        try p.start()
        return p
    }

    /// READY=1 comes once every service port is open (or known busy), so a visitor connecting
    /// right then is accepted without retrying; then RELOADING=1/READY=1 around a SIGHUP, a file
    /// change and a refused file, and STOPPING=1 on SIGTERM.
    func testServerReadyReloadStopping() throws {
        let notify = try NotifySocket(path: "\(dir)/notify.sock")
        let control = Ports.free()
        let busy = try Listener()
        var services = [
            ServiceSpec("web", port: Ports.free(), localPort: 1),
            ServiceSpec("dns", type: "udp", port: Ports.freeUDP(), localPort: 1),
            ServiceSpec("taken", port: busy.port, localPort: 1),
        ]
        let server = try start("server", config: TunnelConfig(controlPort: control, services: services).serverText, notify: notify)

        let ready = notify.expect("READY=1")
        XCTAssertEqual(ready["STATUS"], "server listening at 127.0.0.1:\(control) (tcp), 3 services (2 tcp, 1 udp)")
        // No retry: the ports were open when READY=1 was sent.
        XCTAssertNoThrow(try Conn.connect(port: control).close(), "control port open at READY=1")
        XCTAssertNoThrow(try Conn.connect(port: services[0].port).close(), "service port open at READY=1")
        XCTAssertTrue(server.log.contains("service taken: cannot listen"), "the busy port was tried before READY=1")

        server.signal(SIGHUP)
        let reloading = notify.expect("RELOADING=1")
        let usec = try XCTUnwrap(UInt64(reloading["MONOTONIC_USEC"] ?? ""), "MONOTONIC_USEC is a number")
        XCTAssertLessThan(abs(Double(usec) / 1e6 - monoNow()), 10, "MONOTONIC_USEC is CLOCK_MONOTONIC")
        XCTAssertEqual(reloading["STATUS"], "reloading")
        XCTAssertEqual(notify.expect("READY=1")["STATUS"], ready["STATUS"])

        // A file change is a reload too.
        services.append(ServiceSpec("ssh", port: Ports.free(), localPort: 1))
        try ConfigFile.rewriteInPlace(server.configPath, TunnelConfig(controlPort: control, services: services).serverText)
        _ = notify.expect("RELOADING=1")
        XCTAssertEqual(notify.expect("READY=1")["STATUS"], "server listening at 127.0.0.1:\(control) (tcp), 4 services (3 tcp, 1 udp)")
        XCTAssertTrue(waitForPortOpen(services[3].port, timeout: 5), "the added service listens")

        // A refused file leaves the running config, and says so in the status.
        try ConfigFile.rewriteInPlace(server.configPath, "[server]\nbind_addr = 12\n")
        _ = notify.expect("RELOADING=1")
        let refused = notify.expect("READY=1")["STATUS"] ?? ""
        XCTAssertTrue(
            refused.hasPrefix("server listening at 127.0.0.1:\(control) (tcp), 4 services (3 tcp, 1 udp); last reload refused: "), refused)
        XCTAssertTrue(refused.contains("server.toml"), "names the file: \(refused)")

        server.signal(SIGTERM)
        XCTAssertEqual(notify.expect("STOPPING=1")["STATUS"], "shutting down")
        XCTAssertEqual(server.waitForExit(timeout: 15), .exited(0))
        XCTAssertNil(notify.next(timeout: 0.2), "nothing after STOPPING=1")
    }

    /// A client is ready once its control channels are started, even while the server is
    /// unreachable (they are being retried). The socket is an abstract name ("@...").
    func testClientReadyWhileRetryingOnAbstractSocket() throws {
        let notify = try NotifySocket(abstract: "rathole-e2e-\(getpid())-\(Ports.free())")
        let nobody = Ports.free()
        let echo = keep(try LocalService.echo())
        let client = try start(
            "client",
            config: TunnelConfig(
                controlPort: nobody,
                services: [
                    ServiceSpec("web", port: 1, localPort: echo.port)
                ]
            ).clientText, notify: notify)
        XCTAssertEqual(notify.expect("READY=1")["STATUS"], "client of 127.0.0.1:\(nobody) (tcp), 1 service")
        client.signal(SIGTERM)
        _ = notify.expect("STOPPING=1")
        XCTAssertEqual(client.waitForExit(timeout: 15), .exited(0))
    }

    /// A whole tunnel under notification: both ends ready, bytes through, both stopping.
    func testTunnelForwardsWithNotification() throws {
        let serverNotify = try NotifySocket(path: "\(dir)/server.sock")
        let clientNotify = try NotifySocket(path: "\(dir)/client.sock")
        let echo = keep(try LocalService.echo())
        let control = Ports.free()
        let config = TunnelConfig(controlPort: control, services: [ServiceSpec("echo", port: Ports.free(), localPort: echo.port)])
        let services = config.services
        let server = try start("server", config: config.serverText, notify: serverNotify)
        _ = serverNotify.expect("READY=1")
        let client = try start("client", config: config.clientText, notify: clientNotify)
        _ = clientNotify.expect("READY=1")
        XCTAssertTrue(waitUntilForwarding(port: services[0].port, timeout: 15))
        try echoOnce(port: services[0].port, payload: patternBytes(count: 1 << 20, seed: 15))
        for (p, n) in [(client, clientNotify), (server, serverNotify)] {
            p.signal(SIGTERM)
            _ = n.expect("STOPPING=1")
            XCTAssertEqual(p.waitForExit(timeout: 15), .exited(0))
        }
    }

    /// A $NOTIFY_SOCKET that cannot be used (systemd's vsock form, a missing socket) changes
    /// nothing but a warning: the server runs and stops as without it.
    func testUnusableNotifySocketIsIgnored() throws {
        let control = Ports.free()
        let config = TunnelConfig(controlPort: control, services: [ServiceSpec("web", port: Ports.free(), localPort: 1)])
        for (i, value) in ["vsock:2:1234", "\(dir)/nobody-listens.sock"].enumerated() {
            let p = rathole("server\(i)", config: config.serverText)
            p.environment["NOTIFY_SOCKET"] = value
            try p.start()
            try waitServerReady(p, config)
            p.signal(SIGTERM)
            XCTAssertEqual(p.waitForExit(timeout: 15), .exited(0), p.log)
            if i == 0 {
                XCTAssertTrue(
                    p.log.contains("warning: not notifying systemd: NOTIFY_SOCKET=vsock:2:1234: not a path or an @abstract name"), p.log)
            }
        }
    }
}
