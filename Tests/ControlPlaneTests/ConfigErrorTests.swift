// Config files that are wrong: every error is one line naming the file and the key.
import ControlPlane
import Foundation
import XCTest

final class ConfigErrorTests: XCTestCase {
    func testMissingToken() {
        let e = parseError(
            """
            [client]
            remote_addr = "example.com:2333"
            [client.services.ssh]
            local_addr = "127.0.0.1:22"
            """, file: "server.toml")
        XCTAssertEqual(
            e?.description,
            "server.toml: client.services.ssh.token: not set and client.default_token is not set either")
        let s = parseError(
            """
            [server]
            bind_addr = "0.0.0.0:2333"
            [server.services.web]
            bind_addr = "0.0.0.0:80"
            """)
        XCTAssertEqual(
            s?.description,
            "rathole.toml: server.services.web.token: not set and server.default_token is not set either")
    }

    func testUnknownKeys() {
        let cases: [(String, String)] = [
            (minimalServer + "\n[serverr]\nx = 1\n", "serverr"),
            ("verbose = true\n" + minimalServer, "verbose"),
            (minimalServer.replacingOccurrences(of: "default_token", with: "defualt_token"), "server.defualt_token"),
            (minimalServer + "\nnodelay = true\n", "server.services.ssh.nodelay"),  // fine: a service key
            (minimalServer + "\nlocal_addr = \"127.0.0.1:1\"\n", "server.services.ssh.local_addr"),
            (minimalClient + "\nbind_addr = \"127.0.0.1:1\"\n", "client.services.ssh.bind_addr"),
            (minimalServer + "\n[server.transport]\ntipe = \"tcp\"\n", "server.transport.tipe"),
            (minimalServer + "\n[server.transport.tcp]\nkeepalive = 1\n", "server.transport.tcp.keepalive"),
            (minimalServer + "\n[server.transport.tls]\nca = \"x\"\n", "server.transport.tls.ca"),
            (minimalServer + "\n[server.transport.noise]\npsk = \"x\"\n", "server.transport.noise.psk"),
            (minimalServer + "\n[server.transport.websocket]\ntls = false\npath = \"/\"\n", "server.transport.websocket.path"),
            (minimalServer + "\n[server.transport.quic]\n", "server.transport.quic"),
            (minimalClient + "\nheartbeat_interval = 3\n", "client.services.ssh.heartbeat_interval"),
            (
                minimalClient.replacingOccurrences(of: "default_token", with: "heartbeat_interval = 1\ndefault_token"),
                "client.heartbeat_interval"
            ),
        ]
        for (toml, key) in cases {
            if key == "server.services.ssh.nodelay" {
                XCTAssertNoThrow(try Config.parse(toml, file: "x.toml"))
                continue
            }
            let e = parseError(toml, file: "x.toml")
            XCTAssertEqual(e?.key, key)
            XCTAssertTrue(
                e?.description.hasPrefix("x.toml: \(key): unknown key (expected one of: ") ?? false,
                e?.description ?? "no error")
        }
    }

    func testRequiredKeys() {
        XCTAssertEqual(
            parseError("[server]\ndefault_token = \"t\"\n")?.description,
            "rathole.toml: server.bind_addr: required key is missing")
        XCTAssertEqual(
            parseError("[client]\ndefault_token = \"t\"\n")?.description,
            "rathole.toml: client.remote_addr: required key is missing")
        XCTAssertEqual(
            parseError(minimalServer.replacingOccurrences(of: "bind_addr = \"0.0.0.0:5202\"", with: "type = \"tcp\""))?.description,
            "rathole.toml: server.services.ssh.bind_addr: required key is missing")
        XCTAssertEqual(
            parseError(minimalClient.replacingOccurrences(of: "local_addr", with: "token"))?.description,
            "rathole.toml: client.services.ssh.local_addr: required key is missing")
        XCTAssertEqual(
            parseError(minimalServer + "\n[server.transport]\ntype = \"websocket\"\n[server.transport.websocket]\n")?.description,
            "rathole.toml: server.transport.websocket.tls: required key is missing")
        XCTAssertEqual(parseError("")?.description, "rathole.toml: neither [server] nor [client] is configured")
        XCTAssertEqual(parseError("# nothing\n")?.description, "rathole.toml: neither [server] nor [client] is configured")
    }

    func testWrongTypes() {
        let cases: [(String, String)] = [
            (
                minimalServer.replacingOccurrences(of: "[server.services.ssh]", with: "heartbeat_interval = \"30\"\n[server.services.ssh]"),
                "rathole.toml: server.heartbeat_interval: expected a non-negative integer, found a string"
            ),
            (
                minimalServer.replacingOccurrences(of: "[server.services.ssh]", with: "heartbeat_interval = -1\n[server.services.ssh]"),
                "rathole.toml: server.heartbeat_interval: expected a non-negative integer, found -1"
            ),
            (
                minimalServer.replacingOccurrences(of: "[server.services.ssh]", with: "heartbeat_interval = 1.5\n[server.services.ssh]"),
                "rathole.toml: server.heartbeat_interval: expected a non-negative integer, found a float"
            ),
            (minimalServer + "\nnodelay = \"yes\"\n", "rathole.toml: server.services.ssh.nodelay: expected a boolean, found a string"),
            (minimalServer + "\ntoken = 12345\n", "rathole.toml: server.services.ssh.token: expected a string, found an integer"),
            (
                minimalServer.replacingOccurrences(of: "bind_addr = \"0.0.0.0:2333\"", with: "bind_addr = 2333"),
                "rathole.toml: server.bind_addr: expected a string, found an integer"
            ),
            ("server = 1\n", "rathole.toml: server: expected a table, found an integer"),
            ("[server]\nbind_addr = \"0.0.0.0:1\"\nservices = []\n", "rathole.toml: server.services: expected a table, found an array"),
            (
                "[server]\nbind_addr = \"0.0.0.0:1\"\n[server.services]\nssh = \"x\"\n",
                "rathole.toml: server.services.ssh: expected a table, found a string"
            ),
            (
                "[server]\nbind_addr = \"0.0.0.0:1\"\n[[server.services]]\nbind_addr = \"0.0.0.0:2\"\n",
                "rathole.toml: server.services: expected a table, found an array"
            ),
            (
                minimalClient.replacingOccurrences(of: "[client.services.ssh]", with: "retry_interval = true\n[client.services.ssh]"),
                "rathole.toml: client.retry_interval: expected a non-negative integer, found a boolean"
            ),
            (minimalClient + "\nprefer_ipv6 = 1\n", "rathole.toml: client.services.ssh.prefer_ipv6: expected a boolean, found an integer"),
            (
                minimalClient + "\n[client.transport.websocket]\ntls = \"no\"\n",
                "rathole.toml: client.transport.websocket.tls: expected a boolean, found a string"
            ),
            (
                minimalClient + "\n[client.transport.tcp]\nkeepalive_secs = 1979-05-27\n",
                "rathole.toml: client.transport.tcp.keepalive_secs: expected a non-negative integer, found a date"
            ),
            (
                minimalClient + "\n[client.transport]\ntype = 1\n",
                "rathole.toml: client.transport.type: expected a string, found an integer"
            ),
        ]
        for (toml, message) in cases {
            XCTAssertEqual(parseError(toml)?.description, message)
        }
    }

    func testBadValues() {
        func server(bind: String) -> String {
            minimalServer.replacingOccurrences(of: "bind_addr = \"0.0.0.0:5202\"", with: "bind_addr = \"\(bind)\"")
        }
        func client(local: String) -> String {
            minimalClient.replacingOccurrences(of: "local_addr = \"127.0.0.1:22\"", with: "local_addr = \"\(local)\"")
        }
        let key = "rathole.toml: server.services.ssh.bind_addr: "
        XCTAssertEqual(
            parseError(server(bind: "localhost:5202"))?.description,
            key + "\"localhost:5202\": must be an IP address and a port, e.g. 0.0.0.0:2333 or [::]:2333")
        XCTAssertEqual(
            parseError(server(bind: "0.0.0.0"))?.description,
            key + "\"0.0.0.0\": the port is missing (expected host:port, e.g. 0.0.0.0:2333 or [::]:2333)")
        XCTAssertEqual(
            parseError(server(bind: "0.0.0.0:0"))?.description,
            key + "\"0.0.0.0:0\": the port must be a number from 1 to 65535")
        XCTAssertEqual(
            parseError(server(bind: "0.0.0.0:65536"))?.description,
            key + "\"0.0.0.0:65536\": the port must be a number from 1 to 65535")
        XCTAssertEqual(
            parseError(server(bind: "::1:5202"))?.description,
            key + "\"::1:5202\": an IPv6 address must be in brackets, e.g. [::1]:2333")
        XCTAssertEqual(parseError(server(bind: "[::g]:5202"))?.description, key + "\"[::g]:5202\": invalid IPv6 address")
        XCTAssertEqual(parseError(server(bind: "[::1:5202"))?.description, key + "\"[::1:5202\": unclosed '[' in an IPv6 address")
        XCTAssertEqual(parseError(server(bind: "300.1.1.1:5202"))?.description, key + "\"300.1.1.1:5202\": invalid IPv4 address")
        XCTAssertEqual(
            parseError(server(bind: ":5202"))?.description,
            key + "\":5202\": the host is missing (expected host:port, e.g. 0.0.0.0:2333 or [::]:2333)")
        XCTAssertNoThrow(try Config.parse(server(bind: "[::1]:5202"), file: "ok.toml"))

        let local = "rathole.toml: client.services.ssh.local_addr: "
        XCTAssertEqual(parseError(client(local: "my host:22"))?.description, local + "\"my host:22\": invalid host name")
        XCTAssertEqual(
            parseError(client(local: "localhost"))?.description,
            local + "\"localhost\": the port is missing (expected host:port, e.g. example.com:2333, 127.0.0.1:2333 or [::1]:2333)")
        XCTAssertEqual(
            parseError(client(local: "localhost:ssh"))?.description,
            local + "\"localhost:ssh\": the port must be a number from 1 to 65535")
        XCTAssertEqual(
            try Config.parse(client(local: "db.internal:5432"), file: "ok.toml").client?.services["ssh"]?.localAddr,
            HostPort(host: .name("db.internal"), port: 5432))
        XCTAssertEqual(
            parseError(minimalClient.replacingOccurrences(of: "example.com:2333", with: "example.com:"))?.description,
            "rathole.toml: client.remote_addr: \"example.com:\": the port must be a number from 1 to 65535")

        XCTAssertEqual(
            parseError(minimalServer + "\ntype = \"sctp\"\n")?.description,
            "rathole.toml: server.services.ssh.type: unknown service type \"sctp\" (expected \"tcp\" or \"udp\")")
        XCTAssertEqual(
            parseError(minimalClient + "\n[client.transport]\ntype = \"quic\"\n")?.description,
            "rathole.toml: client.transport.type: unknown transport type \"quic\" (expected \"tcp\", \"tls\", \"noise\" or \"websocket\")")
    }

    func testTransportRequirements() {
        let tlsServer = minimalServer + "\n[server.transport]\ntype = \"tls\"\n"
        XCTAssertEqual(
            parseError(tlsServer)?.description,
            "rathole.toml: server.transport.tls: required when server.transport.type is \"tls\"")
        XCTAssertEqual(
            parseError(tlsServer + "[server.transport.tls]\npkcs12_password = \"x\"\n")?.description,
            "rathole.toml: server.transport.tls.pkcs12: required when server.transport.type is \"tls\" on a server")
        XCTAssertEqual(
            parseError(tlsServer + "[server.transport.tls]\npkcs12 = \"id.pfx\"\n")?.description,
            "rathole.toml: server.transport.tls.pkcs12_password: required when server.transport.type is \"tls\" on a server")
        XCTAssertNoThrow(try Config.parse(tlsServer + "[server.transport.tls]\npkcs12 = \"a\"\npkcs12_password = \"b\"\n", file: "ok"))

        let tlsClient = minimalClient + "\n[client.transport]\ntype = \"tls\"\n"
        XCTAssertEqual(
            parseError(tlsClient + "[client.transport.tls]\nhostname = \"h\"\n")?.description,
            "rathole.toml: client.transport.tls.trusted_root: required when client.transport.type is \"tls\" on a client")
        XCTAssertNoThrow(try Config.parse(tlsClient + "[client.transport.tls]\ntrusted_root = \"ca.pem\"\n", file: "ok"))

        let wssClient = minimalClient + "\n[client.transport]\ntype = \"websocket\"\n[client.transport.websocket]\ntls = true\n"
        XCTAssertEqual(
            parseError(wssClient)?.description,
            "rathole.toml: client.transport.tls: required when client.transport.websocket.tls is true")
        XCTAssertEqual(
            parseError(minimalClient + "\n[client.transport]\ntype = \"websocket\"\n")?.description,
            "rathole.toml: client.transport.websocket: required when client.transport.type is \"websocket\"")
        XCTAssertEqual(
            parseError(minimalClient + "\n[client.transport]\ntype = \"noise\"\n")?.description,
            "rathole.toml: client.transport.noise: required when client.transport.type is \"noise\"")
        // Tables for other transport types than the one chosen are parsed but not required to be complete.
        XCTAssertNoThrow(try Config.parse(minimalServer + "\n[server.transport.tls]\nhostname = \"x\"\n", file: "ok"))
    }

    func testSyntaxError() {
        let e = parseError("[server]\nbind_addr = \"0.0.0.0:1\n", file: "broken.toml")
        XCTAssertEqual(e?.file, "broken.toml")
        XCTAssertNil(e?.key)
        XCTAssertTrue(e?.description.hasPrefix("broken.toml: invalid TOML at line 2, column ") ?? false, e?.description ?? "")
        XCTAssertFalse(e?.description.contains("\n") ?? true)
        let dup = parseError("[server]\nbind_addr = \"0.0.0.0:1\"\nbind_addr = \"0.0.0.0:2\"\n", file: "dup.toml")
        XCTAssertTrue(dup?.description.hasPrefix("dup.toml: invalid TOML at line 3") ?? false, dup?.description ?? "")
    }

    /// Fuzzer finds (config target, Tests/Fuzz/corpus/config/regression-*): toml++ (inside
    /// TOMLKit) asserts, aborting rathole in debug builds, when a table header's name starts with
    /// anything but a name character or a quote ("[`", "[.a]", "[=", "[" then the line's end), and
    /// on a control character there. TOML allows neither (nor any control character but tab, LF
    /// and CR), so TOMLPrecheck refuses them first, with line and column.
    func testWhatTOMLPlusPlusAssertsOnIsRefusedBeforeIt() {
        let cases: [(String, String)] = [
            ("n=\"\"\n[\u{15}", "line 2, column 2: control character U+0015 is not allowed"),
            ("[\u{7F}]", "line 1, column 2: control character U+007F is not allowed"),
            ("a=1\n[ \u{1}]", "line 2, column 3: control character U+0001 is not allowed"),
            ("[server]\nbind_addr = \"é\u{1B}\"", "line 2, column 15: control character U+001B is not allowed"),
            ("[`er", "line 1, column 2: expected a table name after '[', found '`'"),
            ("# c\n  [ .server]", "line 2, column 5: expected a table name after '[', found '.'"),
            ("[[=]]", "line 1, column 3: expected a table name after '[', found '='"),
            ("[server]\n[\n", "line 2, column 2: expected a table name after '[', found the end of the line"),
            ("[é]", "line 1, column 2: expected a table name after '[', found a non-ASCII character"),
            ("\u{FEFF}[`ebind", "line 1, column 2: expected a table name after '[', found '`'"),
            ("a = [}", "line 1, column 6: '}' does not close the '[' before it"),
            ("a = [1,\n  # c\n}", "line 3, column 1: '}' does not close the '[' before it"),
            ("a = {b = [1]]", "line 1, column 13: ']' does not close the '{' before it"),
            ("n=1234-56-78 9 ", "line 1, column 14: expected a time (HH:MM:SS) after the date"),
            ("n=4n=n--(-\u{FFFD}r 9 ", "line 1, column 14: expected a time (HH:MM:SS) after the date"),
            ("n=4n=n--(-dr 9 ", "line 1, column 14: expected a time (HH:MM:SS) after the date"),
            ("a = [12_34-5x-78 9]", "line 1, column 18: expected a time (HH:MM:SS) after the date"),
        ]
        for (toml, expected) in cases {
            let e = parseError(toml, file: "ctl.toml")
            XCTAssertEqual(e?.key, nil)
            XCTAssertEqual(e?.description, "ctl.toml: invalid TOML at \(expected)", toml.debugDescription)
        }
        // Valid TOML where such bytes are not a table header is parsed as before: arrays of
        // arrays and inline tables over several lines, strings and comments holding "[=".
        let valid = #"""
            [server]
            bind_addr = "0.0.0.0:1"
            default_token = """
            [=
            a "quoted" \""" text"""
            y = '''[=
            [=''''' # five quotes: the content ends in two
            x = [
              [{ a = 1 }],
              [ "]" ], # [=
            ]
            z = '[=' # ]
            [ "server" . 'services' . web ]
            bind_addr = "0.0.0.0:2"
            """#
        let e = parseError(valid, file: "ok.toml")
        XCTAssertEqual(
            e?.description,
            "ok.toml: server.x: unknown key (expected one of: bind_addr, default_token, heartbeat_interval, transport, services, api)")
        XCTAssertNoThrow(try Config.parse(minimalServer.replacingOccurrences(of: "\n", with: "\r\n") + "\t# tab\r\n", file: "crlf.toml"))
    }

    /// A value quoted into an error can hold a newline (a TOML escape, or a string in an API body);
    /// the error is still one line (api-body fuzz target find).
    func testQuotedValuesWithControlCharactersStayOneLine() {
        let toml = """
            [server]
            bind_addr = "0.0.0.0:2333"
            [server.services."a\\nb"]
            token = "t"
            bind_addr = "5.0\\nx\\u0001:8080"
            """
        let e = parseError(toml)
        XCTAssertEqual(e?.key, #"server.services."a\nb".bind_addr"#)
        XCTAssertEqual(e.map { "\($0)".contains("\n") }, false, "\(String(describing: e))")
        XCTAssertEqual(e.map { "\($0)".contains(#""5.0\nx\u{1}:8080""#) }, true, "\(String(describing: e))")
    }

    func testModeSelection() throws {
        let s = try Config.parse(minimalServer, file: "s.toml")
        XCTAssertEqual(try s.mode(forced: nil), .server)
        XCTAssertEqual(try s.mode(forced: .server), .server)
        XCTAssertThrowsError(try s.mode(forced: .client)) { e in
            XCTAssertEqual("\(e)", "s.toml: --client was given but there is no [client] section")
        }
        let c = try Config.parse(minimalClient, file: "c.toml")
        XCTAssertEqual(try c.mode(), .client)
        XCTAssertThrowsError(try c.mode(forced: .server)) { e in
            XCTAssertEqual("\(e)", "c.toml: --server was given but there is no [server] section")
        }
    }

    func testLoadErrors() throws {
        XCTAssertThrowsError(try Config.load(path: "/nonexistent/dir/rathole.toml")) { e in
            XCTAssertEqual("\(e)", "/nonexistent/dir/rathole.toml: cannot open the file: No such file or directory")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cp-config-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try Config.load(path: dir.path)) { e in
            XCTAssertTrue("\(e)".hasPrefix("\(dir.path): cannot "), "\(e)")
        }
        let bad = dir.appendingPathComponent("latin1.toml")
        try Data([0x5B, 0x73, 0xE9, 0x5D]).write(to: bad)
        XCTAssertThrowsError(try Config.load(path: bad.path)) { e in
            XCTAssertEqual("\(e)", "\(bad.path): the file is not valid UTF-8")
        }
        let good = dir.appendingPathComponent("server.toml")
        try minimalServer.write(to: good, atomically: true, encoding: .utf8)
        let c = try Config.load(path: good.path)
        XCTAssertEqual(c.file, good.path)
        XCTAssertEqual(c.server?.services.count, 1)
        let broken = dir.appendingPathComponent("broken.toml")
        try "[client]\n".write(to: broken, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Config.load(path: broken.path)) { e in
            XCTAssertEqual("\(e)", "\(broken.path): client.remote_addr: required key is missing")
        }
    }
}
