// The running API against its description (docs/openapi.yaml), by schemathesis (PyPI): generated
// requests, valid and invalid, on every operation; responses must have the documented status,
// content type, headers and schema, invalid requests must be refused, and nothing may fail with a
// server error. The client takes every operation (its new services only dial out); the server
// takes all but PUT, whose generated bind_addr values would bind ports of the shared machine.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class APIConformanceTests: EndToEndCase {
    private func schemathesis() throws -> String {
        for d in ["/usr/local/bin", "/usr/bin"] where access("\(d)/schemathesis", X_OK) == 0 { return "\(d)/schemathesis" }
        throw TestFailure("schemathesis is not installed: scripts/install-deps installs it from PyPI")
    }

    private func run(against api: UInt16, extra: [String]) throws -> String {
        let spec = Paths.packageRoot + "/docs/openapi.yaml"
        let argv =
            [
                try schemathesis(), "run", spec, "--url", "http://127.0.0.1:\(api)",
                "--header", "Authorization: Bearer \(APIConfig.token)",
                "--checks", "all", "--exclude-checks", "positive_data_acceptance",
                "--max-examples", "60", "--workers", "1", "--request-timeout", "10",
            ] + extra
        // Run in the test's directory: schemathesis and hypothesis keep their caches in the
        // working directory.
        let command = "cd '\(dir)' && exec " + argv.map { "'\($0)'" }.joined(separator: " ")
        let (status, output) = try Programs.run(["/bin/sh", "-c", command], timeout: 600)
        XCTAssertEqual(status, 0, "schemathesis found a difference from docs/openapi.yaml:\n\(output)")
        XCTAssertTrue(output.contains("passed"), output)
        return output
    }

    func testClientMatchesTheDescription() throws {
        let control = Ports.free()
        let api = Ports.free()
        var config = TunnelConfig(controlPort: control, services: [ServiceSpec("existing", port: 1, localPort: Ports.free())])
        config.clientTables = APIConfig.table("client", port: api)
        let client = rathole("client", config: config.clientText)
        client.environment["RUST_LOG"] = "warn"
        try client.start()
        try waitForAPI(port: api)
        _ = try run(against: api, extra: [])
        XCTAssertTrue(client.isRunning, "the client survived")
        let file = try String(contentsOfFile: client.configPath, encoding: .utf8)
        XCTAssertNoThrow(try Config.parse(file, file: client.configPath), "the file the API wrote still parses:\n\(file)")
    }

    func testServerMatchesTheDescriptionButPUT() throws {
        let echo = keep(try LocalService.echo())
        let control = Ports.free()
        let api = Ports.free()
        var config = TunnelConfig(controlPort: control, services: [ServiceSpec("existing", port: Ports.free(), localPort: echo.port)])
        config.serverTables = APIConfig.table("server", port: api)
        let server = rathole("server", config: config.serverText)
        server.environment["RUST_LOG"] = "warn"
        try server.start()
        try waitForAPI(port: api)
        _ = try run(against: api, extra: ["--exclude-method", "PUT"])
        XCTAssertTrue(server.isRunning, "the server survived")
    }
}
