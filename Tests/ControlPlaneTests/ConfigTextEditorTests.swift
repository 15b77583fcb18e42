// Built with the AdminAPI package trait only (the default).
#if AdminAPI

import XCTest

@testable import ControlPlane

/// The config file's text edited for one service (the HTTP API's writes): everything else stays
/// as written, and the result parses to the expected config.
final class ConfigTextEditorTests: XCTestCase {
    private let file = """
        # the server
        [server]
        bind_addr = "0.0.0.0:2333"  # public

        # ssh at home
        [server.services.ssh]
        type = "tcp"   # always tcp
        token = "old"
        nodelay = false

        [server.services."odd.name"]
        token = 'x'
        bind_addr = "0.0.0.0:6000"
        # trailing note
        bind_addr_note = 1

        [client]
        remote_addr = "example.com:2333"
        """

    private func fields(_ pairs: [(String, ConfigValue)]) -> [ServiceDefinition.Field] {
        pairs.map { ServiceDefinition.Field($0.0, $0.1) }
    }

    func testReplaceKeepsCommentsAndPlaces() throws {
        let edited = try XCTUnwrap(
            ConfigTextEditor.replacingService(
                "ssh", in: .server,
                with: fields([("type", .string("tcp")), ("token", .string("new \"quoted\"")), ("bind_addr", .string("0.0.0.0:22"))]),
                text: file))
        XCTAssertTrue(
            edited.contains(
                """
                # ssh at home
                [server.services.ssh]
                type = "tcp"   # always tcp
                token = "new \\"quoted\\""
                bind_addr = "0.0.0.0:22"

                [server.services."odd.name"]
                """), edited)
        XCTAssertFalse(edited.contains("nodelay"), "a key no longer set is removed")
        XCTAssertTrue(edited.hasPrefix("# the server\n[server]\nbind_addr = \"0.0.0.0:2333\"  # public\n"))
    }

    func testQuotedNameWithDotIsFound() throws {
        let edited = try XCTUnwrap(
            ConfigTextEditor.replacingService(
                "odd.name", in: .server, with: fields([("token", .string("y")), ("bind_addr", .string("0.0.0.0:6001"))]),
                text: file))
        XCTAssertTrue(
            edited.contains("[server.services.\"odd.name\"]\ntoken = \"y\"\nbind_addr = \"0.0.0.0:6001\"\n# trailing note\n"), edited)
        XCTAssertFalse(edited.contains("bind_addr_note"))
    }

    func testAddGoesAfterTheSectionsLastTable() throws {
        let edited = try XCTUnwrap(
            ConfigTextEditor.replacingService(
                "web", in: .server, with: fields([("token", .string("w")), ("bind_addr", .string("0.0.0.0:80"))]), text: file))
        XCTAssertTrue(
            edited.contains(
                """
                bind_addr_note = 1

                [server.services.web]
                token = "w"
                bind_addr = "0.0.0.0:80"

                [client]
                """), edited)
    }

    func testAddToAFileWithoutServicesAppends() throws {
        let text = "[client]\nremote_addr = \"a:1\"\ndefault_token = \"t\""
        let edited = try XCTUnwrap(
            ConfigTextEditor.replacingService(
                "nas", in: .client, with: fields([("local_addr", .string("127.0.0.1:5000"))]), text: text))
        XCTAssertEqual(
            edited, "[client]\nremote_addr = \"a:1\"\ndefault_token = \"t\"\n\n[client.services.nas]\nlocal_addr = \"127.0.0.1:5000\"\n")
        let config = try Config.parse(edited, file: "f")
        XCTAssertEqual(config.client?.services["nas"]?.localAddr.port, 5000)
    }

    func testRemoveTakesItsCommentAndOneBlankLine() throws {
        let edited = try XCTUnwrap(ConfigTextEditor.replacingService("ssh", in: .server, with: nil, text: file))
        XCTAssertTrue(
            edited.hasPrefix(
                """
                # the server
                [server]
                bind_addr = "0.0.0.0:2333"  # public

                [server.services."odd.name"]
                """), edited)
    }

    func testLayoutsBeyondTheLineEditorAreRefused() {
        let inline = "[server]\nbind_addr = \"0.0.0.0:1\"\n[server.services]\nssh = { token = \"t\", bind_addr = \"0.0.0.0:2\" }\n"
        // No [server.services.ssh] header: adding one would redefine ssh; the caller's parse check
        // catches that and falls back to TOMLKit.
        let added = ConfigTextEditor.replacingService("ssh", in: .server, with: fields([("token", .string("u"))]), text: inline)
        XCTAssertThrowsError(try Config.parse(added ?? "", file: "f"))
        XCTAssertNil(ConfigTextEditor.replacingService("ssh", in: .server, with: nil, text: inline))
        let multiline = "[server.services.ssh]\ntoken = \"\"\"\nx\"\"\"\n"
        XCTAssertNil(ConfigTextEditor.replacingService("ssh", in: .server, with: fields([("token", .string("u"))]), text: multiline))
    }

    func testHeaderAndKeyValueReading() {
        XCTAssertEqual(ConfigTextEditor.headerPath("  [ server . services . \"a\\u0041\" ] # c\n"), ["server", "services", "aA"])
        XCTAssertNil(ConfigTextEditor.headerPath("[[server.services]]\n"))
        XCTAssertNil(ConfigTextEditor.headerPath("[1, 2],\n"))
        XCTAssertEqual(ConfigTextEditor.keyValue("token = 'a#b' # c\n")?.key, "token")
        XCTAssertEqual(ConfigTextEditor.keyValue("token = 'a#b' # c\n")?.suffix, " # c\n")
        XCTAssertNil(ConfigTextEditor.keyValue("a.b = 1\n"))
        XCTAssertNil(ConfigTextEditor.keyValue("a = [1,\n"))
    }

    // MARK: The service definitions the API sends

    func testDefinitionIsCheckedByTheConfigParser() throws {
        let server = try XCTUnwrap(Config.parse("[server]\nbind_addr = \"0.0.0.0:1\"\n", file: "f").server)
        let good = ServiceDefinition(name: "a b", fields: [.init("token", .string("t")), .init("bind_addr", .string("[::]:80"))])
        let service = try server.service(from: good, file: "f")
        XCTAssertEqual(service.bindAddr.port, 80)
        XCTAssertTrue(service.nodelay, "the transport's default applies")
        let bad = ServiceDefinition(name: "a b", fields: [.init("token", .string("t")), .init("bind_addr", .string("host:80"))])
        XCTAssertThrowsError(try server.service(from: bad, file: "f")) { error in
            XCTAssertEqual((error as? ConfigError)?.key, "server.services.\"a b\".bind_addr")
        }
    }

    func testApiTable() throws {
        let ok = try Config.parse(
            "[server]\nbind_addr = \"0.0.0.0:1\"\n[server.api]\nbind_addr = \"127.0.0.1:7400\"\ntoken = \"t\"\n", file: "f")
        XCTAssertEqual(ok.server?.api?.bindAddr.port, 7400)
        func error(_ api: String) -> ConfigError? {
            do {
                _ = try Config.parse("[client]\nremote_addr = \"a:1\"\n[client.api]\n\(api)\n", file: "f")
                return nil
            } catch {
                return error
            }
        }
        XCTAssertEqual(error("bind_addr = \"127.0.0.1:7400\"")?.description, "f: client.api.token: required key is missing")
        XCTAssertEqual(error("bind_addr = \"127.0.0.1:7400\"\ntoken = \"\"")?.description, "f: client.api.token: must not be empty")
        XCTAssertEqual(error("bind_addr = \"localhost:7400\"\ntoken = \"t\"")?.key, "client.api.bind_addr")
        XCTAssertEqual(error("bind_addr = \"127.0.0.1:7400\"\ntoken = \"t\"\nport = 1")?.key, "client.api.port")
    }
}

#endif
