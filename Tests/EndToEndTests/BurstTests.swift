// Many visitors at once: bursts beyond what the server holds in user space, floods while the client
// is frozen, and one process per port.
import ControlPlane
import Foundation
import Glibc
import XCTest

final class BurstTests: E2ETestCase {
    /// 3,000 visitors connect at once, three times the number the server holds waiting: the rest
    /// wait in the listen backlog, and every one of them is served with its own bytes.
    func testBurstBeyondTheWaitingBoundIsServed() throws {
        let t = try pollingEchoTunnel()
        defer { t.echo.stop() }
        let result = VisitorBurst.run(port: t.publicPort, count: 3000, timeout: 90)
        XCTAssertEqual(result.served, 3000, "visitors served of 3,000 (\(result.failed) failed, \(result.unanswered) unanswered)")
        XCTAssertEqual(t.server.occurrences(of: "got no data channel"), 0, "no visitor was closed for want of a channel")
        XCTAssertTrue(t.server.isRunning && t.client.isRunning)
    }

    /// The client is frozen (SIGSTOP) while 2,000 visitors arrive: the server holds at most its
    /// bound of them (the rest wait in the listen backlog), its memory stays put, and after
    /// SIGCONT every visitor is served.
    func testFloodWhileTheClientIsFrozenStaysBoundedAndRecovers() throws {
        let t = try pollingEchoTunnel()
        defer { t.echo.stop() }
        let baselineFDs = try XCTUnwrap(t.server.settled { t.server.fdCount })
        let baselineRSS = try XCTUnwrap(t.server.rssKiB)

        t.client.signal(SIGSTOP)
        let frozenAt = monoNow()
        let burst = VisitorBurst(port: t.publicPort, count: 2000)
        burst.connectAll()
        // The server takes what it holds and leaves the rest in the backlog.
        let held = t.server.settled({ t.server.fdCount }, timeout: 4) ?? .max
        let rss = t.server.rssKiB ?? .max
        XCTAssertLessThanOrEqual(held, baselineFDs + 1024 + 16, "fds while the client is frozen (baseline \(baselineFDs))")
        XCTAssertLessThanOrEqual(rss - baselineRSS, 16 * 1024, "RSS growth in KiB while holding the flood")
        XCTAssertLessThan(monoNow() - frozenAt, 9, "the freeze must end before the visitors' patience (10 s) for this test")
        t.client.signal(SIGCONT)

        let result = burst.finish(timeout: 90)
        XCTAssertEqual(result.served, 2000, "visitors served after SIGCONT (\(result.failed) failed, \(result.unanswered) unanswered)")
        XCTAssertTrue(t.server.isRunning && t.client.isRunning)
    }

    private struct EchoTunnel {
        let server: RatholeProcess
        let client: RatholeProcess
        let publicPort: UInt16
        let echo: PollingEcho
    }

    /// A server and a client forwarding one service to a `PollingEcho`, logging at info level
    /// (debug would write a line per visitor).
    private func pollingEchoTunnel() throws -> EchoTunnel {
        let echo = try PollingEcho()
        let controlPort = Ports.free()
        let publicPort = Ports.free()
        let server = rathole("server", config: serverConfig(controlPort: controlPort, services: [("svc", publicPort)]))
        let client = rathole("client", config: clientConfig(controlPort: controlPort, services: [("svc", echo.port)]))
        for p in [server, client] { p.environment["RUST_LOG"] = "info" }
        try server.start()
        try waitServerReady(server, service: "svc")
        try client.start()
        try waitClientReady(client, service: "svc")
        XCTAssertTrue(waitUntilForwarding(port: publicPort, timeout: 15))
        return EchoTunnel(server: server, client: client, publicPort: publicPort, echo: echo)
    }

    /// A second server on the same config cannot share the control port: it exits 1 naming the
    /// address, and the first keeps serving.
    func testSecondServerOnTheSameConfigExits() throws {
        let t = try startTunnel(local: keep(try LocalService.echo()))
        let second = RatholeProcess(name: "second-server", configPath: t.server.configPath, dir: dir)
        try second.start()
        XCTAssertEqual(second.waitForExit(timeout: 15), .exited(1))
        XCTAssertTrue(second.log.contains("127.0.0.1:\(t.controlPort)") && second.log.contains("in use"),
                      "the error names the address: \(second.log)")
        XCTAssertTrue(waitUntilForwarding(port: t.publicPort, timeout: 10), "the first server still serves")
    }
}

/// Many visitors connecting at once, each sending 8 bytes of its own and waiting for their echo;
/// one thread, non-blocking sockets and poll(2).
final class VisitorBurst {
    struct Result {
        var served = 0
        var failed = 0
        var unanswered = 0
    }

    private struct Visitor {
        var fd: Int32
        var tag: UInt64
        var sent = false
        var got: [UInt8] = []
        var done = false
    }

    let port: UInt16
    private var visitors: [Visitor] = []
    private var result = Result()

    init(port: UInt16, count: Int) {
        self.port = port
        visitors.reserveCapacity(count)
        for i in 0..<count { visitors.append(Visitor(fd: -1, tag: 0x5600_0000_0000 | UInt64(i))) }
    }

    static func run(port: UInt16, count: Int, timeout: Double) -> Result {
        let burst = VisitorBurst(port: port, count: count)
        burst.connectAll()
        return burst.finish(timeout: timeout)
    }

    /// Starts every connection (non-blocking connects, as fast as the kernel takes them).
    func connectAll() {
        var address = loopbackAddress(port: port)
        for i in visitors.indices {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else {
                visitors[i].done = true
                result.failed += 1
                continue
            }
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if rc != 0 && errno != EINPROGRESS {
                Glibc.close(fd)
                visitors[i].done = true
                result.failed += 1
                continue
            }
            visitors[i].fd = fd
        }
    }

    /// Sends each visitor's bytes once connected and waits for every echo; closes everything.
    func finish(timeout: Double) -> Result {
        let deadline = monoNow() + timeout
        while monoNow() < deadline {
            var fds: [pollfd] = []
            var index: [Int] = []
            for (i, v) in visitors.enumerated() where !v.done {
                fds.append(pollfd(fd: v.fd, events: Int16(v.sent ? POLLIN : POLLOUT), revents: 0))
                index.append(i)
            }
            if fds.isEmpty { break }
            guard poll(&fds, nfds_t(fds.count), 200) > 0 else { continue }
            for (k, p) in fds.enumerated() where p.revents != 0 {
                step(index[k], revents: p.revents)
            }
        }
        for i in visitors.indices where !visitors[i].done {
            result.unanswered += 1
            Glibc.close(visitors[i].fd)
            visitors[i].done = true
        }
        return result
    }

    private func step(_ i: Int, revents: Int16) {
        var v = visitors[i]
        defer { visitors[i] = v }
        func end(_ ok: Bool) {
            if ok { result.served += 1 } else { result.failed += 1 }
            Glibc.close(v.fd)
            v.done = true
        }
        if !v.sent {
            var tag = v.tag.littleEndian
            guard revents & Int16(POLLOUT) != 0, Glibc.send(v.fd, &tag, 8, Int32(MSG_NOSIGNAL)) == 8 else { return end(false) }
            v.sent = true
            return
        }
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = recv(v.fd, &buffer, 8 - v.got.count, 0)
        guard n > 0 else { return end(false) }
        v.got += buffer[0..<n]
        guard v.got.count == 8 else { return }
        end(v.got == withUnsafeBytes(of: v.tag.littleEndian) { Array($0) })
    }
}

/// An echo service on one thread with poll(2): thousands of connections without a thread each.
final class PollingEcho: @unchecked Sendable {
    let listener: Listener
    var port: UInt16 { listener.port }
    private let stopped = Locked(false)
    private let thread: Thread

    init() throws {
        let listener = try Listener()
        self.listener = listener
        let stopped = self.stopped
        thread = Thread {
            var conns: [Int32] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while !stopped.get {
                var fds = [pollfd(fd: listener.fd, events: Int16(POLLIN), revents: 0)]
                fds += conns.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
                guard poll(&fds, nfds_t(fds.count), 100) > 0 else { continue }
                if fds[0].revents != 0 {
                    while true {
                        let fd = acceptCloexec(listener.fd)
                        if fd < 0 { break }
                        conns.append(fd)
                    }
                }
                var closed = Set<Int32>()
                for p in fds.dropFirst() where p.revents != 0 {
                    let n = recv(p.fd, &buffer, buffer.count, 0)
                    if n > 0 {
                        _ = Glibc.send(p.fd, buffer, n, Int32(MSG_NOSIGNAL))
                    } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                        Glibc.close(p.fd)
                        closed.insert(p.fd)
                    }
                }
                if !closed.isEmpty { conns.removeAll { closed.contains($0) } }
            }
            conns.forEach { Glibc.close($0) }
        }
        thread.start()
    }

    func stop() {
        stopped.withLock { $0 = true }
        listener.shutdown()
    }
}
