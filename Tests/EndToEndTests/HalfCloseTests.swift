// The service closes its side first, then the visitor sends 300 KB and closes its own: every byte
// arrives, over every transport, twenty connections each. The end of a connection is where bytes get
// lost: on wss the peer's TLS close_notify followed its close frame, and a relay that had already
// closed its socket answered it with a reset that threw away the tail it had not delivered yet
// (about one connection in three).
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class HalfCloseTests: EndToEndCase {
    private func websocket(tls: Bool) throws -> TransportTables {
        var t = TransportTables(
            server: "[server.transport]\ntype = \"websocket\"\n[server.transport.websocket]\ntls = \(tls)\n",
            client: "[client.transport]\ntype = \"websocket\"\n[client.transport.websocket]\ntls = \(tls)\n")
        if tls {
            let d = try Transports.certs(in: dir)
            t.server += "[server.transport.tls]\npkcs12 = \"\(d)/server.p12\"\npkcs12_password = \"\(Transports.p12Password)\"\n"
            t.client += "[client.transport.tls]\ntrusted_root = \"\(d)/ca.pem\"\nhostname = \"localhost\"\n"
        }
        return t
    }

    private func check(_ what: String, _ transport: TransportTables?) throws {
        let received = Locked<[[UInt8]]>([])
        let closing = keep(
            try LocalService(name: "early-closer") { conn in
                try? conn.send("bye;")
                conn.shutdownWrite()
                let got = (try? conn.readToEOF(timeout: 30)) ?? []
                received.withLock { $0.append(got) }
            })
        var config = TunnelConfig(services: [ServiceSpec("closing", port: Ports.free(), localPort: closing.port)])
        if let transport { config.transport = transport }
        let (server, client) = try start(config, serverName: "server-\(what)", clientName: "client-\(what)")
        let late = patternBytes(count: 300_000, seed: 7)
        for round in 0..<20 {
            let v = try Conn.connect(port: config.services[0].port)
            XCTAssertEqual(try v.readToEOF(timeout: 15), Array("bye;".utf8), "\(what) \(round): the service's FIN reaches the visitor")
            try v.send(late)
            v.shutdownWrite()
            XCTAssertTrue(
                waitUntil(timeout: 15) { received.get.count > round }, "\(what) \(round): the service never saw the visitor's EOF")
            let got = received.get.last ?? []
            XCTAssertEqual(got.count, late.count, "\(what) \(round): bytes after the service's FIN")
            XCTAssertNil(firstMismatch(got, prefixOf: late), "\(what) \(round): corrupt bytes")
            v.close()
        }
        client.killNow()
        server.killNow()
    }

    func testTCP() throws { try check("tcp", nil) }
    func testNoise() throws { try check("noise", try Transports.tables(.noiseNK, dir: dir)) }
    func testTLS() throws { try check("tls", try Transports.tables(.tls, dir: dir)) }
    func testWebSocket() throws { try check("ws", try websocket(tls: false)) }
    func testSecureWebSocket() throws { try check("wss", try websocket(tls: true)) }
}
