// Starting up the way users do: one file with both [server] and [client] run twice with --server
// and --client (upstream's own test setup), the error without either, and a service whose port is
// busy at start, retried while the other services run.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class StartupTests: EndToEndCase {
    func testOneFileForBothSidesWithServerAndClientFlags() throws {
        let echo = keep(try LocalService.echo())
        let config = TunnelConfig(services: [ServiceSpec("svc", port: Ports.free(), localPort: echo.port)])
        let path = writeFile("both.toml", config.combinedText)

        // Without a flag the program cannot tell which side to run: exit 1, one line that says so.
        let unsure = rathole("unsure", configPath: path)
        try unsure.start()
        XCTAssertEqual(unsure.waitForExit(timeout: 15), .exited(1))
        let lines = unsure.log.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "one line: \(unsure.log)")
        XCTAssertTrue(
            unsure.log.contains("--server") && unsure.log.contains("--client") && unsure.log.contains(path),
            "the error names the flags and the file: \(unsure.log)")
        XCTAssertFalse(ProcFS.tcpListening(port: config.controlPort), "nothing listens after the error")

        let server = rathole("server", configPath: path, arguments: ["--server"])
        let client = rathole("client", configPath: path, arguments: ["--client"])
        try server.start()
        try waitServerReady(server, config)
        try client.start()
        try waitClientReady(client, server: server, config)
        for i in 0..<5 { try echoOnce(port: config.services[0].port, payload: Array("one file, two sides \(i)".utf8)) }
        XCTAssertEqual(client.tcpSockets.filter(\.isListening).count, 0, "the client runs no server")
        XCTAssertEqual(echo.accepted, 5)

        // The short flags too, and a flag for a side the file does not have.
        let serverOnly = writeFile("server-only.toml", config.serverText)
        let wrongSide = rathole("wrong-side", configPath: serverOnly, arguments: ["-c"])
        try wrongSide.start()
        XCTAssertEqual(wrongSide.waitForExit(timeout: 15), .exited(1))
        XCTAssertTrue(
            wrongSide.log.contains("--client") && wrongSide.log.contains("[client]"), "the error says what is missing: \(wrongSide.log)")
    }

    /// A service's port is taken when the server starts: the server says so, serves the other
    /// service meanwhile, keeps retrying, and serves the first one once the port is free.
    func testBusyServicePortIsRetriedWhileOthersRun() throws {
        let echo = keep(try LocalService.echo())
        let busy = try Listener()
        let blocked = ServiceSpec("blocked", port: busy.port, localPort: echo.port)
        let free = ServiceSpec("free", port: Ports.free(), localPort: echo.port)
        let config = TunnelConfig(services: [blocked, free])
        let server = rathole("server", config: config.serverText)
        let client = rathole("client", config: config.clientText)
        try server.start()
        var ready = config
        ready.services = [free]
        try waitServerReady(server, ready)
        try client.start()
        try waitClientReady(client, server: server, config)
        XCTAssertTrue(server.waitForLog("cannot listen on 127.0.0.1:\(busy.port)", timeout: 20), "the busy port is logged")
        let line = server.lines(containing: "cannot listen on 127.0.0.1:\(busy.port)").first ?? ""
        XCTAssertTrue(line.contains("server.services.blocked.bind_addr") && line.contains("retrying"), "the error names the key: \(line)")
        for i in 0..<5 { try echoOnce(port: free.port, payload: Array("the free service \(i)".utf8)) }
        XCTAssertFalse(server.listens(onTCP: busy.port), "the server cannot have the busy port")

        busy.close()
        XCTAssertTrue(waitUntil(timeout: 30) { server.listens(onTCP: blocked.port) }, "the server never took the port once it was free")
        XCTAssertNotNil(secondsUntilForwarding(port: blocked.port, timeout: 30), "the retried service forwards")
        try echoOnce(port: free.port, payload: Array("the free service still".utf8))
        XCTAssertTrue(server.isRunning && client.isRunning)
    }
}
