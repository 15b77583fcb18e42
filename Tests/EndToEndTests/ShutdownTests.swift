// Stopping while a visitor is connected: both ends get SIGTERM at once (what `systemctl stop` of a
// server and a client on one machine does) while a visitor's connection is open and idle. The
// client's exit ends one direction of the server's relay; the stop must end the other, whose poll
// sees a spurious wakeup from that very half-close (see relay_fail in ring.c). A lost cancel
// left the process waiting for its ring forever; this happened in about one stop in four.
import Glibc
import XCTest

final class ShutdownTests: E2ETestCase {
    func testBothEndsStopAtOnceWithAnIdleVisitor() throws {
        let echo = keep(try LocalService.echo())
        for round in 0..<12 {
            let control = Ports.free()
            let publicPort = Ports.free()
            let server = rathole("server\(round)", config: serverConfig(controlPort: control, services: [("svc", publicPort)]))
            let client = rathole("client\(round)", config: clientConfig(controlPort: control, services: [("svc", echo.port)]))
            try server.start()
            try waitServerReady(server, service: "svc")
            try client.start()
            try waitClientReady(client, service: "svc")
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
