// Conformance with the recorded upstream websocket session (../shared/wire/07-websocket.*): the
// recorded client side is replayed against OUR server over raw sockets, and the recorded server
// side is played against OUR client by a fake server in the test. Byte for byte wherever the
// random parts allow: the upgrade responses (which follow from the recorded keys), every frame
// the server sends (unmasked), and client frames re-masked with the recorded masking keys where
// their payload depends on the fresh nonce.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

/// The recorded chunks of 07, per "c<n> C>S" / "c<n> S>C", in order.
enum Recorded07 {
    static let chunks: [String: [[UInt8]]] = {
        let path = Paths.shared + "/wire/07-websocket.hex.txt"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        var out: [String: [[UInt8]]] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ")
            guard f.count == 5, f[3].hasPrefix("len=") else { continue }
            out["\(f[1]) \(f[2])", default: []].append(hexBytes(String(f[4])))
        }
        return out
    }()

    static func chunk(_ key: String, _ index: Int) throws -> [UInt8] {
        guard let list = chunks[key], index < list.count else { throw TestFailure("07-websocket.hex.txt has no chunk \(index) of \(key)") }
        return list[index]
    }

    /// The masking key of a recorded client frame (bytes 2..<6 of a frame with a 7-bit length).
    static func mask(of frame: [UInt8]) -> UInt32 { frame[2..<6].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }

    static let helloEcho = hexBytes("0000000001092c79e8f80e559e404bcf660c48f3522b67aba9ff1484b0367e1a4ddef7431d")
    static let token = "wire_token_7"
}

/// A frame read off a raw socket.
struct ReadFrame {
    var header: [UInt8]
    var payload: [UInt8]
    var opcode: UInt8 { header[0] & 0x0F }
    var masked: Bool { header[1] & 0x80 != 0 }
}

extension Conn {
    /// An HTTP head, through its blank line.
    func readHead(timeout: Double) throws -> [UInt8] {
        var head: [UInt8] = []
        let deadline = monoNow() + timeout
        while !(head.count >= 4 && head.suffix(4).elementsEqual([13, 10, 13, 10])) {
            guard head.count < 16384 else { throw TestFailure("head longer than 16 KiB") }
            head += try readExact(1, timeout: max(0, deadline - monoNow()))
        }
        return head
    }

    /// One websocket frame, unmasked.
    func readFrame(timeout: Double) throws -> ReadFrame {
        var header = try readExact(2, timeout: timeout)
        var length = Int(header[1] & 0x7F)
        if length == 126 {
            let b = try readExact(2, timeout: timeout)
            header += b
            length = Int(b[0]) << 8 | Int(b[1])
        } else if length == 127 {
            let b = try readExact(8, timeout: timeout)
            header += b
            length = b.reduce(0) { $0 << 8 | Int($1) }
        }
        var mask: UInt32?
        if header[1] & 0x80 != 0 {
            let m = try readExact(4, timeout: timeout)
            header += m
            mask = m.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        }
        var payload = try readExact(length, timeout: timeout)
        if let mask {
            payload = WebSocketFrame.encode(opcode: 2, payload: payload, mask: mask).suffix(length).map { $0 }
        }
        return ReadFrame(header: header, payload: payload)
    }
}

final class WebSocketConformanceTests: EndToEndCase {
    private let wsTables = { (side: String) in "[\(side).transport]\ntype = \"websocket\"\n\n[\(side).transport.websocket]\ntls = false\n" }

    private func authDigest(nonce: [UInt8]) -> [UInt8] {
        Digest.auth(token: Array(Recorded07.token.utf8), nonce: Digest(bytes: nonce)!).bytes
    }

    // MARK: Recorded client side against our server

    /// Scenario 07: the recorded upgrades get the recorded responses byte for byte; the server's
    /// Hello, Ack, CreateDataChannel, StartForwardTcp, the visitor's bytes and the close frame are
    /// the recorded frames (nonce aside); the recorded echo frame reaches the visitor.
    func testServerReplaysScenario07() throws {
        var config = TunnelConfig(services: [ServiceSpec("echo", port: Ports.free(), localPort: 1)], token: Recorded07.token)
        config.serverTables = wsTables("server")
        let (control, publicPort) = (config.controlPort, config.services[0].port)
        let server = rathole("server", config: config.serverText)
        try server.start()
        try waitServerReady(server, config)

        let c = try Conn.connect(port: control)
        try c.send(try Recorded07.chunk("c1 C>S", 0))
        XCTAssertEqual(
            hexString(try c.readHead(timeout: 10)), hexString(try Recorded07.chunk("c1 S>C", 0)), "the recorded upgrade response")
        try c.send(try Recorded07.chunk("c1 C>S", 1))  // the recorded Hello frame, as sent
        let serverHello = try c.readFrame(timeout: 10)
        XCTAssertEqual(serverHello.header, [0x82, 0x25], "one unmasked binary frame of 37 bytes")
        XCTAssertEqual(Array(serverHello.payload.prefix(5)), [0, 0, 0, 0, 1])
        let key = authDigest(nonce: Array(serverHello.payload[5...]))
        let recordedAuth = try Recorded07.chunk("c1 C>S", 2)
        try c.send(WebSocketFrame.encode(opcode: 2, payload: key, mask: Recorded07.mask(of: recordedAuth)))
        let ackAndPool = try Recorded07.chunk("c1 S>C", 2)
        XCTAssertEqual(
            hexString(try c.readExact(ackAndPool.count, timeout: 10)), hexString(ackAndPool),
            "Ack Ok and eight CreateDataChannel, one frame each, as recorded")

        // Eight data channels as the recorded client opened them (c2...c9).
        var channels: [Conn] = []
        for n in 2...9 {
            let d = try Conn.connect(port: control)
            try d.send(try Recorded07.chunk("c\(n) C>S", 0))
            XCTAssertEqual(try d.readHead(timeout: 10), try Recorded07.chunk("c\(n) S>C", 0), "c\(n) upgrade response")
            let recordedHello = try Recorded07.chunk("c\(n) C>S", 1)
            try d.send(WebSocketFrame.encode(opcode: 2, payload: [1, 0, 0, 0, 1] + key, mask: Recorded07.mask(of: recordedHello)))
            channels.append(d)
        }
        let visitor = try Conn.connect(port: publicPort)
        try visitor.send("hello ws-0")
        guard let chosen = firstReadable(channels, timeout: 10) else { return XCTFail("no data channel got StartForwardTcp") }
        let startAndData = try Recorded07.chunk("c2 S>C", 1)
        XCTAssertEqual(
            hexString(try chosen.readExact(startAndData.count, timeout: 10)), hexString(startAndData),
            "StartForwardTcp, then the visitor's bytes, one frame each")
        XCTAssertEqual(try c.readExact(6, timeout: 10), try Recorded07.chunk("c1 S>C", 3), "one CreateDataChannel refill")

        try chosen.send(try Recorded07.chunk("c2 C>S", 2))  // the recorded echo frame, as sent
        XCTAssertEqual(try visitor.readExact(10, timeout: 10), Array("hello ws-0".utf8))
        visitor.shutdownWrite()
        XCTAssertEqual(try chosen.readExact(2, timeout: 10), try Recorded07.chunk("c2 S>C", 2), "the visitor's FIN as a close frame")
        chosen.shutdownWrite()  // as the recorded client: a FIN
        XCTAssertEqual(visitor.readSome(timeout: 10), .eof)
        for d in channels where d !== chosen {
            XCTAssertEqual(d.readSome(timeout: 0), .timeout, "other pooled channels stay untouched")
        }
        XCTAssertFalse(server.log.contains("WARN"), "no complaint about a recorded peer:\n\(server.log)")
    }

    // MARK: Recorded server side against our client

    /// Scenario 07 from the server's side: our upgrade requests are the recorded ones (key and port
    /// aside), our frames are masked binary frames carrying the recorded Hello, Auth (the nonce is
    /// the recorded one) and data channel hellos, and the recorded frames make it forward.
    func testClientAgainstRecordedServerSide07() throws {
        let fake = try Listener()
        let echo = keep(try LocalService.echo())
        let client = rathole(
            "client",
            config: """
                [client]
                remote_addr = "127.0.0.1:\(fake.port)"
                default_token = "\(Recorded07.token)"

                [client.services.echo]
                local_addr = "127.0.0.1:\(echo.port)"

                """ + wsTables("client"))
        try client.start()

        var masks: Set<UInt32> = []
        /// Checks our upgrade request against the recorded one and answers it as recorded.
        func upgrade(_ conn: Conn, recorded n: Int) throws {
            let request = try conn.readHead(timeout: 10)
            let key = try WebSocketHandshake.checkRequest(request)
            let recorded = try Recorded07.chunk("c\(n) C>S", 0)
            let recordedKey = try WebSocketHandshake.checkRequest(recorded)
            let expected = String(decoding: recorded, as: UTF8.self)
                .replacingOccurrences(of: "127.0.0.1:2334", with: "127.0.0.1:\(fake.port)")
                .replacingOccurrences(of: recordedKey, with: key)
            XCTAssertEqual(String(decoding: request, as: UTF8.self), expected, "c\(n): the recorded request, key and port aside")
            try conn.send(WebSocketHandshake.response(key: key))
        }
        func readClientFrame(_ conn: Conn) throws -> [UInt8] {
            let f = try conn.readFrame(timeout: 10)
            XCTAssertEqual(f.header[0], 0x82, "a final binary frame")
            XCTAssertTrue(f.masked, "client frames are masked")
            masks.insert(f.header.suffix(4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
            return f.payload
        }

        guard let control = fake.accept(timeout: 15) else { return XCTFail("our client never connected") }
        try upgrade(control, recorded: 1)
        XCTAssertEqual(try readClientFrame(control), Recorded07.helloEcho)
        try control.send(try Recorded07.chunk("c1 S>C", 1))  // the recorded server Hello frame
        let recordedAuthFrame = try Recorded07.chunk("c1 C>S", 2)
        let recordedAuth = WebSocketFrame.encode(
            opcode: 2, payload: Array(recordedAuthFrame[6...]), mask: Recorded07.mask(of: recordedAuthFrame)
        ).suffix(32)
        XCTAssertEqual(try readClientFrame(control), Array(recordedAuth), "Auth = sha256(token || recorded nonce)")
        try control.send(try Recorded07.chunk("c1 S>C", 2))  // Ack Ok and eight CreateDataChannel

        var channels: [Conn] = []
        for n in 2...9 {
            guard let d = fake.accept(timeout: 10) else { return XCTFail("our client opened only \(n - 2) of 8 data channels") }
            try upgrade(d, recorded: n)
            XCTAssertEqual(try readClientFrame(d), [1, 0, 0, 0, 1] + Array(recordedAuth), "c\(n): data channel hello")
            channels.append(d)
        }
        XCTAssertNil(fake.accept(timeout: 0.3), "one data channel per CreateDataChannel")

        let d = channels[0]
        try d.send(try Recorded07.chunk("c2 S>C", 1))  // StartForwardTcp + "hello ws-0"
        XCTAssertEqual(try readClientFrame(d), Array("hello ws-0".utf8), "back through the local echo service")
        try d.send(try Recorded07.chunk("c2 S>C", 2))  // the recorded close frame
        let close = try d.readFrame(timeout: 10)
        XCTAssertEqual(close.header.prefix(2), [0x88, 0x80], "our close frame once the local service closed too")
        XCTAssertNotNil(d.waitClosed(timeout: 10))
        XCTAssertEqual(echo.accepted, 1)
        XCTAssertEqual(masks.count, 2 + 8 + 1, "a fresh masking key per frame")

        try control.send(try Recorded07.chunk("c1 S>C", 3))  // a refill
        guard let refill = fake.accept(timeout: 10) else { return XCTFail("no data channel for the refill") }
        try upgrade(refill, recorded: 10)
        XCTAssertEqual(try readClientFrame(refill), [1, 0, 0, 0, 1] + Array(recordedAuth))
        XCTAssertTrue(client.isRunning)
    }

    private func firstReadable(_ conns: [Conn], timeout: Double) -> Conn? {
        var fds = conns.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        guard poll(&fds, nfds_t(fds.count), Int32(timeout * 1000)) > 0 else { return nil }
        for (i, p) in fds.enumerated() where p.revents != 0 { return conns[i] }
        return nil
    }
}
