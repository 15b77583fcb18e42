// Conformance with the recorded upstream rathole transcripts (/work/shared/wire, scenarios 01, 02,
// 03 and 05): the recorded client side is replayed against OUR server over raw sockets, and the
// recorded server side is played against OUR client by a small fake server in the test. Every
// answer is checked byte for byte.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

/// Bytes copied from the transcripts (`NN-*.hex.txt`).
enum Recorded {
    // 01-tcp-session: service "echo", token "wire_token_1".
    static let helloEcho = hexBytes("0000000001092c79e8f80e559e404bcf660c48f3522b67aba9ff1484b0367e1a4ddef7431d")
    static let serverHello01 = hexBytes("0000000001c70075432209553efea6bb1d5dd91c20687efd73714957e46d3a7240f418ca1a")
    static let auth01 = hexBytes("460f48b99fd3f62d57cdfd0bd0f52363c86e6c3f2c382d2807610a21af5fb328")
    static let dataHello01 = hexBytes("0100000001460f48b99fd3f62d57cdfd0bd0f52363c86e6c3f2c382d2807610a21af5fb328")
    static let ackOk = hexBytes("00000000")
    static let createDataChannel = hexBytes("00000000")
    /// The server's chunks after its Hello in 01: Ack Ok, then 5 + 3 CreateDataChannel.
    static let serverChunks01 = [
        hexBytes("00000000"), hexBytes("0000000000000000000000000000000000000000"),
        hexBytes("000000000000000000000000"),
    ]
    static let startForwardPlusPayload01 = hexBytes("0000000068656c6c6f20726174686f6c652d30")
    static let payload0 = hexBytes("68656c6c6f20726174686f6c652d30")  // "hello rathole-0"
    static let payload1 = hexBytes("68656c6c6f20726174686f6c652d31")  // "hello rathole-1"

    // 02-wrong-token: server token "right_token", client token "wrong_token".
    static let nonce02 = hexBytes("a55912afba5069e3e66a9fbaa1d7acc14db0e23b9b4b6235d7113732bb13ebee")
    static let auth02 = hexBytes("1c8f1d958f05d2618f4678115599dc875ab80408d0cdf31caf62a229bc36c9c9")
    static let ackAuthFailed = hexBytes("02000000")

    // 03-unknown-service: service "nosuch".
    static let helloNosuch = hexBytes("00000000019e62f93eb7d2499903ac66232f187c56fc050eb74c765f90eb214360b21f0e96")
    static let ackServiceNotExist = hexBytes("01000000")

    // 05-heartbeat.
    static let heartBeat = hexBytes("01000000")
}

final class ConformanceTests: EndToEndCase {
    /// Our server with one service "echo" on a fresh public port.
    private func startOurServer(
        token: String, heartbeatInterval: Int? = nil
    ) throws -> (server: RatholeProcess, control: UInt16, publicPort: UInt16) {
        var config = TunnelConfig(services: [ServiceSpec("echo", port: Ports.free(), localPort: 1)], token: token)
        if let heartbeatInterval { config.serverKeys = ["heartbeat_interval = \(heartbeatInterval)"] }
        let server = rathole("server", config: config.serverText)
        try server.start()
        try waitServerReady(server, config)
        return (server, config.controlPort, config.services[0].port)
    }

    /// Sends the recorded control-channel Hello for "echo" and checks our server's Hello: 37 bytes,
    /// tag 0, version 1, then a 32-byte nonce. Returns the nonce.
    private func sendHelloReadNonce(_ c: Conn, hello: [UInt8] = Recorded.helloEcho) throws -> [UInt8] {
        try c.send(hello)
        let serverHello = try c.readExact(37, timeout: 10)
        XCTAssertEqual(Array(serverHello[0..<4]), [0, 0, 0, 0], "server Hello tag must be 0 (ControlChannelHello)")
        XCTAssertEqual(serverHello[4], 1, "server Hello protocol version must be 1")
        let nonce = Array(serverHello[5...])
        XCTAssertNotEqual(nonce, [UInt8](repeating: 0, count: 32), "nonce must be random, not zero")
        return nonce
    }

    private func authDigest(token: String, nonce: [UInt8]) -> [UInt8] {
        Digest.auth(token: Array(token.utf8), nonce: Digest(bytes: nonce)!).bytes
    }

    /// A control channel for "echo", authenticated by hand: Ack Ok and the eight CreateDataChannel
    /// of the initial pool are read. Returns it with its session key.
    private func authenticatedControlChannel(port: UInt16, token: String) throws -> (conn: Conn, key: [UInt8]) {
        let c = try Conn.connect(port: port)
        let key = authDigest(token: token, nonce: try sendHelloReadNonce(c))
        try c.send(key)
        XCTAssertEqual(try c.readExact(36, timeout: 10), [UInt8](repeating: 0, count: 36), "Ack Ok and eight CreateDataChannel")
        return (c, key)
    }

    /// The digest helpers reproduce the recorded values, so the expectations below are sound.
    func testRecordedDigestsAreReproduced() {
        XCTAssertEqual(Digest.service(named: "echo").bytes, Array(Recorded.helloEcho[5...]))
        XCTAssertEqual(Digest.service(named: "nosuch").bytes, Array(Recorded.helloNosuch[5...]))
        XCTAssertEqual(authDigest(token: "wire_token_1", nonce: Array(Recorded.serverHello01[5...])), Recorded.auth01)
        XCTAssertEqual(authDigest(token: "wrong_token", nonce: Recorded.nonce02), Recorded.auth02)
    }

    // MARK: Recorded client side against our server

    /// Scenario 01: handshake, exactly eight CreateDataChannel, data channels, a visitor,
    /// StartForwardTcp then the visitor's bytes, one refill, echo both ways, FIN both ways.
    /// The server beats every second here: an idle control channel's HeartBeat comes after
    /// everything the server had to send, so the messages before it are all there were.
    func testServerReplaysScenario01TcpSession() throws {
        let (_, control, publicPort) = try startOurServer(token: "wire_token_1", heartbeatInterval: 1)
        let c = try Conn.connect(port: control)
        let nonce = try sendHelloReadNonce(c)
        let sessionKey = authDigest(token: "wire_token_1", nonce: nonce)
        try c.send(sessionKey)
        let answer = try c.readExact(36, timeout: 10)
        XCTAssertEqual(
            hexString(answer), hexString(Recorded.serverChunks01.flatMap { $0 }),
            "after Auth: Ack Ok then exactly eight CreateDataChannel")
        let messages = ControlMessages(c)
        try messages.readUntilNewHeartbeat()
        XCTAssertEqual(messages.others.map { hexString($0) }, [], "no more than eight CreateDataChannel at first")

        // Eight data channels, as the recorded client opened them.
        var channels: [Conn] = []
        for _ in 0..<8 {
            let d = try Conn.connect(port: control)
            try d.send([1, 0, 0, 0, 1] + sessionKey)
            channels.append(d)
        }

        // A visitor on the service port.
        let visitor = try Conn.connect(port: publicPort)
        try visitor.send(Recorded.payload0)
        guard let chosen = firstReadable(channels, timeout: 10) else {
            XCTFail("no data channel received StartForwardTcp")
            return
        }
        XCTAssertEqual(
            hexString(try chosen.readExact(19, timeout: 10)), hexString(Recorded.startForwardPlusPayload01),
            "StartForwardTcp, then the visitor's bytes (the server never answers a data channel hello)")

        // The relay: back to the visitor, a second round, then FIN each way.
        try chosen.send(Recorded.payload0)
        XCTAssertEqual(try visitor.readExact(15, timeout: 10), Recorded.payload0)
        try visitor.send(Recorded.payload1)
        XCTAssertEqual(try chosen.readExact(15, timeout: 10), Recorded.payload1)
        try chosen.send(Recorded.payload1)
        XCTAssertEqual(try visitor.readExact(15, timeout: 10), Recorded.payload1)
        visitor.shutdownWrite()
        XCTAssertEqual(chosen.readSome(timeout: 10), .eof, "the visitor's FIN reaches the data channel")
        chosen.shutdownWrite()
        XCTAssertEqual(visitor.readSome(timeout: 10), .eof, "the data channel's FIN reaches the visitor")

        // The visitor was placed before its StartForwardTcp was written, and its refill asked for
        // then: a HeartBeat written after this point follows the refill.
        try messages.readUntilNewHeartbeat()
        XCTAssertEqual(
            messages.others.map { hexString($0) }, [hexString(Recorded.createDataChannel)],
            "exactly one CreateDataChannel refill per visitor, and nothing else on the control channel")

        // The client goes away (as at the end of the recording): its pooled channels are closed,
        // having carried nothing at all.
        c.close()
        for (i, d) in channels.enumerated() where d !== chosen {
            let got = d.waitClosed(timeout: 10)
            XCTAssertNotNil(got, "pooled channel \(i) closed when its control channel ended")
            XCTAssertEqual(hexString(got ?? []), "", "pooled channel \(i): the server never answers a data channel hello")
        }
    }

    /// A second successful handshake for the same service replaces the first control channel
    /// (the newest client wins); the old session's pooled data channels go with it.
    func testServerNewestControlChannelWins() throws {
        let (_, control, publicPort) = try startOurServer(token: "wire_token_1")
        let (first, key1) = try authenticatedControlChannel(port: control, token: "wire_token_1")
        let oldChannel = try Conn.connect(port: control)
        try oldChannel.send([1, 0, 0, 0, 1] + key1)
        sleepSeconds(0.2)

        let (second, key2) = try authenticatedControlChannel(port: control, token: "wire_token_1")
        XCTAssertNotEqual(key1, key2)
        XCTAssertNotNil(first.waitClosed(timeout: 10), "the older control channel is closed")
        XCTAssertNotNil(oldChannel.waitClosed(timeout: 10), "the older session's pooled data channel is closed")

        // The old session key is no longer accepted; the new one serves visitors.
        let stale = try Conn.connect(port: control)
        try stale.send([1, 0, 0, 0, 1] + key1)
        XCTAssertNotNil(stale.waitClosed(timeout: 10), "a data channel with the replaced session key is closed")
        let fresh = try Conn.connect(port: control)
        try fresh.send([1, 0, 0, 0, 1] + key2)
        let visitor = try Conn.connect(port: publicPort)
        try visitor.send("v")
        XCTAssertEqual(try fresh.readExact(5, timeout: 10), [0, 0, 0, 0, UInt8(ascii: "v")])
        XCTAssertEqual(try second.readExact(4, timeout: 10), Recorded.createDataChannel)
    }

    /// One data channel, then at once one visitor, many times over: every channel must go to the
    /// visitor that is waiting (a channel filed just as the visitor starts to wait must not be
    /// left in the pool while the visitor waits for the next one).
    func testServerPairsEachNewDataChannelWithTheWaitingVisitor() throws {
        let (_, control, publicPort) = try startOurServer(token: "wire_token_1")
        let (session, key) = try authenticatedControlChannel(port: control, token: "wire_token_1")
        defer { session.close() }  // the session lives as long as its control channel
        for round in 0..<40 {
            let d = try Conn.connect(port: control)
            try d.send([1, 0, 0, 0, 1] + key)
            let v = try Conn.connect(port: publicPort)
            try v.send([UInt8(round)])
            guard let got = try? d.readExact(5, timeout: 5) else {
                XCTFail("round \(round): the visitor was not paired with the data channel just opened")
                return
            }
            XCTAssertEqual(got, [0, 0, 0, 0, UInt8(round)], "round \(round)")
            try d.send([UInt8(round) ^ 0xff])
            XCTAssertEqual(try v.readExact(1, timeout: 5), [UInt8(round) ^ 0xff], "round \(round)")
            v.close()
            d.close()
        }
    }

    /// A visitor that sent 30 KB before its channel came: StartForwardTcp (held back by MSG_MORE
    /// for the relay's first splice) comes first, then every byte once and in order, then more
    /// bytes and the FIN.
    func testVisitorBytesSentBeforeItsChannelArriveOnceAndInOrder() throws {
        let (_, control, publicPort) = try startOurServer(token: "wire_token_1")
        let (session, key) = try authenticatedControlChannel(port: control, token: "wire_token_1")
        defer { session.close() }
        let payload = (0..<30_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }
        let v = try Conn.connect(port: publicPort)
        try v.send(payload)  // no channel exists yet: the visitor waits in the pool
        let d = try Conn.connect(port: control)
        try d.send([1, 0, 0, 0, 1] + key)
        XCTAssertEqual(try d.readExact(4 + payload.count, timeout: 10), [0, 0, 0, 0] + payload)
        try v.send("and more")
        XCTAssertEqual(try d.readExact(8, timeout: 10), Array("and more".utf8))
        v.shutdownWrite()
        XCTAssertEqual(d.readSome(timeout: 10), .eof, "the visitor's FIN follows its bytes")
        d.close()
        v.close()
    }

    /// Idle channels the client closed are dropped when a visitor comes, and the client is asked
    /// for a new one even when the pool looked full (16 idle, all of them dead).
    func testDeadPooledChannelsAreReplacedForTheVisitor() throws {
        let (_, control, publicPort) = try startOurServer(token: "wire_token_1")
        let (c, key) = try authenticatedControlChannel(port: control, token: "wire_token_1")
        // 16 channels (twice the pool), then the client closes them all.
        let idle = try (0..<16).map { _ -> Conn in
            let d = try Conn.connect(port: control)
            try d.send([1, 0, 0, 0, 1] + key)
            return d
        }
        sleepSeconds(0.3)
        idle.forEach { $0.close() }
        sleepSeconds(0.3)

        let v = try Conn.connect(port: publicPort)
        try v.send("after the dead ones")
        XCTAssertEqual(try c.readExact(4, timeout: 5), Recorded.createDataChannel, "a request for a live channel")
        let d = try Conn.connect(port: control)
        try d.send([1, 0, 0, 0, 1] + key)
        XCTAssertEqual(
            try d.readExact(4 + 19, timeout: 5), [0, 0, 0, 0] + Array("after the dead ones".utf8),
            "StartForwardTcp, then the visitor's bytes")
        d.close()
        v.close()
    }

    /// A client that connects the moment the control port opens is accepted: the server takes
    /// control channels only once its services are registered (it once answered ServiceNotExist).
    func testServerKnowsItsServicesAsSoonAsTheControlPortOpens() throws {
        for round in 0..<50 {
            let config = TunnelConfig(services: [ServiceSpec("echo", port: Ports.free(), localPort: 1)], token: "early")
            let control = config.controlPort
            let server = rathole("early-\(round)", config: config.serverText)
            try server.start()
            var conn: Conn?
            let deadline = monoNow() + 10
            while conn == nil && monoNow() < deadline {
                conn = try? Conn.connect(port: control)
                if conn == nil { usleep(200) }
            }
            let c = try XCTUnwrap(conn, "round \(round): the control port never opened")
            try c.send(authDigest(token: "early", nonce: try sendHelloReadNonce(c)))
            XCTAssertEqual(try c.readExact(4, timeout: 10), Recorded.ackOk, "round \(round)")
            c.close()
            server.killNow()
        }
    }

    /// Scenario 02: a wrong token gets Ack AuthFailed (02000000) and then the connection closes.
    func testServerReplaysScenario02WrongToken() throws {
        let (_, control, _) = try startOurServer(token: "right_token")
        for _ in 0..<2 {
            let c = try Conn.connect(port: control)
            let nonce = try sendHelloReadNonce(c)
            try c.send(authDigest(token: "wrong_token", nonce: nonce))
            guard let rest = c.waitClosed(timeout: 10) else {
                XCTFail("server did not close after AuthFailed")
                return
            }
            XCTAssertEqual(hexString(rest), hexString(Recorded.ackAuthFailed), "exactly Ack AuthFailed, then close")
        }
        // The server is still fine: the right token is accepted.
        let c = try Conn.connect(port: control)
        let nonce = try sendHelloReadNonce(c)
        try c.send(authDigest(token: "right_token", nonce: nonce))
        XCTAssertEqual(try c.readExact(4, timeout: 10), Recorded.ackOk)
    }

    /// Scenario 03: an unknown service gets Hello + Ack ServiceNotExist (41 bytes) and a close,
    /// without the server waiting for the client's Auth.
    func testServerReplaysScenario03UnknownService() throws {
        let (_, control, _) = try startOurServer(token: "wire_token_3")
        var nonces: Set<[UInt8]> = []
        for _ in 0..<2 {
            let c = try Conn.connect(port: control)
            try c.send(Recorded.helloNosuch)
            // No Auth is sent. The close must come well before the 5 s handshake timeout, which is
            // what it would be if the server were waiting for Auth.
            let start = monoNow()
            guard let got = c.waitClosed(timeout: 10) else {
                XCTFail("server did not close the connection for an unknown service")
                return
            }
            XCTAssertEqual(got.count, 41, "server Hello (37) + Ack (4), got \(hexString(got))")
            guard got.count == 41 else { return }
            XCTAssertEqual(Array(got[0..<5]), [0, 0, 0, 0, 1])
            XCTAssertEqual(Array(got[37...]), Recorded.ackServiceNotExist)
            XCTAssertLessThan(monoNow() - start, 3.5, "the server closed only at the handshake timeout: it waited for Auth")
            nonces.insert(Array(got[5..<37]))
        }
        XCTAssertEqual(nonces.count, 2, "every connection gets a fresh nonce")
    }

    /// Scenario 05: with heartbeat_interval = 1, an idle control channel gets `01000000` about
    /// every second, and nothing else.
    func testServerSendsHeartbeatsScenario05() throws {
        let (_, control, _) = try startOurServer(token: "wire_token_5", heartbeatInterval: 1)
        let c = try Conn.connect(port: control)
        let nonce = try sendHelloReadNonce(c)
        try c.send(authDigest(token: "wire_token_5", nonce: nonce))
        XCTAssertEqual(hexString(try c.readExact(36, timeout: 10)), String(repeating: "00000000", count: 9))

        var arrivals: [Double] = []
        let start = monoNow()
        let window = 3.6
        while monoNow() - start < window {
            switch c.readSome(max: 4, timeout: window - (monoNow() - start)) {
            case .data(let d):
                var msg = d
                if msg.count < 4 { msg += try c.readExact(4 - msg.count, timeout: 5) }
                XCTAssertEqual(hexString(msg), hexString(Recorded.heartBeat), "only HeartBeat on an idle control channel")
                arrivals.append(monoNow() - start)
            case .timeout: break
            case .eof, .error:
                XCTFail("control channel closed")
                return
            }
        }
        XCTAssertGreaterThanOrEqual(arrivals.count, 2, "heartbeats at \(arrivals)")
        XCTAssertLessThanOrEqual(arrivals.count, 5, "heartbeats far more often than every second: \(arrivals)")
        for (a, b) in zip(arrivals, arrivals.dropFirst()) {
            XCTAssertGreaterThan(b - a, 0.5, "heartbeats must not come faster than the interval: \(arrivals)")
        }
    }

    // MARK: Recorded server side against our client

    /// Scenario 01 from the server's side: our client's Hello, Auth and data channel hellos must
    /// be the recorded bytes (the nonce is the recorded one), and a StartForwardTcp must reach the
    /// local service through our client.
    func testClientAgainstRecordedServerSide01() throws {
        let fake = try Listener()
        let echo = keep(try LocalService.echo())
        let client = rathole(
            "client",
            config: """
                [client]
                remote_addr = "127.0.0.1:\(fake.port)"
                default_token = "wire_token_1"

                [client.services.echo]
                local_addr = "127.0.0.1:\(echo.port)"
                """)
        try client.start()

        guard let control = fake.accept(timeout: 15) else {
            XCTFail("our client never connected")
            return
        }
        XCTAssertEqual(
            hexString(try control.readExact(37, timeout: 10)), hexString(Recorded.helloEcho),
            "client Hello = Hello(0, 1, sha256(\"echo\"))")
        try control.send(Recorded.serverHello01)
        XCTAssertEqual(
            hexString(try control.readExact(32, timeout: 10)), hexString(Recorded.auth01),
            "Auth = sha256(token || recorded nonce)")
        for chunk in Recorded.serverChunks01 { try control.send(chunk) }

        var channels: [Conn] = []
        for i in 0..<8 {
            guard let d = fake.accept(timeout: 10) else {
                XCTFail("our client opened only \(i) of 8 data channels")
                return
            }
            XCTAssertEqual(
                hexString(try d.readExact(37, timeout: 10)), hexString(Recorded.dataHello01),
                "data channel hello carries the session key")
            channels.append(d)
        }
        // One data channel per CreateDataChannel, no more: what the client holds to the fake server
        // (connected, accepted or not) settles at the control channel and the eight.
        XCTAssertEqual(settled { client.connections(to: fake.port).count }, 9, "one data channel per CreateDataChannel, no more")
        XCTAssertEqual(echo.accepted, 0, "no local connection before StartForwardTcp")

        // A heartbeat: the client must not answer it (checked at the end), nor drop the channel.
        try control.send(Recorded.heartBeat)

        // StartForwardTcp and the first payload in one chunk, as recorded.
        let d = channels[0]
        try d.send(Recorded.startForwardPlusPayload01)
        XCTAssertEqual(try d.readExact(15, timeout: 10), Recorded.payload0, "bytes came back through the local echo service")
        try d.send(Recorded.payload1)
        XCTAssertEqual(try d.readExact(15, timeout: 10), Recorded.payload1)
        XCTAssertEqual(echo.accepted, 1)
        d.shutdownWrite()
        XCTAssertEqual(d.readSome(timeout: 10), .eof, "our FIN went to the service and its FIN came back")

        // A refill, as the server sends one per visitor: exactly one new data channel.
        let before = settled { client.connections(to: fake.port).count }
        try control.send(Recorded.createDataChannel)
        guard let refill = fake.accept(timeout: 10) else {
            XCTFail("no data channel for the refill")
            return
        }
        XCTAssertEqual(try refill.readExact(37, timeout: 10), Recorded.dataHello01)
        XCTAssertEqual(settled { client.connections(to: fake.port).count }, before + 1, "one data channel for the refill, no more")
        XCTAssertTrue(client.isRunning)

        // The server goes away: everything the client wrote on the control channel after its Auth
        // arrives before the end, and that is nothing.
        control.shutdownWrite()
        let after = control.waitClosed(timeout: 10)
        XCTAssertNotNil(after, "the client closes its control channel when the server's ends")
        XCTAssertEqual(hexString(after ?? []), "", "the client never writes after its Auth (not even to a HeartBeat)")
    }

    /// Scenarios 02 and 03 from the server's side: our client is refused, logs why, and tries
    /// again with a fresh connection and the same Hello.
    func testClientRetriesAfterRefusals() throws {
        let fake = try Listener()
        let echo = keep(try LocalService.echo())
        let client = rathole(
            "client",
            config: """
                [client]
                remote_addr = "127.0.0.1:\(fake.port)"
                default_token = "wire_token_1"

                [client.services.echo]
                local_addr = "127.0.0.1:\(echo.port)"
                """)
        try client.start()

        // 02: AuthFailed after the client's Auth.
        guard let c1 = fake.accept(timeout: 15) else { return XCTFail("our client never connected") }
        XCTAssertEqual(try c1.readExact(37, timeout: 10), Recorded.helloEcho)
        try c1.send(Recorded.serverHello01)
        XCTAssertEqual(try c1.readExact(32, timeout: 10), Recorded.auth01)
        try c1.send(Recorded.ackAuthFailed)
        c1.shutdownWrite()
        XCTAssertNotNil(c1.waitClosed(timeout: 10), "the client closes a refused control channel")
        XCTAssertTrue(client.waitForLog("refused the token", timeout: 10))

        // 03: Hello and ServiceNotExist in one chunk, then close, without reading anything more.
        guard let c2 = fake.accept(timeout: 15) else { return XCTFail("our client did not retry after AuthFailed") }
        XCTAssertEqual(try c2.readExact(37, timeout: 10), Recorded.helloEcho)
        try c2.send(Recorded.serverHello01 + Recorded.ackServiceNotExist)
        c2.shutdownWrite()
        // Like upstream (scenario 03) the client may still send its Auth before it reads the Ack.
        if let rest = c2.waitClosed(timeout: 10) {
            XCTAssertTrue(rest.isEmpty || rest == Recorded.auth01, "unexpected bytes \(hexString(rest))")
        } else {
            XCTFail("the client did not close after ServiceNotExist")
        }
        XCTAssertTrue(client.waitForLog("does not know this service", timeout: 10))

        // And it keeps trying.
        guard let c3 = fake.accept(timeout: 15) else { return XCTFail("our client did not retry after ServiceNotExist") }
        XCTAssertEqual(try c3.readExact(37, timeout: 10), Recorded.helloEcho)
        XCTAssertTrue(client.isRunning)
        XCTAssertEqual(echo.accepted, 0)
    }

    /// A server's control channel read as 4-byte messages: HeartBeats counted, the rest kept.
    private final class ControlMessages {
        let conn: Conn
        private(set) var others: [[UInt8]] = []
        private(set) var heartbeats = 0
        private var pending: [UInt8] = []

        init(_ conn: Conn) { self.conn = conn }

        /// Takes what is buffered, then reads until a HeartBeat that arrives after that.
        func readUntilNewHeartbeat(timeout: Double = 20) throws {
            others = []
            while case .data(let d) = conn.readSome(timeout: 0) { pending += d }
            take()
            let target = heartbeats + 1
            while heartbeats < target {
                pending += try conn.readExact(4 - pending.count % 4, timeout: timeout)
                take()
            }
        }

        private func take() {
            while pending.count >= 4 {
                let m = Array(pending[0..<4])
                pending.removeFirst(4)
                if m == Recorded.heartBeat { heartbeats += 1 } else { others.append(m) }
            }
        }
    }

    private func firstReadable(_ conns: [Conn], timeout: Double) -> Conn? {
        var fds = conns.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        let rc = poll(&fds, nfds_t(fds.count), Int32(timeout * 1000))
        guard rc > 0 else { return nil }
        for (i, p) in fds.enumerated() where p.revents != 0 { return conns[i] }
        return nil
    }
}
