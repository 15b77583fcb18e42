// The HTTP API end to end: a real server and client, services added, changed and removed through
// the API on both ends, forwarding through them, restarts that keep them, the refusals, and the
// counters checked against the traffic the test sends.
import Foundation
import Glibc
import TestKit
import XCTest

final class APITests: EndToEndCase {
    private struct Ends {
        let server: RatholeProcess
        let client: RatholeProcess
        let config: TunnelConfig
        let serverAPI: UInt16
        let clientAPI: UInt16
        var control: UInt16 { config.controlPort }
    }

    /// A server and a client with the API on both, and `services` in their files; with services,
    /// both are ready (ports bound, control channels held).
    private func startWithAPI(_ services: [ServiceSpec] = []) throws -> Ends {
        let (serverAPI, clientAPI) = (Ports.free(), Ports.free())
        var config = TunnelConfig(services: services)
        config.serverTables = APIConfig.table("server", port: serverAPI)
        config.clientTables = APIConfig.table("client", port: clientAPI)
        let server = rathole("server", config: config.serverText)
        let client = rathole("client", config: config.clientText)
        try server.start()
        try waitServerReady(server, config)
        try waitForAPI(port: serverAPI)
        try client.start()
        try waitForAPI(port: clientAPI)
        if !services.isEmpty { try waitClientReady(client, server: server, config) }
        return Ends(server: server, client: client, config: config, serverAPI: serverAPI, clientAPI: clientAPI)
    }

    private func put(_ port: UInt16, _ name: String, _ body: [String: Any], token: String? = APIConfig.token) throws -> HTTPReply {
        try HTTP.request(port: port, "PUT", "/api/v1/services/\(name)", token: token, body: HTTP.json(body))
    }

    private func restart(_ p: RatholeProcess, api: UInt16) throws {
        p.signal(SIGTERM)
        XCTAssertEqual(p.waitForExit(timeout: 15)?.description, "exit code 0", "\(p.name) stops gracefully")
        try p.start()
        try waitForAPI(port: api)
    }

    // MARK: Add, forward, restart, remove

    func testServiceAddedOnBothEndsForwardsSurvivesRestartAndIsRemoved() throws {
        let ends = try startWithAPI()
        let echo = keep(try LocalService.echo())
        let port = Ports.free()

        let onServer = try put(
            ends.serverAPI, "web", ["type": "tcp", "token": "web-token", "bind_addr": "127.0.0.1:\(port)", "nodelay": true])
        XCTAssertEqual(onServer.status, 201, onServer.text)
        XCTAssertEqual(onServer.object["bind_addr"] as? String, "127.0.0.1:\(port)")
        XCTAssertNil(onServer.object["token"], "the token is never shown")
        let onClient = try put(ends.clientAPI, "web", ["token": "web-token", "local_addr": "127.0.0.1:\(echo.port)"])
        XCTAssertEqual(onClient.status, 201, onClient.text)
        XCTAssertTrue(waitUntilForwarding(port: port, timeout: 15), "the service added through the API forwards")
        try echoOnce(port: port, payload: Array("through the API's service".utf8))

        let shown = try HTTP.request(port: ends.clientAPI, "GET", "/api/v1/services/web", token: APIConfig.token)
        XCTAssertEqual(shown.status, 200)
        XCTAssertEqual(shown.object["control_channel_up"] as? Bool, true)
        XCTAssertEqual(shown.object["control_channel_peer"] as? String, "127.0.0.1:\(ends.control)")
        XCTAssertEqual(shown.object["local_addr"] as? String, "127.0.0.1:\(echo.port)")
        let serverSide = try HTTP.request(port: ends.serverAPI, "GET", "/api/v1/services", token: APIConfig.token)
        let listed = try XCTUnwrap((serverSide.object["services"] as? [[String: Any]])?.first)
        XCTAssertEqual(listed["name"] as? String, "web")
        XCTAssertEqual(listed["control_channel_up"] as? Bool, true)
        XCTAssertTrue((listed["control_channel_peer"] as? String)?.hasPrefix("127.0.0.1:") == true)

        // Written to both files; the file watcher, woken by the write, finds nothing left to apply.
        let serverFile = try String(contentsOfFile: ends.server.configPath, encoding: .utf8)
        XCTAssertTrue(
            serverFile.contains(
                "[server.services.web]\ntype = \"tcp\"\ntoken = \"web-token\"\nbind_addr = \"127.0.0.1:\(port)\"\nnodelay = true\n"),
            serverFile)
        let clientFile = try String(contentsOfFile: ends.client.configPath, encoding: .utf8)
        XCTAssertTrue(
            clientFile.contains("[client.services.web]\ntoken = \"web-token\"\nlocal_addr = \"127.0.0.1:\(echo.port)\"\n"), clientFile)
        sleepSeconds(1.5)
        for p in [ends.server, ends.client] {
            XCTAssertEqual(p.occurrences(of: "service web added"), 1, "\(p.name): applied once")
            XCTAssertEqual(p.occurrences(of: "service web changed"), 0, "\(p.name): not applied again by the watcher")
        }

        // A restart of both keeps the service.
        try restart(ends.server, api: ends.serverAPI)
        try restart(ends.client, api: ends.clientAPI)
        XCTAssertTrue(waitUntilForwarding(port: port, timeout: 20), "the service is still there after a restart")

        // Removed on the server: its port closes at once.
        let removed = try HTTP.request(port: ends.serverAPI, "DELETE", "/api/v1/services/web", token: APIConfig.token)
        XCTAssertEqual(removed.status, 204, removed.text)
        XCTAssertTrue(waitUntil(timeout: 5) { !ProcFS.tcpListening(port: port) }, "the removed service's port closes")
        XCTAssertThrowsError(try Conn.connect(port: port))
        XCTAssertEqual(try HTTP.request(port: ends.serverAPI, "GET", "/api/v1/services/web", token: APIConfig.token).status, 404)
        XCTAssertEqual(try HTTP.request(port: ends.clientAPI, "DELETE", "/api/v1/services/web", token: APIConfig.token).status, 204)
        XCTAssertFalse(try String(contentsOfFile: ends.server.configPath, encoding: .utf8).contains("web"))
        XCTAssertFalse(try String(contentsOfFile: ends.client.configPath, encoding: .utf8).contains("web"))
        XCTAssertTrue(ends.server.waitForLog("DELETE /api/v1/services/web -> 204", timeout: 5))

        // And a restart does not bring it back.
        try restart(ends.server, api: ends.serverAPI)
        let after = try HTTP.request(port: ends.serverAPI, "GET", "/api/v1/services", token: APIConfig.token)
        XCTAssertEqual((after.object["services"] as? [Any])?.count, 0, after.text)
        XCTAssertFalse(ProcFS.tcpListening(port: port))
    }

    func testChangedServiceMovesToItsNewPortAndKeepsTheFilesComments() throws {
        let echo = keep(try LocalService.echo())
        let first = ServiceSpec("svc", port: Ports.free(), localPort: echo.port)
        let ends = try startWithAPI([first])
        let text =
            "# operator's note\n"
            + (try String(contentsOfFile: ends.server.configPath, encoding: .utf8))
            .replacingOccurrences(of: "type = \"tcp\"\n", with: "type = \"tcp\"  # keep tcp\n")
        try ConfigFile.rewriteInPlace(ends.server.configPath, text)
        sleepSeconds(1)

        let moved = Ports.free()
        let reply = try put(ends.serverAPI, "svc", ["type": "tcp", "token": TunnelConfig.defaultToken, "bind_addr": "127.0.0.1:\(moved)"])
        XCTAssertEqual(reply.status, 200, reply.text)
        XCTAssertTrue(waitUntilForwarding(port: moved, timeout: 15))
        XCTAssertTrue(waitUntil(timeout: 5) { !ProcFS.tcpListening(port: first.port) }, "the old port closed")
        let file = try String(contentsOfFile: ends.server.configPath, encoding: .utf8)
        XCTAssertTrue(file.hasPrefix("# operator's note\n"), file)
        XCTAssertTrue(file.contains("type = \"tcp\"  # keep tcp\n"), file)
        XCTAssertTrue(file.contains("bind_addr = \"127.0.0.1:\(moved)\""), file)
        XCTAssertEqual(ends.server.occurrences(of: "service svc changed: restarted"), 1)

        // The same definition again: 200, nothing restarted.
        let again = try put(ends.serverAPI, "svc", ["type": "tcp", "token": TunnelConfig.defaultToken, "bind_addr": "127.0.0.1:\(moved)"])
        XCTAssertEqual(again.status, 200)
        sleepSeconds(1)
        XCTAssertEqual(ends.server.occurrences(of: "service svc changed: restarted"), 1)
    }

    func testInlineTableLayoutIsRewrittenWholeAndStillParses() throws {
        let (control, api) = (Ports.free(), Ports.free())
        let old = Ports.free()
        let server = rathole(
            "server",
            config: """
                [server]
                bind_addr = "127.0.0.1:\(control)"
                [server.services]
                svc = { token = "t", bind_addr = "127.0.0.1:\(old)" }
                \(APIConfig.table("server", port: api))
                """)
        try server.start()
        try waitForAPI(port: api)
        let moved = Ports.free()
        let reply = try put(api, "svc", ["token": "t", "bind_addr": "127.0.0.1:\(moved)"])
        XCTAssertEqual(reply.status, 200, reply.text)
        XCTAssertTrue(server.waitForLog("comments and layout were not kept", timeout: 5))
        XCTAssertTrue(waitUntil(timeout: 10) { ProcFS.tcpListening(port: moved) })
        try restart(server, api: api)
        XCTAssertTrue(waitUntil(timeout: 10) { ProcFS.tcpListening(port: moved) }, "the rewritten file gives the same service")
    }

    // MARK: Refusals

    func testRefusalsChangeNothing() throws {
        let ends = try startWithAPI()
        let before = try String(contentsOfFile: ends.server.configPath, encoding: .utf8)
        let port = Ports.free()
        let good: [String: Any] = ["token": "t", "bind_addr": "127.0.0.1:\(port)"]
        func status(_ method: String, _ path: String, token: String? = APIConfig.token, body: [UInt8]? = nil) throws -> HTTPReply {
            try HTTP.request(port: ends.serverAPI, method, path, token: token, body: body)
        }

        // 401: no token, a wrong one, one a byte short; a good body is not applied.
        for token in [nil, "wrong", String(APIConfig.token.dropLast())] {
            let r = try put(ends.serverAPI, "svc", good, token: token)
            XCTAssertEqual(r.status, 401, "token \(token ?? "none")")
            XCTAssertEqual(r.headers["www-authenticate"], "Bearer")
            XCTAssertEqual(try status("GET", "/api/v1/services", token: token).status, 401)
            XCTAssertEqual(try status("GET", "/metrics", token: token).status, 401)
        }
        XCTAssertEqual(try status("GET", "/healthz", token: nil).text, "ok\n")

        // 400, naming the field.
        func refused(_ body: [UInt8], field: String?, _ why: String) throws {
            let r = try status("PUT", "/api/v1/services/svc", body: body)
            XCTAssertEqual(r.status, 400, why)
            XCTAssertEqual(r.object["field"] as? String, field, "\(why): \(r.text)")
            XCTAssertNotNil(r.object["error"] as? String)
        }
        try refused(Array("{\"token\": \"t\",".utf8), field: nil, "malformed JSON")
        try refused(HTTP.json(["token": "t", "bind_addr": "127.0.0.1:\(port)", "colour": "red"]), field: "colour", "unknown field")
        try refused(HTTP.json(["token": "t", "bind_addr": "example.com:80"]), field: "bind_addr", "a name where an IP is needed")
        try refused(HTTP.json(["token": "t", "bind_addr": "127.0.0.1:70000"]), field: "bind_addr", "a port out of range")
        try refused(HTTP.json(["bind_addr": "127.0.0.1:\(port)"]), field: "token", "no token")
        try refused(HTTP.json(["token": "t", "bind_addr": "127.0.0.1:\(port)", "type": "sctp"]), field: "type", "unknown type")
        try refused(HTTP.json(["token": "t", "bind_addr": "127.0.0.1:\(port)", "nodelay": "yes"]), field: "nodelay", "wrong type")
        try refused(HTTP.json(["token": "t", "local_addr": "127.0.0.1:\(port)"]), field: "local_addr", "a client's field")

        // 413 past 64 KiB; 404 for unknown names and paths; 405 with the methods allowed.
        let big = HTTP.json(["token": String(repeating: "x", count: 70_000), "bind_addr": "127.0.0.1:\(port)"])
        XCTAssertEqual(try status("PUT", "/api/v1/services/svc", body: big).status, 413)
        XCTAssertEqual(try status("GET", "/api/v1/services/nothing").status, 404)
        XCTAssertEqual(try status("DELETE", "/api/v1/services/nothing").status, 404)
        XCTAssertEqual(try status("GET", "/api/v2/other").status, 404)
        let patch = try status("PATCH", "/api/v1/services/svc", body: HTTP.json(good))
        XCTAssertEqual(patch.status, 405)
        XCTAssertEqual(patch.headers["allow"], "GET, PUT, DELETE")

        XCTAssertEqual(try String(contentsOfFile: ends.server.configPath, encoding: .utf8), before, "the file is untouched")
        XCTAssertFalse(ProcFS.tcpListening(port: port))
        XCTAssertEqual(ends.server.occurrences(of: "service svc added"), 0)
        // One line per request, naming the peer, the token never.
        XCTAssertTrue(ends.server.waitForLog("PATCH /api/v1/services/svc -> 405", timeout: 5))
        let lines = ends.server.lines(containing: "api: 127.0.0.1:").filter { !$0.contains("/healthz") }
        XCTAssertEqual(lines.count, 22, lines.joined(separator: "\n"))
        XCTAssertEqual(lines.filter { $0.contains("-> 401") }.count, 9)
        XCTAssertFalse(ends.server.log.contains(APIConfig.token))
    }

    func testBadApiTablesStopTheStart() throws {
        let control = Ports.free()
        let missing = rathole(
            "missing", config: "[server]\nbind_addr = \"127.0.0.1:\(control)\"\n[server.api]\nbind_addr = \"127.0.0.1:\(Ports.free())\"\n")
        try missing.start()
        XCTAssertEqual(missing.waitForExit(timeout: 15)?.description, "exit code 1")
        XCTAssertTrue(missing.log.contains("server.api.token: required key is missing"), missing.log)

        let busy = try Listener()
        defer { busy.shutdown() }
        var config = TunnelConfig(controlPort: control, services: [])
        config.clientTables = APIConfig.table("client", port: busy.port)
        let taken = rathole("taken", config: config.clientText)
        try taken.start()
        XCTAssertEqual(taken.waitForExit(timeout: 15)?.description, "exit code 1")
        XCTAssertTrue(taken.log.contains("(client.api.bind_addr)"), taken.log)
    }

    func testApiTableFollowsReloads() throws {
        let ends = try startWithAPI()
        let moved = Ports.free()
        var config = ends.config
        config.serverTables = APIConfig.table("server", port: moved, token: "the-new-token")
        try ConfigFile.rewriteInPlace(ends.server.configPath, config.serverText)
        try waitForAPI(port: moved)
        XCTAssertEqual(try HTTP.request(port: moved, "GET", "/api/v1/services", token: "the-new-token").status, 200)
        XCTAssertEqual(try HTTP.request(port: moved, "GET", "/api/v1/services", token: APIConfig.token).status, 401)
        XCTAssertTrue(waitUntil(timeout: 5) { !ProcFS.tcpListening(port: ends.serverAPI) }, "the old API port closed")

        // Without the table the API stops; the tunnel runs on.
        config.serverTables = ""
        try ConfigFile.rewriteInPlace(ends.server.configPath, config.serverText)
        XCTAssertTrue(waitUntil(timeout: 10) { !ProcFS.tcpListening(port: moved) }, "the API stopped")
        XCTAssertTrue(ends.server.isRunning)
        XCTAssertTrue(ends.server.listens(onTCP: ends.control))
    }

    // MARK: Counters

    func testCountersMatchTheTrafficOnBothEnds() throws {
        let echo = keep(try LocalService.echo())
        let svc = ServiceSpec("count", port: Ports.free(), localPort: echo.port)
        let ends = try startWithAPI([svc])
        XCTAssertTrue(waitUntilForwarding(port: svc.port, timeout: 15))
        func counters(_ api: UInt16) throws -> [String: Any] {
            try HTTP.request(port: api, "GET", "/api/v1/services/count", token: APIConfig.token).object
        }
        func settled(_ api: UInt16) throws -> [String: Any] {
            var last: [String: Any] = [:]
            _ = waitUntil(timeout: 10) {
                last = (try? counters(api)) ?? [:]
                return (last["connections_active"] as? Int) == 0
            }
            return last
        }
        let before = (try settled(ends.serverAPI), try settled(ends.clientAPI))

        // Five connections of different sizes, each echoed whole, then closed.
        let sizes = [1, 1000, 65_536, 300_000, 2 << 20]
        for (i, size) in sizes.enumerated() {
            let payload = patternBytes(count: size, seed: UInt64(i + 1))
            let c = try Conn.connect(port: svc.port)
            try c.send(payload)
            XCTAssertEqual(try c.readExact(size, timeout: 30), payload)
            c.close()
        }
        let total = sizes.reduce(0, +)
        for (api, start, side) in [(ends.serverAPI, before.0, "server"), (ends.clientAPI, before.1, "client")] {
            let after = try settled(api)
            func delta(_ key: String) -> Int { ((after[key] as? Int) ?? -1) - ((start[key] as? Int) ?? 0) }
            XCTAssertEqual(delta("connections_total"), sizes.count, "\(side): \(after)")
            XCTAssertEqual(after["connections_active"] as? Int, 0, side)
            XCTAssertEqual(delta("bytes_in"), total, "\(side): bytes toward the service")
            XCTAssertEqual(delta("bytes_out"), total, "\(side): bytes back")
            XCTAssertEqual(after["control_channel_up"] as? Bool, true)

            // The Prometheus text says the same.
            let m = try metrics(port: api)
            XCTAssertEqual(m["rathole_connections_total{service=\"count\"}"], Double(after["connections_total"] as? Int ?? -1), side)
            XCTAssertEqual(m["rathole_bytes_total{service=\"count\",direction=\"in\"}"], Double(after["bytes_in"] as? Int ?? -1), side)
            XCTAssertEqual(m["rathole_bytes_total{service=\"count\",direction=\"out\"}"], Double(after["bytes_out"] as? Int ?? -1), side)
            XCTAssertEqual(m["rathole_connections_active{service=\"count\"}"], 0, side)
            XCTAssertEqual(m["rathole_control_channel_up{service=\"count\"}"], 1, side)
            XCTAssertGreaterThan(m["process_open_fds"] ?? 0, 5, side)
            XCTAssertGreaterThan(m["process_resident_memory_bytes"] ?? 0, 1_048_576, side)
        }
        // The server keeps idle data channels ready for the next visitor.
        XCTAssertTrue(
            waitUntil(timeout: 10) { ((try? metrics(port: ends.serverAPI))?["rathole_data_channels_idle{service=\"count\"}"] ?? 0) > 0 })
    }

    func testHandshakeFailuresAreCountedByReason() throws {
        let echo = keep(try LocalService.echo())
        let svc = ServiceSpec("svc", port: Ports.free(), localPort: echo.port)
        let ends = try startWithAPI([svc])
        let wrong = try RawClient.handshake(port: ends.control, service: "svc", token: "not-the-token")
        wrong.conn.close()
        let unknown = try RawClient.handshake(port: ends.control, service: "nobody", token: "x")
        unknown.conn.close()
        let garbage = try Conn.connect(port: ends.control)
        try garbage.send(Array(repeating: 0x41, count: 100))
        _ = garbage.waitClosed(timeout: 10)
        garbage.close()
        XCTAssertTrue(
            waitUntil(timeout: 10) {
                let m = (try? self.metrics(port: ends.serverAPI)) ?? [:]
                return m["rathole_handshake_failures_total{reason=\"wrong_token\"}"] == 1
                    && m["rathole_handshake_failures_total{reason=\"unknown_service\"}"] == 1
                    && m["rathole_handshake_failures_total{reason=\"protocol\"}"] == 1
            }, "\((try? metrics(port: ends.serverAPI))?.filter { $0.key.contains("handshake") } ?? [:])")
    }

    func testUDPDatagramsAreCounted() throws {
        let echo = keep(try UDPEcho())
        let svc = ServiceSpec("dns", type: "udp", port: Ports.freeUDP(), localPort: echo.port)
        let ends = try startWithAPI([svc])
        let socket = try UDPSocket()
        cleanup { socket.close() }
        XCTAssertNotNil(socket.roundTrip(Array("warm".utf8), toPort: svc.port, attempts: 20, timeout: 1), "the UDP service forwards")
        let start = try metrics(port: ends.serverAPI)
        for i in 0..<10 {
            XCTAssertEqual(
                socket.roundTrip(Array("datagram \(i)".utf8), toPort: svc.port, attempts: 1, timeout: 5), Array("datagram \(i)".utf8))
        }
        let key = { (direction: String) in "rathole_udp_datagrams_total{service=\"dns\",direction=\"\(direction)\"}" }
        XCTAssertTrue(
            waitUntil(timeout: 5) { ((try? self.metrics(port: ends.serverAPI))?[key("out")] ?? 0) - (start[key("out")] ?? 0) == 10 })
        let end = try metrics(port: ends.serverAPI)
        XCTAssertEqual((end[key("in")] ?? 0) - (start[key("in")] ?? 0), 10)
        let client = try metrics(port: ends.clientAPI)
        XCTAssertGreaterThanOrEqual(client[key("in")] ?? 0, 11)
        XCTAssertEqual(client[key("in")], client[key("out")])
    }
}
