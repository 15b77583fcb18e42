// Many visitors at once: bursts beyond what the server holds in user space, floods while the client
// is frozen, and one process per port.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class BurstTests: EndToEndCase {
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
        let baselineFDs = try XCTUnwrap(settled { t.server.fdCount })
        let baselineRSS = try XCTUnwrap(t.server.rssKiB)

        t.client.signal(SIGSTOP)
        let frozenAt = monoNow()
        let burst = VisitorBurst(port: t.publicPort, count: 2000)
        burst.connectAll()
        // The server takes what it holds and leaves the rest in the backlog.
        let held = settled(timeout: 4) { t.server.fdCount } ?? .max
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
        let publicPort = Ports.free()
        let (server, client) = try start(
            TunnelConfig(services: [ServiceSpec("svc", port: publicPort, localPort: echo.port)]),
            environment: ["RUST_LOG": "info"])
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
        XCTAssertTrue(
            second.log.contains("127.0.0.1:\(t.controlPort)") && second.log.contains("in use"),
            "the error names the address: \(second.log)")
        XCTAssertTrue(waitUntilForwarding(port: t.publicPort, timeout: 10), "the first server still serves")
    }
}
