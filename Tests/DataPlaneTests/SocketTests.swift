import Glibc
import TestKit
import XCTest

// Socket set-up helpers and SocketAddress, on real loopback sockets.
@testable import DataPlane

final class SocketTests: XCTestCase {
    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
    }

    func testSocketAddressValues() throws {
        let v4 = SocketAddress(ipv4: 0x7F00_0001, port: 8080)
        XCTAssertEqual(v4.port, 8080)
        XCTAssertFalse(v4.isIPv6)
        XCTAssertEqual(v4.family, AF_INET)
        XCTAssertEqual(v4.ipBytes, [127, 0, 0, 1])
        XCTAssertEqual(v4.description, "127.0.0.1:8080")
        XCTAssertEqual(v4, .loopback(port: 8080))

        let v6 = SocketAddress.loopback(port: 2333, ipv6: true)
        XCTAssertEqual(v6.port, 2333)
        XCTAssertTrue(v6.isIPv6)
        XCTAssertEqual(v6.ipBytes, [UInt8](repeating: 0, count: 15) + [1])
        XCTAssertEqual(v6.description, "[::1]:2333")

        XCTAssertNotEqual(SocketAddress(ipv4: 0x0A01_0203, port: 7), SocketAddress(ipv4: 0x0A01_0203, port: 8))
        XCTAssertEqual(Set([v4, v4, v6]).count, 2)
        XCTAssertEqual(SocketAddress(ipv6: 0xFE80_0000_0000_0000, 1, port: 443).description, "[fe80::1]:443")
    }

    func testResolveAnswersLiteralsAndLocalhost() async throws {
        let literal = try await SocketAddress.resolve(host: "127.0.0.1", port: 9)
        XCTAssertEqual(literal, [.loopback(port: 9)])
        let local = try await SocketAddress.resolve(host: "localhost", port: 9)
        XCTAssertFalse(local.isEmpty)
        XCTAssertTrue(local.allSatisfy { $0.port == 9 })
        do {
            _ = try await SocketAddress.resolve(host: "no-such-host.invalid", port: 9)
            XCTFail("a name that does not exist resolved")
        } catch .unresolved(let host, _) {
            XCTAssertEqual(host, "no-such-host.invalid")
        } catch {
            XCTFail("expected .unresolved, got \(error)")
        }
    }

    func testOptionsAreApplied() throws {
        let listener = try Listener()
        defer { listener.close() }
        let (x, inner) = try listener.pair()
        defer {
            close(x)
            close(inner)
        }
        try Socket.setNoDelay(inner, true)
        XCTAssertEqual(option(inner, Int32(IPPROTO_TCP), TCP_NODELAY), 1)
        try Socket.setNoDelay(inner, false)
        XCTAssertEqual(option(inner, Int32(IPPROTO_TCP), TCP_NODELAY), 0)
        try Socket.setKeepAlive(inner, idle: 37, interval: 5)
        XCTAssertEqual(option(inner, SOL_SOCKET, SO_KEEPALIVE), 1)
        XCTAssertEqual(option(inner, Int32(IPPROTO_TCP), TCP_KEEPIDLE), 37)
        XCTAssertEqual(option(inner, Int32(IPPROTO_TCP), TCP_KEEPINTVL), 5)
        XCTAssertNotEqual(fcntl(inner, F_GETFL) & O_NONBLOCK, 0, "accepted relay-side sockets are non-blocking")
        let fresh = try Socket.tcp(family: AF_INET)
        XCTAssertNotEqual(fcntl(fresh.rawValue, F_GETFL) & O_NONBLOCK, 0)
        XCTAssertNotEqual(fcntl(fresh.rawValue, F_GETFD) & FD_CLOEXEC, 0)
    }

    private func option(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32 {
        var v: Int32 = -1
        var len = socklen_t(MemoryLayout<Int32>.size)
        XCTAssertEqual(getsockopt(fd, level, name, &v, &len), 0)
        return v
    }

    func testIsAlive() throws {
        let listener = try Listener()
        defer { listener.close() }

        let (x1, inner1) = try listener.pair()
        XCTAssertTrue(Socket.isAlive(inner1), "idle connection")
        XCTAssertEqual(Blocking.sendAll(x1, [42]), 0)
        var pfd = pollfd(fd: inner1, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, 5000), 1)
        XCTAssertTrue(Socket.isAlive(inner1), "data pending")
        var byte: UInt8 = 0
        XCTAssertEqual(recv(inner1, &byte, 1, 0), 1, "isAlive must not consume data")
        XCTAssertEqual(byte, 42)
        close(x1)
        XCTAssertEqual(poll(&pfd, 1, 5000), 1)
        XCTAssertFalse(Socket.isAlive(inner1), "peer closed")
        close(inner1)

        let (x2, inner2) = try listener.pair()
        resetClose(x2)
        var pfd2 = pollfd(fd: inner2, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd2, 1, 5000), 1)
        XCTAssertFalse(Socket.isAlive(inner2), "peer reset")
        close(inner2)
    }

    /// Listeners with SO_REUSEPORT share a port; without it (how the server listens) the port is
    /// one listener's alone.
    func testReusePortListenersShareAPortAndOthersDoNot() throws {
        let first = try TCPListener(SocketAddress.loopback(port: 0), reusePort: true)
        _ = try TCPListener(first.address, reusePort: true)
        XCTAssertThrowsError(try TCPListener(first.address, reusePort: false)) { error in
            XCTAssertEqual((error as? IOError)?.errno, .addressInUse, "\(error)")
        }
        let exclusive = try TCPListener(SocketAddress.loopback(port: 0))
        for reusePort in [false, true] {
            XCTAssertThrowsError(try TCPListener(exclusive.address, reusePort: reusePort)) { error in
                XCTAssertEqual((error as? IOError)?.errno, .addressInUse, "\(error)")
            }
        }
    }

    /// Connect through the ring over IPv6 loopback (when the host has it), with matching addresses.
    func testConnectOverIPv6Loopback() async throws {
        let listener: TCPListener
        do {
            listener = try TCPListener(SocketAddress.loopback(port: 0, ipv6: true))
        } catch {
            throw XCTSkip("no IPv6 loopback here: \(error)")
        }
        let group = try RingGroup(threads: 1)
        defer { shutdownOrFail(group) }
        let ring = group.executors[0]
        let address = listener.address
        XCTAssertTrue(address.isIPv6)
        let (client, server) = try await withDeadline(10, "IPv6 connect and accept") {
            try await Task(executorPreference: ring) { () async throws -> (SocketStream, SocketStream) in
                async let accepted = listener.accept(on: ring)
                let client = try await Socket.connect(to: address, on: ring, timeout: .seconds(5))
                return (client, try await accepted)
            }.value
        }
        defer {
            client.close()
            server.close()
        }
        XCTAssertEqual(client.peerAddress, address)
        XCTAssertEqual(Socket.address(client.fd, peer: false), server.peerAddress)
        let got = try await Task(executorPreference: ring) { () async throws -> [UInt8] in
            try await client.write(bytes: [1, 2, 3, 4])
            return try await server.readExact(count: 4, timeout: .seconds(5))
        }.value
        XCTAssertEqual(got, [1, 2, 3, 4])
    }

    /// Shutting a listener down wakes an accept the ring has in flight on it. The accept is known
    /// to be in flight before the shutdown: an accept submitted after it would fail on its own and
    /// prove nothing.
    func testCloseListenerEndsAcceptInFlight() async throws {
        let f = try RingFixture()
        defer { f.close() }
        let ring = f.ring
        let listener = try TCPListener(SocketAddress.loopback(port: 0))
        let before = await operationsInFlight(ring)
        let task = Task(executorPreference: ring) { () -> IOError? in
            do throws(IOError) {
                try await listener.accept(on: ring).close()
                return nil
            } catch {
                return error
            }
        }
        try await waitForOperationInFlight(ring, moreThan: before, "accept")
        listener.shutdown()
        let error = try await withDeadline(10, "accept to end after shutdown") { await task.value }
        XCTAssertNotNil(error, "accept must fail once its listener is shut down")
        XCTAssertNotEqual(error, .cancelled)
        let after = await operationsInFlight(ring)
        XCTAssertEqual(after, before, "the accept still holds its slot")
    }

    func testRaiseOpenFileLimit() {
        var lim = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim)
        let raised = Socket.raiseOpenFileLimit()
        XCTAssertEqual(raised, UInt64(lim.rlim_max))
    }
}
