import XCTest

// What a hot reload does with an edited file: which services it adds, removes or restarts (the diff
// Instance applies), when it restarts the whole server or client instead, and the grace it gives
// the connections of a service that goes.
@testable import ControlPlane

final class ReloadDiffTests: XCTestCase {
    private let server = """
        [server]
        bind_addr = "0.0.0.0:2333"
        default_token = "t1"
        heartbeat_interval = 30
        [server.services.a]
        bind_addr = "0.0.0.0:1001"
        [server.services.b]
        bind_addr = "0.0.0.0:1002"
        token = "own"
        """

    private let client = """
        [client]
        remote_addr = "example.com:2333"
        default_token = "t1"
        retry_interval = 1
        [client.services.a]
        local_addr = "127.0.0.1:1001"
        [client.services.b]
        local_addr = "127.0.0.1:1002"
        token = "own"
        retry_interval = 7
        """

    private func serverConfig(_ text: String) throws -> ServerConfig {
        try XCTUnwrap(try Config.parse(text, file: "r.toml").server)
    }

    private func clientConfig(_ text: String) throws -> ClientConfig {
        try XCTUnwrap(try Config.parse(text, file: "r.toml").client)
    }

    /// The changes as "added a", "removed b", "changed c", in the order reload applies them.
    private func changes<S>(_ list: [ServiceChange<S>], name: (S) -> String) -> [String] {
        list.map {
            switch $0 {
            case .added(let s): return "added \(name(s))"
            case .removed(let n): return "removed \(n)"
            case .changed(let s): return "changed \(name(s))"
            }
        }
    }

    private func serverDiff(_ old: String, _ new: String) throws -> [String] {
        changes(diff(try serverConfig(old).services, try serverConfig(new).services), name: \.name)
    }

    private func clientDiff(_ old: String, _ new: String) throws -> [String] {
        changes(diff(try clientConfig(old).services, try clientConfig(new).services), name: \.name)
    }

    func testUnchangedFileChangesNothing() throws {
        XCTAssertEqual(try serverDiff(server, server), [])
        XCTAssertEqual(try clientDiff(client, client), [])
        XCTAssertFalse(try serverConfig(server).needsRestart(from: serverConfig(server)))
        XCTAssertFalse(try clientConfig(client).needsRestart(from: clientConfig(client)))
    }

    /// A change to one service restarts that service only.
    func testChangedServiceOnly() throws {
        XCTAssertEqual(try serverDiff(server, server.replacingOccurrences(of: "1002", with: "1003")), ["changed b"])
        XCTAssertEqual(
            try clientDiff(client, client.replacingOccurrences(of: "127.0.0.1:1001", with: "127.0.0.1:1009")),
            ["changed a"])
        XCTAssertEqual(try serverDiff(server, server + "\nnodelay = false\n"), ["changed b"])
    }

    /// Removed services go first, then added and changed ones, each in name order.
    func testAddedAndRemoved() throws {
        let edited =
            server.replacingOccurrences(of: "[server.services.a]", with: "[server.services.z]") + """

                [server.services.c]
                bind_addr = "0.0.0.0:1004"
                """
        XCTAssertEqual(try serverDiff(server, edited), ["removed a", "added c", "added z"])
    }

    /// default_token reaches every service that uses it, and only those.
    func testDefaultTokenChangesTheServicesThatUseIt() throws {
        XCTAssertEqual(try serverDiff(server, server.replacingOccurrences(of: "\"t1\"", with: "\"t2\"")), ["changed a"])
        XCTAssertEqual(try clientDiff(client, client.replacingOccurrences(of: "\"t1\"", with: "\"t2\"")), ["changed a"])
        XCTAssertFalse(
            try serverConfig(server.replacingOccurrences(of: "\"t1\"", with: "\"t2\""))
                .needsRestart(from: serverConfig(server)))
    }

    /// The top-level retry_interval reaches the client services without their own.
    func testRetryIntervalChangesTheServicesThatUseIt() throws {
        let edited = client.replacingOccurrences(of: "retry_interval = 1", with: "retry_interval = 5")
        XCTAssertEqual(try clientDiff(client, edited), ["changed a"])
        XCTAssertFalse(try clientConfig(edited).needsRestart(from: clientConfig(client)))
    }

    /// The server's own settings restart the whole server; anything in a service does not.
    func testServerRestartKeys() throws {
        let old = try serverConfig(server)
        for (what, edited) in [
            ("bind_addr", server.replacingOccurrences(of: "0.0.0.0:2333", with: "0.0.0.0:2334")),
            ("heartbeat_interval", server.replacingOccurrences(of: "heartbeat_interval = 30", with: "heartbeat_interval = 5")),
            (
                "transport",
                server + "\n[server.transport]\ntype = \"noise\"\n[server.transport.noise]\n"
                    + "local_private_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\n"
            ),
            ("transport.tcp", server + "\n[server.transport.tcp]\nkeepalive_secs = 5\n"),
        ] {
            XCTAssertTrue(try serverConfig(edited).needsRestart(from: old), what)
        }
        XCTAssertFalse(try serverConfig(server.replacingOccurrences(of: "1001", with: "1011")).needsRestart(from: old))
    }

    /// The client's own settings restart the whole client.
    func testClientRestartKeys() throws {
        let old = try clientConfig(client)
        for (what, edited) in [
            ("remote_addr", client.replacingOccurrences(of: "example.com:2333", with: "example.org:2333")),
            ("heartbeat_timeout", client.replacingOccurrences(of: "retry_interval = 1", with: "retry_interval = 1\nheartbeat_timeout = 9")),
            ("prefer_ipv6", client.replacingOccurrences(of: "retry_interval = 1", with: "retry_interval = 1\nprefer_ipv6 = true")),
            ("transport", client + "\n[client.transport.tcp]\nnodelay = false\n"),
        ] {
            XCTAssertTrue(try clientConfig(edited).needsRestart(from: old), what)
        }
        XCTAssertFalse(try clientConfig(client.replacingOccurrences(of: "1002", with: "1012")).needsRestart(from: old))
    }

    /// 30 s unless RATHOLE_RELOAD_GRACE_SECS says otherwise (tests set it).
    func testGrace() {
        XCTAssertEqual(Instance.defaultGrace, .seconds(30))
        XCTAssertEqual(Instance.graceFromEnvironment(nil), .seconds(30))
        XCTAssertEqual(Instance.graceFromEnvironment("3"), .seconds(3))
        XCTAssertEqual(Instance.graceFromEnvironment("0"), .seconds(0))
        for bad in ["", "-1", "soon", "1.5"] {
            XCTAssertEqual(Instance.graceFromEnvironment(bad), .seconds(30), bad)
        }
    }
}
