// The TCP options of the config reach the sockets: nodelay and the keepalive keys of
// [server.transport.tcp] and [client.transport.tcp] on the control and data channels, and each
// service's nodelay on its visitors and local connections. Read back from the processes' own
// sockets (pidfd_getfd and getsockopt), while a visitor of each service is being relayed.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class SocketOptionTests: EndToEndCase {
    private struct Setup {
        let server: RatholeProcess
        let client: RatholeProcess
        let config: TunnelConfig
        let quiet: ServiceSpec
        let chatty: ServiceSpec
        let visitors: [Conn]
    }

    /// Two echo services, `quiet` with the transport's nodelay and `chatty` with nodelay = true of
    /// its own, and one visitor on each that made a round trip and stays connected.
    private func setUp(serverTCP: String?, clientTCP: String?) throws -> Setup {
        let quietEcho = keep(try LocalService.echo())
        let chattyEcho = keep(try LocalService.echo())
        let quiet = ServiceSpec("quiet", port: Ports.free(), localPort: quietEcho.port)
        let chatty = ServiceSpec(
            "chatty", port: Ports.free(), localPort: chattyEcho.port,
            serverKeys: ["nodelay = true"], clientKeys: ["nodelay = true"])
        var config = TunnelConfig(services: [quiet, chatty])
        if let serverTCP { config.serverTables = "[server.transport.tcp]\n" + serverTCP }
        if let clientTCP { config.clientTables = "[client.transport.tcp]\n" + clientTCP }
        let (server, client) = try start(config)
        let visitors = try [quiet, chatty].map { s -> Conn in
            let v = try Conn.connect(port: s.port)
            try v.send("hello \(s.name)")
            XCTAssertEqual(try v.readExact(6 + s.name.count, timeout: 15), Array("hello \(s.name)".utf8))
            return v
        }
        return Setup(server: server, client: client, config: config, quiet: quiet, chatty: chatty, visitors: visitors)
    }

    /// The options of `process`'s established sockets that `matches` picks; fails if there is none.
    private func options(
        _ process: RatholeProcess, _ what: String, _ matches: (TCPSocketEntry) -> Bool,
        file: StaticString = #filePath, line: UInt = #line
    ) throws -> [TCPSocketOptions] {
        let found = try process.tcpSockets.filter { $0.isEstablished && matches($0) }.compactMap {
            try process.socketOptions(inode: $0.inode)
        }
        XCTAssertFalse(found.isEmpty, "\(process.name): no \(what) socket", file: file, line: line)
        return found
    }

    private func assertAll(
        _ found: [TCPSocketOptions], _ expected: TCPSocketOptions, _ what: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        for (i, o) in found.enumerated() {
            XCTAssertEqual(o, expected, "\(what) \(i) of \(found.count)", file: file, line: line)
        }
    }

    private func assertNoDelay(
        _ found: [TCPSocketOptions], _ expected: Bool, _ what: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        for (i, o) in found.enumerated() {
            XCTAssertEqual(o.noDelay, expected, "\(what) \(i) of \(found.count): \(o)", file: file, line: line)
        }
    }

    func testTransportAndServiceOptionsReachTheSockets() throws {
        let s = try setUp(
            serverTCP: "nodelay = false\nkeepalive_secs = 37\nkeepalive_interval = 7\n",
            clientTCP: "nodelay = false\nkeepalive_secs = 41\nkeepalive_interval = 9\n")
        let control = s.config.controlPort
        let serverChannels = try options(s.server, "channel") { $0.localPort == control }
        XCTAssertGreaterThanOrEqual(serverChannels.count, 2 * 9, "the server's control and data channels")
        assertAll(
            serverChannels, TCPSocketOptions(noDelay: false, keepAlive: true, keepIdle: 37, keepInterval: 7),
            "server channel (server.transport.tcp)")
        let clientChannels = try options(s.client, "channel") { $0.remotePort == control }
        XCTAssertGreaterThanOrEqual(clientChannels.count, 2 * 9, "the client's control and data channels")
        assertAll(
            clientChannels, TCPSocketOptions(noDelay: false, keepAlive: true, keepIdle: 41, keepInterval: 9),
            "client channel (client.transport.tcp)")

        // A service without nodelay of its own takes the transport's (false); one with it, its own.
        assertNoDelay(try options(s.server, "quiet visitor") { $0.localPort == s.quiet.port }, false, "server: quiet visitor")
        assertNoDelay(try options(s.server, "chatty visitor") { $0.localPort == s.chatty.port }, true, "server: chatty visitor")
        assertNoDelay(try options(s.client, "quiet local") { $0.remotePort == s.quiet.localPort }, false, "client: quiet local connection")
        assertNoDelay(
            try options(s.client, "chatty local") { $0.remotePort == s.chatty.localPort }, true, "client: chatty local connection")
        s.visitors.forEach { $0.close() }
    }

    /// Without [*.transport.tcp]: nodelay on everywhere, keepalive 20 s then every 8 s (rathole's
    /// defaults).
    func testDefaults() throws {
        let s = try setUp(serverTCP: nil, clientTCP: nil)
        let control = s.config.controlPort
        let defaults = TCPSocketOptions(noDelay: true, keepAlive: true, keepIdle: 20, keepInterval: 8)
        assertAll(try options(s.server, "channel") { $0.localPort == control }, defaults, "server channel")
        assertAll(try options(s.client, "channel") { $0.remotePort == control }, defaults, "client channel")
        for (p, what, pick) in [
            (s.server, "visitor", { (e: TCPSocketEntry) in e.localPort == s.quiet.port }),
            (s.client, "local", { (e: TCPSocketEntry) in e.remotePort == s.quiet.localPort }),
        ] {
            assertNoDelay(try options(p, what, pick), true, "\(p.name): \(what)")
        }
        s.visitors.forEach { $0.close() }
    }
}
