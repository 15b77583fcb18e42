import XCTest

// The one parser of address text: `host:port` as configs (and the perf tools) write it.
@testable import ControlPlane

final class HostPortTests: XCTestCase {
    func testLiteralsAndNames() throws {
        let v4 = try XCTUnwrap(HostPort("127.0.0.1:8080"))
        XCTAssertEqual(v4.port, 8080)
        XCTAssertEqual(v4.literalAddress?.socketAddress.description, "127.0.0.1:8080")
        let v6 = try XCTUnwrap(HostPort("[::1]:2333"))
        XCTAssertEqual(v6.literalAddress?.socketAddress.description, "[::1]:2333")
        XCTAssertEqual(v6.description, "[::1]:2333")
        let name = try XCTUnwrap(HostPort("example.com:443"))
        XCTAssertNil(name.literalAddress)
        XCTAssertEqual(name.hostString, "example.com")
        XCTAssertEqual(HostPort("[fe80::1]:443")?.hostString, "fe80::1")
    }

    func testMalformedAddressesAreRefused() {
        for bad in [
            "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "::1:80", "[::1:80",
            ":80", "300.1.1.1:80", "[127.0.0.1]:80x", "bad host:80",
        ] {
            XCTAssertNil(HostPort(bad), bad)
        }
        guard case .failure(let e) = HostPort.parse("localhost:80", ipOnly: true) else {
            return XCTFail("a bind address must be an IP address")
        }
        XCTAssertTrue(e.message.contains("must be an IP address"), e.message)
    }
}
