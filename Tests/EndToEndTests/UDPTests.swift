// UDP services end to end: a real server and client, a UDP echo service behind the client,
// visitors' datagrams checked byte for byte; the client's per-visitor sockets counted in /proc;
// a hand-written client that sends malformed frames on a data channel.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class UDPTests: EndToEndCase {
    struct UDPTunnel {
        let server: RatholeProcess
        let client: RatholeProcess
        let config: TunnelConfig
        let echo: UDPEcho
        var controlPort: UInt16 { config.controlPort }
        var publicPort: UInt16 { config.services[0].port }
    }

    /// A server and a client with one UDP service `name` in front of a UDP echo service; returns
    /// once a datagram has made the round trip.
    private func startUDPTunnel(name: String = "uecho", ipv6: Bool = false, transport: TransportTables? = nil) throws -> UDPTunnel {
        let echo = keep(try UDPEcho(ipv6: ipv6))
        let host = Loopback.host(ipv6: ipv6)
        let service = ServiceSpec(name, type: "udp", port: Ports.freeUDP(ipv6: ipv6), localPort: echo.port, bindHost: host, localHost: host)
        var config = TunnelConfig(services: [service])
        if let transport { config.transport = transport }
        let (server, client) = try start(config)
        let t = UDPTunnel(server: server, client: client, config: config, echo: echo)
        try waitUDPForwarding(t, ipv6: ipv6)
        return t
    }

    /// Sends `payload` from `visitor` until its frame (IPv4 header, 13 bytes, then the payload)
    /// shows up on the raw data channel `data`: the server may still be putting the channel to
    /// work. Empty if it never does within 10 s.
    private func firstFrame(on data: Conn, of payload: [UInt8], from visitor: UDPSocket, toPort port: UInt16) throws -> [UInt8] {
        let deadline = monoNow() + 10
        while monoNow() < deadline {
            try visitor.send(payload, toPort: port)
            if data.waitReadable(timeout: 0.5) { return try data.readExact(13 + payload.count, timeout: 5) }
        }
        return []
    }

    /// Waits until a datagram makes the round trip (the server starts forwarding once a data
    /// channel is up; the readiness wait saw both pooled channels connected).
    private func waitUDPForwarding(_ t: UDPTunnel, ipv6: Bool = false, timeout: Double = 15) throws {
        let probe = try UDPSocket(ipv6: ipv6)
        defer { probe.close() }
        let deadline = monoNow() + timeout
        var n = 0
        while monoNow() < deadline {
            n += 1
            let payload = Array("udp probe \(n)".utf8)
            if probe.roundTrip(payload, toPort: t.publicPort, attempts: 1, timeout: 0.3) == payload { return }
        }
        throw TestFailure("no UDP datagram made the round trip within \(timeout)s")
    }

    // MARK: Sizes

    func testDatagramSizesRoundTripIntact() throws {
        let t = try startUDPTunnel()
        let sendersBefore = t.echo.senders.count
        let visitor = try UDPSocket()
        for (i, size) in [1, 100, 1472, 2048, 9000, 32768, 65507].enumerated() {
            let payload = patternBytes(count: size, seed: UInt64(0xD6 + i))
            guard let back = visitor.roundTrip(payload, toPort: t.publicPort) else {
                XCTFail("\(size)-byte datagram: no reply")
                continue
            }
            XCTAssertEqual(back.count, size, "\(size)-byte datagram came back with \(back.count) bytes")
            XCTAssertTrue(back == payload, "\(size)-byte datagram came back different")
        }
        // A burst of mixed sizes without waiting: every datagram comes back whole, as itself.
        var sent: [[UInt8]] = []
        for i in 0..<24 {
            let payload = patternBytes(count: [1, 700, 1500, 4000, 20000, 65500][i % 6] + (i / 6), seed: UInt64(900 + i))
            sent.append(payload)
            try visitor.send(payload, toPort: t.publicPort)
        }
        var got: [[UInt8]] = []
        while got.count < sent.count, let d = visitor.receive(timeout: 5) { got.append(d) }
        XCTAssertEqual(got.count, sent.count, "replies to a burst of \(sent.count) datagrams")
        for d in got {
            XCTAssertTrue(sent.contains(d), "a \(d.count)-byte reply that was never sent (datagram boundaries lost?)")
        }
        XCTAssertEqual(t.echo.senders.count - sendersBefore, 1, "one local socket for this visitor")
    }

    // MARK: Many visitors

    func testHundredVisitorsEachGetOnlyTheirOwnReplies() throws {
        let t = try startUDPTunnel()
        let baseline = try XCTUnwrap(t.client.udpSocketCount, "client UDP sockets")
        let sendersBefore = t.echo.senders.count
        let visitors = try (0..<100).map { _ in try UDPSocket() }
        defer { visitors.forEach { $0.close() } }
        // Three rounds; in each, every visitor sends its own payload before anyone reads.
        for round in 0..<3 {
            var payloads: [[UInt8]] = []
            for (i, v) in visitors.enumerated() {
                let p =
                    Array("visitor \(i) from port \(v.port), round \(round): ".utf8)
                    + patternBytes(count: 50 + i * 13, seed: UInt64(round * 1000 + i))
                payloads.append(p)
                try v.send(p, toPort: t.publicPort)
            }
            var missing: [Int] = []
            for (i, v) in visitors.enumerated() {
                // UDP may drop under a burst: resend once to a visitor that got nothing.
                var reply = v.receive(timeout: 3)
                if reply == nil {
                    try v.send(payloads[i], toPort: t.publicPort)
                    reply = v.receive(timeout: 3)
                }
                guard let reply else {
                    missing.append(i)
                    continue
                }
                XCTAssertTrue(
                    reply == payloads[i], "visitor \(i) got someone else's reply: \(String(decoding: reply.prefix(40), as: UTF8.self))")
            }
            XCTAssertEqual(missing, [], "visitors without a reply in round \(round)")
            // Nothing else arrives for a visitor: a visitor's datagrams keep to one channel and one
            // local socket, so anything meant for it comes before the echo of a last marker.
            for (i, v) in visitors.enumerated() {
                let marker = Array("end of round \(round) for visitor \(i)".utf8)
                var before: [[UInt8]] = []
                var back = false
                for _ in 0..<3 where !back {
                    try v.send(marker, toPort: t.publicPort)
                    while !back, let d = v.receive(timeout: 3) {
                        if d == marker { back = true } else { before.append(d) }
                    }
                }
                XCTAssertTrue(back, "visitor \(i): the marker of round \(round) never came back")
                let strays = before.filter { $0 != payloads[i] }
                XCTAssertEqual(
                    strays.count, 0,
                    "visitor \(i) got datagrams not its own: \(strays.map { String(decoding: $0.prefix(40), as: UTF8.self) })")
            }
        }
        // The client keeps one local socket per visitor: the service saw 100 new senders, and the
        // client process holds 100 more UDP sockets.
        XCTAssertEqual(t.echo.senders.count - sendersBefore, 100, "one local socket per visitor")
        let now = try XCTUnwrap(t.client.udpSocketCount)
        XCTAssertEqual(now - baseline, 100, "client UDP sockets went from \(baseline) to \(now)")
    }

    // MARK: Idle expiry

    /// The client drops a visitor's socket after 60 s without traffic: one wait of about a minute.
    func testIdleVisitorSocketsAreFreed() throws {
        let t = try startUDPTunnel()
        let baseline = try XCTUnwrap(t.client.udpSocketCount)
        let visitors = try (0..<10).map { _ in try UDPSocket() }
        defer { visitors.forEach { $0.close() } }
        for (i, v) in visitors.enumerated() {
            let p = Array("idle visitor \(i)".utf8)
            XCTAssertEqual(v.roundTrip(p, toPort: t.publicPort), p, "visitor \(i)")
        }
        let lastTraffic = monoNow()
        let busy = try XCTUnwrap(t.client.udpSocketCount)
        XCTAssertEqual(busy - baseline, 10, "one client socket per visitor")

        // Still there well before the idle timeout...
        sleepSeconds(45 - (monoNow() - lastTraffic))
        XCTAssertEqual(t.client.udpSocketCount, busy, "sockets dropped before 60 s of idleness")
        // ...and gone after it (the probe visitor's socket, idle since before, goes too: the client
        // has no UDP socket but its visitors').
        let freed = waitUntil(timeout: 80 - (monoNow() - lastTraffic), interval: 0.25) {
            t.client.udpSocketCount == 0
        }
        let after = t.client.udpSocketCount ?? -1
        XCTAssertTrue(
            freed, "client UDP sockets after \(Int(monoNow() - lastTraffic)) s idle: \(after) (baseline \(baseline), busy \(busy))")
        XCTAssertGreaterThanOrEqual(monoNow() - lastTraffic, 59, "freed before the idle timeout")

        // An expired visitor that comes back gets a fresh socket and its replies.
        let p = Array("back after a minute".utf8)
        XCTAssertEqual(visitors[3].roundTrip(p, toPort: t.publicPort), p)
        XCTAssertEqual(t.client.udpSocketCount, 1, "one socket for the returning visitor")
        XCTAssertTrue(t.server.isRunning && t.client.isRunning)
    }

    // MARK: Restart

    func testClientRestartRecovers() throws {
        let t = try startUDPTunnel()
        let visitor = try UDPSocket()
        let before = Array("before the restart".utf8)
        XCTAssertEqual(visitor.roundTrip(before, toPort: t.publicPort), before)

        let held = channels(of: t.server, t.config)
        t.client.killNow()
        // While the client is gone, datagrams go nowhere (and the server stays up).
        try visitor.send(Array("into the void".utf8), toPort: t.publicPort)
        XCTAssertNil(visitor.receive(timeout: 1), "a reply with no client running")
        XCTAssertTrue(t.server.isRunning)

        try t.client.start()
        try waitClientReady(t.client, server: t.server, t.config, since: held)
        // The same visitor (same source port) is served again.
        var recovered = false
        let deadline = monoNow() + 15
        while !recovered && monoNow() < deadline {
            let p = Array("after the restart".utf8)
            recovered = visitor.roundTrip(p, toPort: t.publicPort, attempts: 1, timeout: 0.5) == p
        }
        XCTAssertTrue(recovered, "datagrams flow again after the client restarted")
        for i in 0..<20 {
            let p = patternBytes(count: 1 + i * 500, seed: UInt64(i))
            XCTAssertEqual(visitor.roundTrip(p, toPort: t.publicPort), p, "datagram \(i) after the restart")
        }
        // A second visitor too.
        let other = try UDPSocket()
        let q = Array("a new visitor".utf8)
        XCTAssertEqual(other.roundTrip(q, toPort: t.publicPort), q)
    }

    // MARK: IPv6

    func testIPv6Visitors() throws {
        do {
            _ = try UDPSocket(ipv6: true)
        } catch {
            throw XCTSkip("[::1] is not usable here: \(error)")
        }
        let t = try startUDPTunnel(name: "uecho6", ipv6: true)
        let sendersBefore = t.echo.senders.count
        let visitors = try (0..<8).map { _ in try UDPSocket(ipv6: true) }
        defer { visitors.forEach { $0.close() } }
        for (i, v) in visitors.enumerated() {
            for size in [1, 1200, 9000, 65507] {
                let p = Array("v6 visitor \(i) ".utf8) + patternBytes(count: size - min(size, 13), seed: UInt64(i * 7 + size))
                let payload = Array(p.prefix(size))
                guard let back = v.roundTrip(payload, toPort: t.publicPort) else {
                    XCTFail("IPv6 visitor \(i), \(size) bytes: no reply")
                    continue
                }
                XCTAssertTrue(back == payload, "IPv6 visitor \(i), \(size) bytes: got \(back.count) different bytes")
            }
        }
        XCTAssertEqual(t.echo.senders.count - sendersBefore, 8, "one local socket per IPv6 visitor")
    }

    // MARK: Encrypted transports

    /// UDP services over Noise and TLS: datagrams of every size come back whole, and 20 visitors
    /// at once each get only their own replies.
    private func checkEncrypted(_ kind: TransportKind) throws {
        let t = try startUDPTunnel(name: "u\(kind.rawValue)", transport: try Transports.tables(kind, dir: dir))
        let visitor = try UDPSocket()
        for (i, size) in [1, 1472, 9000, 65507].enumerated() {
            let payload = patternBytes(count: size, seed: UInt64(0xE0 + i))
            XCTAssertEqual(visitor.roundTrip(payload, toPort: t.publicPort)?.count, size, "\(kind): a \(size)-byte datagram")
        }
        let visitors = try (0..<20).map { _ in try UDPSocket() }
        defer { visitors.forEach { $0.close() } }
        let payloads = visitors.enumerated().map { i, v in Array("\(kind) visitor \(i) port \(v.port)".utf8) }
        for (v, p) in zip(visitors, payloads) { try v.send(p, toPort: t.publicPort) }
        for (i, (v, p)) in zip(visitors, payloads).enumerated() {
            var reply = v.receive(timeout: 5)
            if reply == nil { reply = v.roundTrip(p, toPort: t.publicPort) }
            XCTAssertEqual(reply, p, "\(kind): visitor \(i)")
        }
        XCTAssertTrue(t.server.isRunning && t.client.isRunning)
    }

    func testOverNoise() throws { try checkEncrypted(.noiseNK) }
    func testOverTLS() throws { try checkEncrypted(.tls) }

    // MARK: Malformed frames from a client

    /// A hand-written client owns UDP service `fake`; the real client serves a UDP and a TCP
    /// service. Each malformed frame on the fake client's data channel closes that channel only,
    /// with a log line that says what was wrong.
    /// Visitor sockets are budgeted, a quarter of the open-file limit for the whole client: a crowd
    /// of UDP visitors (or datagrams from forged addresses) cannot take the fds that the client's
    /// TCP services need. The limit is said once in the log.
    func testVisitorSocketsAreBudgeted() throws {
        let echo = keep(try UDPEcho())
        let tcpEcho = keep(try LocalService.echo())
        let udp = ServiceSpec("crowd", type: "udp", port: Ports.freeUDP(), localPort: echo.port)
        let tcp = ServiceSpec("tcpecho", port: Ports.free(), localPort: tcpEcho.port)
        let config = TunnelConfig(services: [udp, tcp])
        let server = rathole("server", config: config.serverText)
        let client = rathole("client", config: config.clientText)
        client.launcher = ["prlimit", "--nofile=1200:1200"]  // a budget of 300 visitor sockets
        try server.start()
        try waitServerReady(server, config)
        try client.start()
        try waitClientReady(client, server: server, config)

        let crowd = try (0..<1000).map { _ in try UDPSocket() }
        defer { crowd.forEach { $0.close() } }
        for (i, v) in crowd.enumerated() { try v.send(Array("visitor \(i)".utf8), toPort: udp.port) }
        XCTAssertTrue(client.waitForLog("too many UDP visitors", timeout: 20), "the limit is logged")
        // Once the flood is worked off the count stops moving.
        let sockets = settled(timeout: 20) { client.udpSocketCount } ?? -1
        XCTAssertLessThanOrEqual(sockets, 300, "client UDP sockets past the budget")
        XCTAssertGreaterThanOrEqual(sockets, 250, "visitors within the budget are served")
        XCTAssertEqual(client.occurrences(of: "too many UDP visitors"), 1, "said once, not per datagram")
        for i in 0..<20 { try echoOnce(port: tcp.port, payload: Array("tcp still works \(i)".utf8)) }
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    /// A UDP data channel that breaks while its control channel lives is replaced: the server asks
    /// the client for another (as upstream does), after a pause when it broke at once, and the new
    /// channel carries the visitors' datagrams.
    func testBrokenChannelIsReplaced() throws {
        let port = Ports.freeUDP()
        let config = TunnelConfig(services: [ServiceSpec("flaky", type: "udp", port: port, localPort: 9)])
        let control = config.controlPort
        let server = rathole("server", config: config.serverText)
        try server.start()
        try waitServerReady(server, config)
        let (controlConn, ack, key) = try RawClient.handshake(port: control, service: "flaky", token: TunnelConfig.defaultToken)
        defer { controlConn.close() }
        XCTAssertEqual(ack, 0, "Ack Ok")
        XCTAssertEqual(hexString(try controlConn.readExact(8, timeout: 5)), "0000000000000000", "two CreateDataChannel")
        for round in 0..<3 {
            let data = try RawClient.dataChannel(port: control, sessionKey: key)
            XCTAssertEqual(hexString(try data.readExact(4, timeout: 5)), "01000000", "round \(round): StartForwardUdp")
            data.close()
            XCTAssertEqual(
                hexString(try controlConn.readExact(4, timeout: 5)), "00000000",
                "round \(round): a CreateDataChannel to replace the broken channel")
        }
        // The replacement works: a visitor's datagram arrives framed on it.
        let data = try RawClient.dataChannel(port: control, sessionKey: key)
        defer { data.close() }
        XCTAssertEqual(hexString(try data.readExact(4, timeout: 5)), "01000000")
        let visitor = try UDPSocket()
        defer { visitor.close() }
        let hello = Array("still served".utf8)
        let frame = try firstFrame(on: data, of: hello, from: visitor, toPort: port)
        XCTAssertEqual(hexString(frame), hexString(RawClient.ipv4Frame(port: visitor.port, payload: hello)))
    }

    func testMalformedFramesCloseOnlyThatChannel() throws {
        let udpEcho = keep(try UDPEcho())
        let tcpEcho = keep(try LocalService.echo())
        let fakePort = Ports.freeUDP()
        let realPort = Ports.freeUDP()
        let tcpPort = Ports.free()
        let fake = ServiceSpec("fake", type: "udp", port: fakePort, localPort: 9, sides: .serverOnly)
        let real = ServiceSpec("real", type: "udp", port: realPort, localPort: udpEcho.port)
        let tcp = ServiceSpec("tcpecho", port: tcpPort, localPort: tcpEcho.port)
        let config = TunnelConfig(services: [fake, real, tcp])
        let control = config.controlPort
        let (server, client) = try start(config)

        let (controlConn, ack, key) = try RawClient.handshake(port: control, service: "fake", token: TunnelConfig.defaultToken)
        defer { controlConn.close() }
        XCTAssertEqual(ack, 0, "Ack Ok")
        XCTAssertEqual(hexString(try controlConn.readExact(8, timeout: 5)), "0000000000000000", "two CreateDataChannel for a UDP service")

        let visitor = try UDPSocket()
        let vp = visitor.port
        let cases: [(what: String, bytes: [UInt8], thenEOF: Bool, expect: String)] = [
            (
                "header length byte 13", [13] + RawClient.ipv4Frame(port: vp, payload: Array("abcde".utf8)).dropFirst(), false,
                "header length byte is 13"
            ),
            (
                "address tag 7", [12, 7, 0, 0, 0, 127, 0, 0, 1, UInt8(vp & 0xff), UInt8(vp >> 8), 5, 0] + Array("abcde".utf8), false,
                "unknown socket address tag 7"
            ),
            (
                "declared length 65535", RawClient.ipv4Frame(port: vp, length: 65535, payload: patternBytes(count: 100, seed: 1)), false,
                "payload length 65535 exceeds"
            ),
            (
                "declared length past the end of the data", RawClient.ipv4Frame(port: vp, length: 1000, payload: Array("only ten b".utf8)),
                true,
                "ended in the middle of a frame"
            ),
        ]
        var realRound = 0
        for (k, c) in cases.enumerated() {
            // A fresh data channel; it gets StartForwardUdp and works.
            let data = try RawClient.dataChannel(port: control, sessionKey: key)
            defer { data.close() }
            XCTAssertEqual(hexString(try data.readExact(4, timeout: 5)), "01000000", "\(c.what): StartForwardUdp")
            let hello = Array("hello fake \(k)".utf8)
            let frame = try firstFrame(on: data, of: hello, from: visitor, toPort: fakePort)
            XCTAssertEqual(
                hexString(frame), hexString(RawClient.ipv4Frame(port: vp, payload: hello)),
                "\(c.what): the visitor's datagram framed with its address")
            while data.waitReadable(timeout: 0.2) { _ = try data.readExact(13 + hello.count, timeout: 5) }
            let reply = Array("reply \(k)".utf8)
            try data.send(RawClient.ipv4Frame(port: vp, payload: reply))
            XCTAssertEqual(visitor.receive(timeout: 5), reply, "\(c.what): a good frame reaches the visitor")

            // The malformed frame: the server closes this channel and says why.
            let logged = server.occurrences(of: c.expect)
            try data.send(c.bytes)
            if c.thenEOF { data.shutdownWrite() }
            let rest = data.waitClosed(timeout: 10)
            XCTAssertNotNil(rest, "\(c.what): the server kept the data channel open")
            XCTAssertEqual(hexString(rest ?? []), "", "\(c.what): nothing more on the channel")
            XCTAssertTrue(server.waitForLog(c.expect, count: logged + 1, timeout: 5), "\(c.what): no log line with \"\(c.expect)\"")
            let line = server.lines(containing: c.expect).last ?? ""
            XCTAssertTrue(line.contains("fake"), "\(c.what): the log line names the service: \(line)")
            XCTAssertTrue(line.contains(" WARN ") || line.contains("ERROR"), "\(c.what): logged as a warning or error: \(line)")
            // (That the visitor got nothing from the malformed frame shows in the next round: the
            // next datagram it receives must be that round's good frame; after the last, below.)

            // Everything else keeps working: the control channel, the real client's services.
            switch controlConn.readSome(timeout: 0.05) {
            case .timeout: break
            case .data(let bytes):  // requests to replace the channels that broke
                XCTAssertTrue(
                    bytes.count % 4 == 0 && bytes.allSatisfy { $0 == 0 },
                    "\(c.what): only CreateDataChannel on the control channel, got \(hexString(bytes))")
            case .eof, .error: XCTFail("\(c.what): the control channel must stay open")
            }
            realRound += 1
            let u = try UDPSocket()
            let up = Array("real udp \(realRound)".utf8)
            XCTAssertEqual(u.roundTrip(up, toPort: realPort), up, "\(c.what): the other UDP service")
            XCTAssertNoThrow(try echoOnce(port: tcpPort, payload: Array("real tcp \(realRound)".utf8)), "\(c.what): the TCP service")
        }
        let data = try RawClient.dataChannel(port: control, sessionKey: key)
        defer { data.close() }
        XCTAssertEqual(hexString(try data.readExact(4, timeout: 5)), "01000000")
        let last = Array("after the last malformed frame".utf8)
        try data.send(RawClient.ipv4Frame(port: vp, payload: last))
        XCTAssertEqual(visitor.receive(timeout: 10), last, "the visitor's next datagram is the good one, nothing from a malformed frame")
        XCTAssertTrue(server.isRunning && client.isRunning)
    }
}
