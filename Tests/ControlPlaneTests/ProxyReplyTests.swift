import ControlPlane
// The SOCKS5 and HTTP CONNECT reply checks (ProxyReplies.swift), and the inputs the fuzzer found
// (Tests/Fuzz/corpus/proxy/regression-*).
import XCTest

final class ProxyReplyTests: XCTestCase {
    func testSocks5MethodChoice() throws {
        XCTAssertFalse(try Socks5Reply.methodChoice([5, 0], offeredPassword: false))
        XCTAssertTrue(try Socks5Reply.methodChoice([5, 2], offeredPassword: true))
        XCTAssertThrowsError(try Socks5Reply.methodChoice([5, 2], offeredPassword: false)) {
            XCTAssertEqual($0 as? ProxyReplyError, .passwordRequired)
        }
        XCTAssertThrowsError(try Socks5Reply.methodChoice([5, 0xFF], offeredPassword: true)) {
            XCTAssertEqual($0 as? ProxyReplyError, .noAcceptableMethod)
        }
        XCTAssertThrowsError(try Socks5Reply.methodChoice([4, 0], offeredPassword: true)) {
            XCTAssertEqual($0 as? ProxyReplyError, .notSocks5)
        }
    }

    /// A reader that takes exactly what bytesNeeded asks for stops at the reply's end, whatever
    /// the address type, and leaves the target's bytes alone.
    func testSocks5ReplyIsReadExactly() throws {
        let target: [UInt8] = [0xAA, 0xBB, 0xCC]
        let replies: [[UInt8]] = [
            [5, 0, 0, 1, 10, 0, 0, 1, 0x1F, 0x90],
            [5, 0, 0, 4] + [UInt8](repeating: 0, count: 16) + [0, 80],
            [5, 0, 0, 3, 11] + Array("example.org".utf8) + [1, 187],
            [5, 0, 0, 3, 0, 0, 0],
        ]
        for reply in replies {
            let stream = reply + target
            var read: [UInt8] = []
            while case let n = try Socks5Reply.bytesNeeded(read), n > 0 {
                read += stream[read.count..<read.count + n]
            }
            XCTAssertEqual(read, reply)
        }
    }

    func testSocks5ReplyErrors() {
        XCTAssertThrowsError(try Socks5Reply.bytesNeeded([5, 5, 0, 1])) {
            XCTAssertEqual(($0 as? ProxyReplyError)?.message(target: "h:1"), "the proxy could not connect to h:1: connection refused")
        }
        XCTAssertThrowsError(try Socks5Reply.bytesNeeded([4, 0, 0, 1])) { XCTAssertEqual($0 as? ProxyReplyError, .malformedSocks5Reply) }
        XCTAssertThrowsError(try Socks5Reply.bytesNeeded([5, 0, 0, 2])) { XCTAssertEqual($0 as? ProxyReplyError, .socks5AddressType(2)) }
        XCTAssertThrowsError(try Socks5Reply.checkPasswordStatus([1, 1])) { XCTAssertEqual($0 as? ProxyReplyError, .passwordRejected) }
    }

    func testHTTPConnectReply() throws {
        let ok = Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8)
        XCTAssertFalse(try HTTPConnectReply.isComplete(Array(ok.dropLast())))
        XCTAssertTrue(try HTTPConnectReply.isComplete(ok))
        XCTAssertNoThrow(try HTTPConnectReply.check(ok))
        XCTAssertThrowsError(try HTTPConnectReply.check(Array("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n".utf8))) {
            XCTAssertEqual(
                ($0 as? ProxyReplyError)?.message(target: "h:1"), "CONNECT h:1 refused: HTTP/1.1 407 Proxy Authentication Required")
        }
        XCTAssertThrowsError(try HTTPConnectReply.isComplete([UInt8](repeating: 65, count: HTTPConnectReply.maxHeadSize))) {
            XCTAssertEqual($0 as? ProxyReplyError, .httpHeadTooLarge)
        }
    }

    /// Fuzzer find (proxy target): a head whose first line ends in a bare LF put the LF, and
    /// whatever followed up to the CR, into the error, so one refusal logged several lines. The
    /// line now ends at CR or LF, and what is shown is printable ASCII, at most 80 characters.
    func testHTTPStatusLineWithBareLFIsOneLogLine() {
        let head: [UInt8] = [0x0A, 0x0D, 0x0A, 0x0D, 0x0A]  // the input, after its kind and flag bytes
        XCTAssertTrue(try HTTPConnectReply.isComplete(head))
        XCTAssertThrowsError(try HTTPConnectReply.check(head)) {
            XCTAssertEqual($0 as? ProxyReplyError, .notHTTP(statusLine: ""))
        }
        let injected = Array("HTTP/1.1 403 no\nERROR forged line\u{1B}[0m\r\n\r\n".utf8)
        XCTAssertThrowsError(try HTTPConnectReply.check(injected)) {
            XCTAssertEqual(($0 as? ProxyReplyError)?.message(target: "h:1"), "CONNECT h:1 refused: HTTP/1.1 403 no")
        }
        let long = Array("HTTP/1.1 500 \(String(repeating: "x", count: 5000))\u{7}\r\n\r\n".utf8)
        XCTAssertThrowsError(try HTTPConnectReply.check(long)) {
            guard case .httpRefused(let line)? = $0 as? ProxyReplyError else { return XCTFail("\($0)") }
            XCTAssertEqual(line.count, 83)
            XCTAssertTrue(line.hasPrefix("HTTP/1.1 500 xxx") && line.hasSuffix("..."))
        }
    }
}
