// Config files: the recorded scenarios' configs, defaults, every key, masked tokens, proxy URLs.
import ControlPlane
import Foundation
import XCTest

/// The error `parse` gives for `toml`, or nil (with a test failure) if it parses.
func parseError(_ toml: String, file: String = "rathole.toml", line: UInt = #line) -> ConfigError? {
    do {
        let c = try Config.parse(toml, file: file)
        XCTFail("expected an error, parsed \(c)", line: line)
        return nil
    } catch {
        return error
    }
}

let minimalServer = """
    [server]
    bind_addr = "0.0.0.0:2333"
    default_token = "secret-default"

    [server.services.ssh]
    bind_addr = "0.0.0.0:5202"
    """

let minimalClient = """
    [client]
    remote_addr = "example.com:2333"
    default_token = "secret-default"

    [client.services.ssh]
    local_addr = "127.0.0.1:22"
    """

final class ConfigTests: XCTestCase {
    // MARK: The recorded scenarios' configs

    func testAllWireConfigsParse() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: wireTranscriptsDirectory.path)
            .filter { $0.hasSuffix(".toml") }.sorted()
        XCTAssertEqual(files.count, 14)
        for f in files {
            let c = try Config.load(path: wireTranscriptsDirectory.appendingPathComponent(f).path)
            let expected: Mode = f.hasSuffix(".server.toml") ? .server : .client
            XCTAssertEqual(try c.mode(forced: nil), expected, f)
            XCTAssertEqual(try c.mode(forced: expected), expected, f)
        }
    }

    func testScenario01Configs() throws {
        let s = try Config.load(path: wireTranscriptsDirectory.appendingPathComponent("01-tcp-session.server.toml").path)
        let server = try XCTUnwrap(s.server)
        XCTAssertNil(s.client)
        XCTAssertEqual(server.bindAddr, .v4(.loopback, port: 2333))
        XCTAssertEqual(server.defaultToken?.value, "wire_token_1")
        XCTAssertEqual(server.heartbeatInterval, 30)
        XCTAssertEqual(server.transport, TransportConfig())
        XCTAssertEqual(
            server.services,
            [
                "echo": ServerServiceConfig(
                    name: "echo", type: .tcp, bindAddr: .v4(.loopback, port: 5202), token: "wire_token_1", nodelay: true)
            ])
        XCTAssertEqual(server.services["echo"]?.digest, Digest.service(named: "echo"))

        let c = try Config.load(path: wireTranscriptsDirectory.appendingPathComponent("01-tcp-session.client.toml").path)
        let client = try XCTUnwrap(c.client)
        XCTAssertEqual(client.remoteAddr, HostPort(host: .ipv4(.loopback), port: 2334))
        XCTAssertEqual(client.heartbeatTimeout, 40)
        XCTAssertEqual(client.retryInterval, 1)
        XCTAssertFalse(client.preferIPv6)
        XCTAssertEqual(
            client.services["echo"],
            ClientServiceConfig(
                name: "echo", type: .tcp, localAddr: HostPort(host: .ipv4(.loopback), port: 7000), token: "wire_token_1",
                nodelay: true, retryInterval: 1, preferIPv6: false))
    }

    func testScenarioSpecifics() throws {
        func load(_ name: String) throws -> Config {
            try Config.load(path: wireTranscriptsDirectory.appendingPathComponent(name).path)
        }
        XCTAssertEqual(try load("04-udp-session.server.toml").server?.services["uecho"]?.type, .udp)
        XCTAssertEqual(try load("04-udp-session.client.toml").client?.services["uecho"]?.type, .udp)
        XCTAssertEqual(try load("05-heartbeat.server.toml").server?.heartbeatInterval, 1)
        XCTAssertEqual(try load("05-heartbeat.client.toml").client?.heartbeatTimeout, 5)

        let ns = try XCTUnwrap(try load("06-noise-nk.server.toml").server?.transport)
        XCTAssertEqual(ns.type, .noise)
        XCTAssertEqual(ns.noise?.pattern, "Noise_NK_25519_ChaChaPoly_BLAKE2s")
        XCTAssertEqual(ns.noise?.localPrivateKey?.value, "9loWbcY+DQrEXYfQcYwVqKdvttfzU5vz+1Jku0vs8nI=")
        XCTAssertNil(ns.noise?.remotePublicKey)
        let nc = try XCTUnwrap(try load("06-noise-nk.client.toml").client?.transport)
        XCTAssertEqual(nc.noise?.remotePublicKey, "lO4D5NqVgsbFSyzQ4Z65RWehCXXI1DNNKW9yoKMU0iI=")

        let ws = try XCTUnwrap(try load("07-websocket.client.toml").client?.transport)
        XCTAssertEqual(ws.type, .websocket)
        XCTAssertEqual(ws.websocket, WebsocketConfig(tls: false))
    }

    // MARK: Defaults and every key

    func testDefaults() throws {
        let c = try Config.parse(minimalServer + "\n" + minimalClient, file: "both.toml")
        let s = try XCTUnwrap(c.server)
        XCTAssertEqual(s.heartbeatInterval, 30)
        XCTAssertEqual(s.transport.type, .tcp)
        XCTAssertEqual(s.transport.tcp, TcpConfig(nodelay: true, keepaliveSecs: 20, keepaliveInterval: 8, proxy: nil))
        XCTAssertNil(s.transport.tls)
        XCTAssertNil(s.transport.noise)
        XCTAssertNil(s.transport.websocket)
        XCTAssertEqual(s.services["ssh"]?.type, .tcp)
        XCTAssertEqual(s.services["ssh"]?.token.value, "secret-default")
        XCTAssertEqual(s.services["ssh"]?.nodelay, true)
        let cl = try XCTUnwrap(c.client)
        XCTAssertEqual(cl.heartbeatTimeout, 40)
        XCTAssertEqual(cl.retryInterval, 1)
        XCTAssertEqual(cl.remoteAddr.host, .name("example.com"))
        XCTAssertEqual(cl.remoteAddr.hostString, "example.com")
        XCTAssertNil(cl.remoteAddr.literalAddress)
        XCTAssertEqual(cl.tlsHostname, "example.com")
        XCTAssertEqual(cl.services["ssh"]?.retryInterval, 1)
        // No services at all is fine (hot reload may add them).
        let empty = try Config.parse("[server]\nbind_addr = \"[::]:2333\"\n", file: "e.toml")
        XCTAssertEqual(empty.server?.services, [:])
        XCTAssertEqual(empty.server?.bindAddr, .v6(.any, port: 2333))
        // A transport table without a type is tcp.
        let t = try Config.parse("[server]\nbind_addr = \"0.0.0.0:1\"\n[server.transport.tcp]\nnodelay = false\n", file: "t.toml")
        XCTAssertEqual(t.server?.transport.type, .tcp)
        XCTAssertEqual(t.server?.transport.tcp.nodelay, false)
        XCTAssertEqual(t.server?.transport.tcp.keepaliveSecs, 20)
        let n = try Config.parse(
            "[client]\nremote_addr = \"h:1\"\n[client.transport]\ntype = \"noise\"\n[client.transport.noise]\n",
            file: "n.toml")
        XCTAssertEqual(n.client?.transport.noise, NoiseConfig(pattern: "Noise_NK_25519_ChaChaPoly_BLAKE2s"))
    }

    func testEveryKey() throws {
        let toml = """
            [server]
            bind_addr = "[::]:2333"
            default_token = "server-default"
            heartbeat_interval = 0

            [server.transport]
            type = "tls"
            [server.transport.tcp]
            nodelay = false
            keepalive_secs = 60
            keepalive_interval = 10
            [server.transport.tls]
            pkcs12 = "identity.pfx"
            pkcs12_password = "pfx-pass"
            hostname = "ignored.example"
            trusted_root = "ca.pem"
            [server.transport.noise]
            pattern = "Noise_XX_25519_ChaChaPoly_BLAKE2s"
            local_private_key = "priv"
            remote_public_key = "pub"
            [server.transport.websocket]
            tls = true

            [server.services.a]
            type = "udp"
            token = "token-a"
            bind_addr = "127.0.0.1:5000"
            nodelay = true
            [server.services.b]
            bind_addr = "[::1]:5001"

            [client]
            remote_addr = "[2001:db8::1]:2333"
            default_token = "client-default"
            heartbeat_timeout = 0
            retry_interval = 7
            prefer_ipv6 = true
            [client.transport]
            type = "websocket"
            [client.transport.tcp]
            proxy = "socks5://alice:p%40ss%3Aword@proxy.lan:1080"
            [client.transport.tls]
            trusted_root = "ca.pem"
            hostname = "server.example"
            [client.transport.websocket]
            tls = true
            [client.services.a]
            type = "udp"
            token = "token-a"
            local_addr = "localhost:53"
            nodelay = false
            retry_interval = 3
            prefer_ipv6 = false
            [client.services.b]
            local_addr = "10.0.0.2:80"
            """
        let c = try Config.parse(toml, file: "every.toml")
        XCTAssertThrowsError(try c.mode(forced: nil)) { e in
            XCTAssertEqual("\(e)", "every.toml: both [server] and [client] are configured: pass --server or --client to choose one")
        }
        XCTAssertEqual(try c.mode(forced: .server), .server)
        XCTAssertEqual(try c.mode(forced: .client), .client)

        let s = try XCTUnwrap(c.server)
        XCTAssertEqual(s.bindAddr, .v6(.any, port: 2333))
        XCTAssertEqual(s.heartbeatInterval, 0)
        XCTAssertEqual(s.transport.type, .tls)
        XCTAssertEqual(s.transport.tcp, TcpConfig(nodelay: false, keepaliveSecs: 60, keepaliveInterval: 10))
        XCTAssertEqual(
            s.transport.tls,
            TlsConfig(
                hostname: "ignored.example", trustedRoot: "ca.pem", pkcs12: "identity.pfx", pkcs12Password: "pfx-pass"))
        XCTAssertEqual(
            s.transport.noise,
            NoiseConfig(
                pattern: "Noise_XX_25519_ChaChaPoly_BLAKE2s", localPrivateKey: "priv", remotePublicKey: "pub"))
        XCTAssertEqual(s.transport.websocket, WebsocketConfig(tls: true))
        XCTAssertEqual(
            s.services["a"],
            ServerServiceConfig(
                name: "a", type: .udp, bindAddr: .v4(.loopback, port: 5000), token: "token-a", nodelay: true))
        // Service b falls back to the default token and the transport's nodelay.
        XCTAssertEqual(
            s.services["b"],
            ServerServiceConfig(
                name: "b", type: .tcp, bindAddr: .v6(.loopback, port: 5001), token: "server-default", nodelay: false))

        let cl = try XCTUnwrap(c.client)
        XCTAssertEqual(cl.remoteAddr, HostPort(host: .ipv6(IPv6Address("2001:db8::1")!), port: 2333))
        XCTAssertEqual(cl.remoteAddr.description, "[2001:db8::1]:2333")
        XCTAssertEqual(cl.heartbeatTimeout, 0)
        XCTAssertEqual(cl.retryInterval, 7)
        XCTAssertTrue(cl.preferIPv6)
        XCTAssertEqual(cl.tlsHostname, "server.example")
        XCTAssertEqual(
            cl.transport.tcp.proxy,
            ProxyConfig(
                scheme: .socks5, username: "alice", password: "p@ss:word",
                address: HostPort(host: .name("proxy.lan"), port: 1080)))
        XCTAssertEqual(
            cl.services["a"],
            ClientServiceConfig(
                name: "a", type: .udp, localAddr: HostPort(host: .name("localhost"), port: 53), token: "token-a",
                nodelay: false, retryInterval: 3, preferIPv6: false))
        XCTAssertEqual(
            cl.services["b"],
            ClientServiceConfig(
                name: "b", type: .tcp, localAddr: HostPort(host: .ipv4(IPv4Address(10, 0, 0, 2)), port: 80),
                token: "client-default", nodelay: true, retryInterval: 7, preferIPv6: true))
    }

    func testTokensAreMasked() throws {
        let c = try Config.parse(minimalServer + "\ntoken = \"very-secret-token\"\n", file: "m.toml")
        let svc = try XCTUnwrap(c.server?.services["ssh"])
        XCTAssertEqual(svc.token.value, "very-secret-token")
        XCTAssertEqual("\(svc.token)", "MASKED")
        for text in ["\(c)", String(reflecting: c), "\(svc)"] {
            XCTAssertFalse(text.contains("very-secret-token"), text)
            XCTAssertFalse(text.contains("secret-default"), text)
        }
        var dumped = ""
        dump(c, to: &dumped)
        XCTAssertFalse(dumped.contains("very-secret-token"))
        // Errors never print tokens either: a token of the wrong type names only its type.
        let e = parseError(minimalServer + "\ntoken = [\"a-secret\"]\n")
        XCTAssertEqual(e?.description, "rathole.toml: server.services.ssh.token: expected a string, found an array")
        // Proxy passwords stay hidden too.
        let p = try Config.parse(
            minimalClient.replacingOccurrences(
                of: "[client.services.ssh]",
                with: "[client.transport.tcp]\nproxy = \"http://u:hunter2@proxy:3128\"\n[client.services.ssh]"), file: "p.toml")
        XCTAssertFalse("\(p)".contains("hunter2"))
        XCTAssertEqual(p.client?.transport.tcp.proxy?.description, "http://proxy:3128")
    }

    func testProxyURLs() throws {
        func proxy(_ url: String) throws -> ProxyConfig? {
            let toml = minimalClient.replacingOccurrences(
                of: "[client.services.ssh]", with: "[client.transport.tcp]\nproxy = \"\(url)\"\n[client.services.ssh]")
            return try Config.parse(toml, file: "proxy.toml").client?.transport.tcp.proxy
        }
        func proxyError(_ url: String) -> String? {
            let toml = minimalClient.replacingOccurrences(
                of: "[client.services.ssh]", with: "[client.transport.tcp]\nproxy = \"\(url)\"\n[client.services.ssh]")
            return parseError(toml, file: "proxy.toml")?.description
        }
        XCTAssertEqual(
            try proxy("socks5://127.0.0.1:1080"),
            ProxyConfig(scheme: .socks5, address: HostPort(host: .ipv4(.loopback), port: 1080)))
        XCTAssertEqual(
            try proxy("SOCKS5://[::1]:1080/"),
            ProxyConfig(scheme: .socks5, address: HostPort(host: .ipv6(.loopback), port: 1080)))
        XCTAssertEqual(
            try proxy("http://user:p%40ss@proxy.example:3128"),
            ProxyConfig(
                scheme: .http, username: "user", password: "p@ss",
                address: HostPort(host: .name("proxy.example"), port: 3128)))
        XCTAssertEqual(
            try proxy("http://proxy.example"),
            ProxyConfig(scheme: .http, address: HostPort(host: .name("proxy.example"), port: 80)))
        XCTAssertEqual(
            try proxy("socks5://only%20user@h:1"),
            ProxyConfig(scheme: .socks5, username: "only user", address: HostPort(host: .name("h"), port: 1)))
        XCTAssertEqual(try proxy("socks5://a@b:c@h:1")?.username, "a@b")  // the last '@' ends the user info

        let key = "proxy.toml: client.transport.tcp.proxy: invalid proxy URL: "
        XCTAssertEqual(proxyError("https://proxy:443"), key + "unsupported scheme \"https\" (expected socks5 or http)")
        XCTAssertEqual(proxyError("proxy:1080"), key + "expected socks5://host:port or http://host:port")
        XCTAssertEqual(
            proxyError("socks5://proxy"),
            key + "\"proxy\": the port is missing (expected host:port, e.g. example.com:2333, 127.0.0.1:2333 or [::1]:2333)")
        XCTAssertEqual(proxyError("socks5://proxy:1080/path"), key + "a proxy URL has no path, query or fragment")
        XCTAssertEqual(proxyError("http://proxy:3128?x=1"), key + "a proxy URL has no path, query or fragment")
        XCTAssertEqual(proxyError("socks5://u:%zz@proxy:1080"), key + "bad percent-encoding in the password")
        XCTAssertEqual(proxyError("socks5://%4@proxy:1080"), key + "bad percent-encoding in the user name")
        XCTAssertEqual(proxyError("socks5://proxy:99999"), key + "\"proxy:99999\": the port must be a number from 1 to 65535")
        XCTAssertEqual(
            proxyError("socks5://:1080"),
            key + "\":1080\": the host is missing (expected host:port, e.g. example.com:2333, 127.0.0.1:2333 or [::1]:2333)")
    }

    func testQuotedServiceNames() {
        let e = parseError(
            """
            [client]
            remote_addr = "h:1"
            [client.services."my.svc"]
            local_addr = "127.0.0.1:1"
            """)
        XCTAssertEqual(e?.description, "rathole.toml: client.services.\"my.svc\".token: not set and client.default_token is not set either")
    }
}
