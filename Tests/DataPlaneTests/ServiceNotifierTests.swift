import Glibc
import XCTest

// $NOTIFY_SOCKET addresses (pure), and one notification through a real AF_UNIX datagram socket.
@testable import DataPlane

final class ServiceNotifierTests: XCTestCase {
    private let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!

    func testPathAddressEndsWithNul() throws {
        let bytes = try ServiceNotifier.socketAddress("/run/systemd/notify")
        XCTAssertEqual(bytes.count, pathOffset + 19 + 1)
        XCTAssertEqual(bytes.prefix(2), [UInt8(AF_UNIX), 0], "sun_family, little-endian")
        XCTAssertEqual(Array(bytes[pathOffset...]), Array("/run/systemd/notify".utf8) + [0])
    }

    func testAbstractAddressStartsWithNulAndHasNoTerminator() throws {
        let bytes = try ServiceNotifier.socketAddress("@/org/freedesktop/systemd1/notify/42")
        XCTAssertEqual(Array(bytes[pathOffset...]), [0] + Array("/org/freedesktop/systemd1/notify/42".utf8))
    }

    func testUnusableAddressesAreRefused() {
        XCTAssertThrowsError(try ServiceNotifier.socketAddress("vsock:2:1234")) {
            XCTAssertEqual($0 as? ServiceNotifier.AddressError, .unsupported("vsock:2:1234"))
        }
        XCTAssertThrowsError(try ServiceNotifier.socketAddress("relative/path"))
        XCTAssertThrowsError(try ServiceNotifier.socketAddress("@"))
        let long = "/" + String(repeating: "x", count: 107)
        XCTAssertThrowsError(try ServiceNotifier.socketAddress(long)) {
            XCTAssertEqual($0 as? ServiceNotifier.AddressError, .tooLong(long))
        }
        XCTAssertNoThrow(try ServiceNotifier.socketAddress("/" + String(repeating: "x", count: 106)), "107 bytes and the NUL fit")
    }

    func testSendsOneDatagram() throws {
        let path = "/tmp/rathole-notifier-test-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let receiver = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        XCTAssertGreaterThanOrEqual(receiver, 0)
        defer { close(receiver) }
        let address = try ServiceNotifier.socketAddress(path)
        let bound = address.withUnsafeBytes { bind(receiver, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count)) }
        XCTAssertEqual(bound, 0, String(cString: strerror(errno)))

        try ServiceNotifier(socket: path).send("READY=1\nSTATUS=ok")
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        XCTAssertEqual(n >= 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : "recv failed", "READY=1\nSTATUS=ok")

        // Nobody listening any more: an error to log, not a crash.
        unlink(path)
        XCTAssertThrowsError(try ServiceNotifier(socket: path).send("STOPPING=1"))
    }
}
