// Stopping while a visitor is connected: both ends get SIGTERM at once (what `systemctl stop` of a
// server and a client on one machine does) while a visitor's connection is open and idle. The
// client's exit ends one direction of the server's relay; the stop must end the other, whose poll
// sees a spurious wakeup from that very half-close (see relay_fail in ring.c). A lost cancel
// left the process waiting for its ring forever; this happened in about one stop in four.
import Glibc
import TestKit
import XCTest

final class ShutdownTests: EndToEndCase {
    func testBothEndsStopAtOnceWithAnIdleVisitor() throws {
        let echo = keep(try LocalService.echo())
        for round in 0..<12 {
            let publicPort = Ports.free()
            let (server, client) = try start(
                TunnelConfig(services: [ServiceSpec("svc", port: publicPort, localPort: echo.port)]),
                serverName: "server\(round)", clientName: "client\(round)")
            let visitor = try Conn.connect(port: publicPort)
            defer { visitor.close() }
            try visitor.send("hello\n")
            XCTAssertEqual(try visitor.readExact(6, timeout: 10), Array("hello\n".utf8))

            client.signal(SIGTERM)
            server.signal(SIGTERM)
            XCTAssertEqual(client.waitForExit(timeout: 10), .exited(0), "round \(round): the client stops")
            XCTAssertEqual(server.waitForExit(timeout: 10), .exited(0), "round \(round): the server stops")
            if server.poll() == nil || client.poll() == nil { return }
        }
    }
}
