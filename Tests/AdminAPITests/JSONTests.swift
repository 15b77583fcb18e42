// Built with the AdminAPI package trait only (the default).
#if AdminAPI

import XCTest

@testable import AdminAPI
import AdminAPIBodies
import ControlPlane

final class JSONTests: XCTestCase {
    private func parse(_ text: String) throws -> JSON { try JSON.parse(Array(text.utf8)) }

    private func error(_ text: String) -> JSONError? {
        do {
            let v = try parse(text)
            XCTFail("parsed \(text) as \(v)")
            return nil
        } catch {
            return error as? JSONError
        }
    }

    func testValues() throws {
        XCTAssertEqual(
            try parse(" {\"a\": [1, -2, 3.5, 1e3, true, false, null, \"x\\u00e9\\ud83d\\ude00\\n\"]} "),
            .object([
                (
                    "a",
                    .array([
                        .integer(1), .integer(-2), .number("3.5"), .number("1e3"), .bool(true),
                        .bool(false), .null, .string("xé😀\n"),
                    ])
                )
            ]))
        XCTAssertEqual(try parse("\"\""), .string(""))
        XCTAssertEqual(try parse("99999999999999999999"), .number("99999999999999999999"))
    }

    func testMalformedSaysWhere() {
        XCTAssertEqual(error("{\"a\":1,}")?.offset, 7)
        XCTAssertEqual(error("{\"a\":1} x")?.message, "unexpected text after the JSON value")
        XCTAssertEqual(error("{\"a\":1,\"a\":2}")?.message, "duplicate field \"a\"")
        XCTAssertEqual(error("{\"a\\rb\":1,\"a\\rb\":2}")?.message, "duplicate field \"a\\rb\"", "one line (api-body fuzz target find)")
        XCTAssertEqual(error("01")?.message, "leading zero in a number")
        XCTAssertNotNil(error("\"\u{01}\""))
        XCTAssertNotNil(error("\"\\ud800\""))
        XCTAssertNotNil(error("\"\\u+123\""))
        XCTAssertNotNil(error("tru"))
        XCTAssertNotNil(error(""))
        XCTAssertNotNil(error("[1 2]"))
        XCTAssertEqual(
            error(String(repeating: "[", count: 40) + String(repeating: "]", count: 40))?.message,
            "nested deeper than 32 levels")
        XCTAssertNil(try? JSON.parse([0x22, 0xFF, 0x22]), "invalid UTF-8 in a string")
    }

    func testWriterEscapes() {
        var w = JSONObjectWriter()
        w.add("s", "a\"b\\c\n\u{01}")
        w.add("n", nil as String?)
        w.add("b", true)
        w.add("i", UInt64.max)
        XCTAssertEqual(w.finished(), #"{"s":"a\"b\\c\n\u0001","n":null,"b":true,"i":18446744073709551615}"#)
        let round = try? JSON.parse(Array(w.finished().utf8))
        XCTAssertEqual(
            round, .object([("s", .string("a\"b\\c\n\u{01}")), ("n", .null), ("b", .bool(true)), ("i", .number("18446744073709551615"))]))
    }
}

final class ServiceBodyTests: XCTestCase {
    private func definition(_ body: String, mode: Mode = .server) throws -> ServiceDefinition {
        try ServiceJSON.definition(name: "svc", body: Array(body.utf8), mode: mode)
    }

    private func refusal(_ body: String, mode: Mode = .server) -> APIError? {
        do {
            _ = try definition(body, mode: mode)
            XCTFail("accepted \(body)")
            return nil
        } catch {
            return error as? APIError
        }
    }

    func testFieldsInTheFilesOrder() throws {
        let d = try definition(#"{"nodelay":true,"bind_addr":"0.0.0.0:1","token":"t","type":"udp"}"#)
        XCTAssertEqual(d.fields.map(\.key), ["type", "token", "bind_addr", "nodelay"])
        XCTAssertEqual(d.fields[3].value, .bool(true))
        let c = try definition(#"{"token":"t","local_addr":"a:1","retry_interval":3,"prefer_ipv6":false}"#, mode: .client)
        XCTAssertEqual(c.fields.map(\.key), ["token", "local_addr", "retry_interval", "prefer_ipv6"])
    }

    func testRefusalsNameTheField() {
        XCTAssertEqual(refusal(#"{"token":"t","bind_addr":"x","extra":1}"#)?.field, "extra")
        XCTAssertEqual(refusal(#"{"token":"t","local_addr":"x"}"#)?.field, "local_addr", "a client's field on the server")
        XCTAssertEqual(refusal(#"{"bind_addr":"x"}"#)?.field, "token")
        XCTAssertEqual(refusal(#"{"token":"","bind_addr":"x"}"#)?.field, "token")
        XCTAssertEqual(refusal(#"{"token":1,"bind_addr":"x"}"#)?.message, "expected a string, found a number")
        XCTAssertEqual(refusal(#"{"token":"t","nodelay":"yes"}"#)?.field, "nodelay")
        XCTAssertEqual(refusal(#"{"token":"t","retry_interval":1.5}"#, mode: .client)?.field, "retry_interval")
        XCTAssertEqual(refusal("[]")?.status, 400)
        XCTAssertNil(refusal("{")?.field)
        XCTAssertEqual(refusal("{")?.status, 400)
    }

    func testNames() {
        XCTAssertNoThrow(try ServiceJSON.checkName("my svc.é"))
        XCTAssertThrowsError(try ServiceJSON.checkName(""))
        XCTAssertThrowsError(try ServiceJSON.checkName("a\nb"))
        XCTAssertThrowsError(try ServiceJSON.checkName(String(repeating: "a", count: 129)))
        XCTAssertEqual(ServiceJSON.percentDecoded("my%20svc%2Eok"), "my svc.ok")
        XCTAssertNil(ServiceJSON.percentDecoded("a%2"))
        XCTAssertNil(ServiceJSON.percentDecoded("a/b"))
        XCTAssertNil(ServiceJSON.percentDecoded("%FF"))
    }
}

final class AuthAndMetricsTextTests: XCTestCase {
    func testBearerToken() {
        let token = BearerToken("s3cret")
        XCTAssertTrue(token.accepts("Bearer s3cret"))
        XCTAssertTrue(token.accepts("bearer  s3cret"))
        XCTAssertFalse(token.accepts(nil))
        XCTAssertFalse(token.accepts("Bearer s3cre"))
        XCTAssertFalse(token.accepts("Bearer s3cret2"))
        XCTAssertFalse(token.accepts("Basic s3cret"))
        XCTAssertFalse(token.accepts("s3cret"))
        XCTAssertFalse(
            token.accepts("bearer\u{0}s3cret"),
            "NUL is not a space (found writing the api-body fuzz target: the scheme was compared with the case bit set on every byte)")
        XCTAssertFalse(BearerToken.constantTimeEqual([1, 2], [1, 2, 0]))
        XCTAssertTrue(BearerToken.constantTimeEqual([], []))
    }

    func testLabelEscaping() {
        XCTAssertEqual(PrometheusText.escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd")
    }

    func testProcessStatsAreRead() {
        let stats = ProcessStats.read()
        XCTAssertGreaterThan(stats.openFDs ?? 0, 2)
        XCTAssertGreaterThan(stats.residentBytes ?? 0, 1 << 20)
        XCTAssertNotNil(stats.cpuSeconds)
        XCTAssertGreaterThan(stats.startTimeSeconds ?? 0, 1_600_000_000)
    }
}

#endif
