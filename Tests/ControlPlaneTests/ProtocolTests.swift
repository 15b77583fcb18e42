import Foundation
import XCTest

import ControlPlane

// MARK: - Transcript reading

/// shared/wire, found relative to this file: <package>/Tests/ControlPlaneTests/ -> <package>/../shared/wire.
let wireTranscriptsDirectory: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // ControlPlaneTests
    .deletingLastPathComponent()  // Tests
    .deletingLastPathComponent()  // package root
    .deletingLastPathComponent()  // its parent
    .appendingPathComponent("shared/wire")

private enum Direction: Hashable { case c2s, s2c }

private struct StreamKey: Hashable, Comparable {
    var conn: Int
    var dir: Direction

    static func < (a: StreamKey, b: StreamKey) -> Bool {
        (a.conn, a.dir == .c2s ? 0 : 1) < (b.conn, b.dir == .c2s ? 0 : 1)
    }
}

/// One recorded scenario: the byte chunks of every connection and direction, in recorded order.
private struct Transcript {
    var chunks: [StreamKey: [[UInt8]]] = [:]

    var connections: [Int] { Set(chunks.keys.map(\.conn)).sorted() }

    func stream(_ conn: Int, _ dir: Direction) -> [[UInt8]] { chunks[StreamKey(conn: conn, dir: dir)] ?? [] }

    static func load(_ name: String) throws -> Transcript {
        let text = try String(contentsOf: wireTranscriptsDirectory.appendingPathComponent("\(name).hex.txt"), encoding: .utf8)
        var t = Transcript()
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ")
            guard f.count >= 3, f[1].hasPrefix("c"), let conn = Int(f[1].dropFirst()) else { continue }
            let dir: Direction
            switch f[2] {
            case "C>S": dir = .c2s
            case "S>C": dir = .s2c
            default: continue  // OPEN, CLOSED
            }
            guard f.count == 5, f[3].hasPrefix("len="), let n = Int(f[3].dropFirst(4)) else { continue }  // EOF
            let bytes = hexBytes(f[4])
            precondition(bytes.count == n, "bad transcript line: \(line)")
            t.chunks[StreamKey(conn: conn, dir: dir), default: []].append(bytes)
        }
        return t
    }
}

private func hexBytes(_ s: some StringProtocol) -> [UInt8] {
    let u = Array(s.utf8)
    precondition(u.count % 2 == 0)
    func nib(_ c: UInt8) -> UInt8 {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: preconditionFailure("not hex")
        }
    }
    return stride(from: 0, to: u.count, by: 2).map { nib(u[$0]) << 4 | nib(u[$0 + 1]) }
}

/// Deterministic PRNG for reproducible random chunkings.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The same bytes cut at other boundaries: as recorded, 1 byte, 3 bytes, random, all at once.
private func chunkings(_ recorded: [[UInt8]], seed: UInt64 = 42) -> [(String, [[UInt8]])] {
    let all = recorded.flatMap { $0 }
    func fixed(_ n: Int) -> [[UInt8]] {
        stride(from: 0, to: all.count, by: n).map { Array(all[$0..<min($0 + n, all.count)]) }
    }
    var rng = SplitMix64(state: seed)
    var random: [[UInt8]] = []
    var i = 0
    while i < all.count {
        let n = Int.random(in: 1...40, using: &rng)
        random.append(Array(all[i..<min(i + n, all.count)]))
        i += n
    }
    return [("recorded", recorded), ("1-byte", fixed(1)), ("3-byte", fixed(3)), ("random", random),
            ("whole", all.isEmpty ? [] : [all])]
}

/// Feeds chunks to a WireDecoder only when the decoder needs more bytes.
private struct ChunkFeeder {
    var chunks: [[UInt8]]
    var index = 0
    var decoder = WireDecoder()
    /// Re-encoding of everything decoded so far, to compare with the input.
    var reencoded: [UInt8] = []

    init(_ chunks: [[UInt8]]) { self.chunks = chunks }

    mutating func next<M: WireMessage>(_ type: M.Type) throws -> M? {
        while true {
            if let m = try decoder.next(M.self) {
                m.encode(appendingTo: &reencoded)
                return m
            }
            guard index < chunks.count else { return nil }
            // Alternate the two feed entry points.
            if index % 2 == 0 {
                decoder.feed(chunks[index])
            } else {
                chunks[index].withUnsafeBytes { decoder.feed($0) }
            }
            index += 1
        }
    }

    mutating func nextUdpFrame() throws -> UdpFrame? {
        while true {
            if let f = try decoder.nextUdpFrame() {
                reencoded += try f.encode()
                return f
            }
            guard index < chunks.count else { return nil }
            decoder.feed(chunks[index])
            index += 1
        }
    }

    /// Everything not yet decoded (raw payload).
    mutating func rest() -> [UInt8] {
        while index < chunks.count {
            decoder.feed(chunks[index])
            index += 1
        }
        let r = decoder.takeBuffered()
        reencoded += r
        return r
    }
}

private struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Decoding a connection the way the protocol dictates

private struct ControlChannelTrace: Equatable {
    var serviceDigest: Digest
    var auth: Digest?
    var nonce: Digest
    var ack: Ack?
    var commands: [ControlChannelCmd]
}

private struct DataChannelTrace: Equatable {
    var sessionKey: Digest
    var command: DataChannelCmd?
    var clientPayload: [UInt8] = []
    var serverPayload: [UInt8] = []
    var clientFrames: [UdpFrame] = []
    var serverFrames: [UdpFrame] = []
}

private enum ConnectionTrace: Equatable {
    case control(ControlChannelTrace)
    case data(DataChannelTrace)
}

/// Decodes one connection (both directions) from the given chunkings of its two streams, checking that
/// re-encoding every decoded message gives back the original bytes.
private func decodeConnection(c2s: [[UInt8]], s2c: [[UInt8]], file: StaticString = #filePath, line: UInt = #line) throws
    -> ConnectionTrace
{
    var client = ChunkFeeder(c2s)
    var server = ChunkFeeder(s2c)
    let originalC2S = c2s.flatMap { $0 }
    let originalS2C = s2c.flatMap { $0 }
    defer {
        XCTAssertEqual(client.reencoded, originalC2S, "client bytes re-encode", file: file, line: line)
        XCTAssertEqual(server.reencoded, originalS2C, "server bytes re-encode", file: file, line: line)
    }
    guard let hello = try client.next(Hello.self) else { throw TestFailure("connection without a client Hello") }
    switch hello {
    case let .controlChannel(service):
        // Client: Hello, Auth. Server: Hello(nonce), Ack, then commands.
        let auth = try client.next(Auth.self)
        XCTAssertEqual(client.rest(), [], "client sends nothing after Auth", file: file, line: line)
        guard case let .controlChannel(nonce)? = try server.next(Hello.self) else {
            throw TestFailure("control channel without a server Hello carrying the nonce")
        }
        let ack = try server.next(Ack.self)
        var commands: [ControlChannelCmd] = []
        if ack == .ok {
            while let c = try server.next(ControlChannelCmd.self) { commands.append(c) }
        }
        XCTAssertEqual(server.rest(), [], "no stray server bytes", file: file, line: line)
        return .control(ControlChannelTrace(
            serviceDigest: service, auth: auth?.digest, nonce: nonce, ack: ack, commands: commands))
    case let .dataChannel(key):
        var trace = DataChannelTrace(sessionKey: key)
        trace.command = try server.next(DataChannelCmd.self)
        switch trace.command {
        case .startForwardUdp?:
            while let f = try server.nextUdpFrame() { trace.serverFrames.append(f) }
            while let f = try client.nextUdpFrame() { trace.clientFrames.append(f) }
            XCTAssertEqual(server.rest(), [], "no partial server frame", file: file, line: line)
            XCTAssertEqual(client.rest(), [], "no partial client frame", file: file, line: line)
        case .startForwardTcp?, nil:
            trace.serverPayload = server.rest()
            trace.clientPayload = client.rest()
        }
        return .data(trace)
    }
}

/// Decodes every connection of a scenario under every chunking; all chunkings must agree.
private func decodeScenario(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> [Int: ConnectionTrace] {
    let t = try Transcript.load(name)
    var result: [Int: ConnectionTrace] = [:]
    for conn in t.connections {
        let c2sCuts = chunkings(t.stream(conn, .c2s), seed: UInt64(conn))
        let s2cCuts = chunkings(t.stream(conn, .s2c), seed: UInt64(conn) &* 7919)
        var first: ConnectionTrace?
        for (i, (label, c2s)) in c2sCuts.enumerated() {
            let s2c = s2cCuts[i].1
            let trace = try decodeConnection(c2s: c2s, s2c: s2c, file: file, line: line)
            if let first {
                XCTAssertEqual(trace, first, "\(name) c\(conn): chunking \(label) decodes differently", file: file, line: line)
            } else {
                first = trace
            }
        }
        result[conn] = first
    }
    return result
}

private func clientToken(_ scenario: String) throws -> String {
    let c = try Config.load(path: wireTranscriptsDirectory.appendingPathComponent("\(scenario).client.toml").path)
    return c.client!.defaultToken!.value
}

private func serverToken(_ scenario: String) throws -> String {
    let c = try Config.load(path: wireTranscriptsDirectory.appendingPathComponent("\(scenario).server.toml").path)
    return c.server!.defaultToken!.value
}

private extension ConnectionTrace {
    var control: ControlChannelTrace? { if case let .control(c) = self { return c } else { return nil } }
    var data: DataChannelTrace? { if case let .data(d) = self { return d } else { return nil } }
}

// MARK: - Tests

final class ProtocolTests: XCTestCase {
    func testTranscriptsArePresent() throws {
        for n in ["01-tcp-session", "02-wrong-token", "03-unknown-service", "04-udp-session", "05-heartbeat"] {
            let t = try Transcript.load(n)
            XCTAssertFalse(t.connections.isEmpty, n)
        }
    }

    func testScenario01TcpSession() throws {
        let traces = try decodeScenario("01-tcp-session")
        let token = try clientToken("01-tcp-session")
        XCTAssertEqual(token, try serverToken("01-tcp-session"))
        let control = try XCTUnwrap(traces[1]?.control)
        XCTAssertEqual(control.serviceDigest, Digest.service(named: "echo"))
        XCTAssertEqual(control.serviceDigest.description, "092c79e8f80e559e404bcf660c48f3522b67aba9ff1484b0367e1a4ddef7431d")
        XCTAssertEqual(control.nonce.description, "c70075432209553efea6bb1d5dd91c20687efd73714957e46d3a7240f418ca1a")
        let auth = try XCTUnwrap(control.auth)
        XCTAssertEqual(auth, Digest.auth(token: token, nonce: control.nonce))
        XCTAssertEqual(control.ack, .ok)
        XCTAssertEqual(control.commands, Array(repeating: .createDataChannel, count: 9))  // 8 pooled + 1 refill

        let data = (2...10).compactMap { traces[$0]?.data }
        XCTAssertEqual(data.count, 9)
        for d in data { XCTAssertEqual(d.sessionKey, auth) }
        let used = try XCTUnwrap(traces[2]?.data)
        XCTAssertEqual(used.command, .startForwardTcp)
        XCTAssertEqual(used.serverPayload, Array("hello rathole-0hello rathole-1".utf8))
        XCTAssertEqual(used.clientPayload, Array("hello rathole-0hello rathole-1".utf8))
        for d in data.dropFirst() {
            XCTAssertNil(d.command)
            XCTAssertEqual(d.serverPayload, [])
            XCTAssertEqual(d.clientPayload, [])
        }
    }

    func testScenario02WrongToken() throws {
        let traces = try decodeScenario("02-wrong-token")
        let wrong = try clientToken("02-wrong-token")
        let right = try serverToken("02-wrong-token")
        XCTAssertEqual(traces.count, 4)
        for (_, t) in traces {
            let c = try XCTUnwrap(t.control)
            XCTAssertEqual(c.serviceDigest, Digest.service(named: "echo"))
            XCTAssertEqual(c.auth, Digest.auth(token: wrong, nonce: c.nonce))
            XCTAssertNotEqual(c.auth, Digest.auth(token: right, nonce: c.nonce))
            XCTAssertEqual(c.ack, .authFailed)
            XCTAssertEqual(c.commands, [])
        }
    }

    func testScenario03UnknownService() throws {
        let traces = try decodeScenario("03-unknown-service")
        let token = try clientToken("03-unknown-service")
        XCTAssertEqual(traces.count, 4)
        for (_, t) in traces {
            let c = try XCTUnwrap(t.control)
            XCTAssertEqual(c.serviceDigest, Digest.service(named: "nosuch"))
            XCTAssertEqual(c.ack, .serviceNotExist)
            XCTAssertEqual(c.auth, Digest.auth(token: token, nonce: c.nonce))
            XCTAssertEqual(c.commands, [])
        }
    }

    func testScenario04UdpSession() throws {
        let traces = try decodeScenario("04-udp-session")
        let token = try clientToken("04-udp-session")
        let control = try XCTUnwrap(traces[1]?.control)
        XCTAssertEqual(control.serviceDigest, Digest.service(named: "uecho"))
        XCTAssertEqual(control.auth, Digest.auth(token: token, nonce: control.nonce))
        XCTAssertEqual(control.ack, .ok)
        XCTAssertEqual(control.commands, [.createDataChannel, .createDataChannel])

        let idle = try XCTUnwrap(traces[2]?.data)
        XCTAssertNil(idle.command)
        let used = try XCTUnwrap(traces[3]?.data)
        XCTAssertEqual(used.sessionKey, control.auth)
        XCTAssertEqual(used.command, .startForwardUdp)
        let visitor = PeerAddress.v4(.loopback, port: 44409)
        let expected = (0..<3).map { UdpFrame(from: visitor, payload: Array("dgram-\($0)".utf8)) }
        XCTAssertEqual(used.serverFrames, expected)
        XCTAssertEqual(used.clientFrames, expected)
        XCTAssertEqual(try expected[0].encode(), hexBytes("0c000000007f00000179ad0700646772616d2d30"))
    }

    func testScenario05Heartbeat() throws {
        let traces = try decodeScenario("05-heartbeat")
        let token = try clientToken("05-heartbeat")
        let control = try XCTUnwrap(traces[1]?.control)
        XCTAssertEqual(control.auth, Digest.auth(token: token, nonce: control.nonce))
        XCTAssertEqual(control.ack, .ok)
        XCTAssertEqual(control.commands,
                       Array(repeating: .createDataChannel, count: 8) + Array(repeating: .heartBeat, count: 4))
        for conn in 2...9 {
            XCTAssertEqual(traces[conn]?.data?.sessionKey, control.auth)
        }
    }

    // MARK: Messages

    func testMessageEncodings() throws {
        let d = Digest.service(named: "echo")
        let hello = Hello.controlChannel(d).encode()
        XCTAssertEqual(hello, hexBytes("0000000001092c79e8f80e559e404bcf660c48f3522b67aba9ff1484b0367e1a4ddef7431d"))
        XCTAssertEqual(Hello.dataChannel(d).encode()[0..<5], [1, 0, 0, 0, 1])
        XCTAssertEqual(try Hello(decoding: hello), .controlChannel(d))
        XCTAssertEqual(Auth(d).encode(), d.bytes)
        XCTAssertEqual(Ack.ok.encode(), [0, 0, 0, 0])
        XCTAssertEqual(Ack.serviceNotExist.encode(), [1, 0, 0, 0])
        XCTAssertEqual(Ack.authFailed.encode(), [2, 0, 0, 0])
        XCTAssertEqual(ControlChannelCmd.createDataChannel.encode(), [0, 0, 0, 0])
        XCTAssertEqual(ControlChannelCmd.heartBeat.encode(), [1, 0, 0, 0])
        XCTAssertEqual(DataChannelCmd.startForwardTcp.encode(), [0, 0, 0, 0])
        XCTAssertEqual(DataChannelCmd.startForwardUdp.encode(), [1, 0, 0, 0])
        XCTAssertEqual(Hello.size, 37)
        XCTAssertEqual(Auth.size, 32)
        XCTAssertEqual(Ack.size, 4)
        XCTAssertEqual(ControlChannelCmd.size, 4)
        XCTAssertEqual(DataChannelCmd.size, 4)
        for m in [Ack.ok, .serviceNotExist, .authFailed] { XCTAssertEqual(try Ack(decoding: m.encode()), m) }
        XCTAssertEqual(try ControlChannelCmd(decoding: [1, 0, 0, 0]), .heartBeat)
        XCTAssertEqual(try DataChannelCmd(decoding: [1, 0, 0, 0]), .startForwardUdp)

        var out: [UInt8] = [9]
        Ack.authFailed.encode(appendingTo: &out)
        Hello.dataChannel(d).encode(appendingTo: &out)
        XCTAssertEqual(out, [9, 2, 0, 0, 0] + Hello.dataChannel(d).encode())
    }

    func testMalformedMessages() {
        let d = Digest.service(named: "x")
        var bad = Hello.controlChannel(d).encode()
        bad[0] = 2
        XCTAssertThrowsError(try Hello(decoding: bad)) { e in
            XCTAssertEqual(e as? ProtocolError, .unknownTag(message: "Hello", tag: 2))
        }
        for v: UInt8 in [0, 2, 255] {
            var b = Hello.dataChannel(d).encode()
            b[4] = v
            XCTAssertThrowsError(try Hello(decoding: b)) { e in
                XCTAssertEqual(e as? ProtocolError, .unsupportedVersion(v))
                XCTAssertTrue("\(e)".contains("version \(v)"))
            }
        }
        XCTAssertThrowsError(try Hello(decoding: Array(bad[0..<36]))) { e in
            XCTAssertEqual(e as? ProtocolError, .wrongLength(message: "Hello", expected: 37, actual: 36))
        }
        XCTAssertThrowsError(try Auth(decoding: [UInt8](repeating: 0, count: 33))) { e in
            XCTAssertEqual(e as? ProtocolError, .wrongLength(message: "Auth", expected: 32, actual: 33))
        }
        XCTAssertThrowsError(try Ack(decoding: [3, 0, 0, 0])) { e in
            XCTAssertEqual(e as? ProtocolError, .unknownTag(message: "Ack", tag: 3))
            XCTAssertEqual("\(e)", "Ack: unknown variant tag 3")
        }
        XCTAssertThrowsError(try ControlChannelCmd(decoding: [0, 0, 0, 1])) { e in
            XCTAssertEqual(e as? ProtocolError, .unknownTag(message: "ControlChannelCmd", tag: 0x0100_0000))
        }
        XCTAssertThrowsError(try DataChannelCmd(decoding: [2, 0, 0, 0])) { e in
            XCTAssertEqual(e as? ProtocolError, .unknownTag(message: "DataChannelCmd", tag: 2))
        }
        XCTAssertThrowsError(try Ack(decoding: [0, 0, 0])) { e in
            XCTAssertEqual(e as? ProtocolError, .wrongLength(message: "Ack", expected: 4, actual: 3))
        }
    }

    func testDecoderErrorDoesNotConsume() throws {
        var dec = WireDecoder()
        dec.feed([7, 0, 0, 0, 1, 0, 0, 0])
        XCTAssertThrowsError(try dec.next(Ack.self))
        XCTAssertEqual(dec.bufferedCount, 8)
        dec.skip(4)
        XCTAssertEqual(try dec.next(ControlChannelCmd.self), .heartBeat)
        XCTAssertNil(try dec.next(ControlChannelCmd.self))
        XCTAssertTrue(dec.isEmpty)
    }

    func testDecoderNeedsMoreBytes() throws {
        var dec = WireDecoder()
        let hello = Hello.controlChannel(Digest.service(named: "svc")).encode()
        for (i, b) in hello.enumerated() {
            XCTAssertNil(try dec.next(Hello.self), "byte \(i)")
            dec.feed(CollectionOfOne(b))
        }
        XCTAssertEqual(try dec.next(Hello.self), .controlChannel(Digest.service(named: "svc")))
    }

    /// Many messages through random chunks: exercises the buffer compaction.
    func testDecoderLongStream() throws {
        var stream: [UInt8] = []
        var expected: [ControlChannelCmd] = []
        var rng = SplitMix64(state: 7)
        for _ in 0..<50_000 {
            let c: ControlChannelCmd = Bool.random(using: &rng) ? .heartBeat : .createDataChannel
            expected.append(c)
            c.encode(appendingTo: &stream)
        }
        var dec = WireDecoder()
        var got: [ControlChannelCmd] = []
        var i = 0
        while i < stream.count {
            let n = Int.random(in: 1...9000, using: &rng)
            dec.feed(stream[i..<min(i + n, stream.count)])
            i += n
            while let c = try dec.next(ControlChannelCmd.self) { got.append(c) }
        }
        XCTAssertEqual(got, expected)
        XCTAssertTrue(dec.isEmpty)
    }

    func testTakeBufferedAfterHandshake() throws {
        // As in 01: StartForwardTcp and the first payload bytes arrive in one chunk.
        var dec = WireDecoder()
        dec.feed(hexBytes("0000000068656c6c6f20726174686f6c652d30"))
        XCTAssertEqual(try dec.next(DataChannelCmd.self), .startForwardTcp)
        dec.withBufferedBytes { XCTAssertEqual(Array($0), Array("hello rathole-0".utf8)) }
        XCTAssertEqual(dec.takeBuffered(), Array("hello rathole-0".utf8))
        XCTAssertEqual(dec.bufferedCount, 0)
    }

    // MARK: Digest

    func testDigest() throws {
        let d = Digest.sha256(Array("echo".utf8))
        XCTAssertEqual(d, Digest.service(named: "echo"))
        XCTAssertEqual(Digest(hex: d.description), d)
        XCTAssertEqual(Digest(hex: d.description.uppercased()), d)
        XCTAssertNil(Digest(hex: "00"))
        XCTAssertNil(Digest(hex: String(repeating: "g", count: 64)))
        XCTAssertNil(Digest(bytes: [UInt8](repeating: 1, count: 31)))
        XCTAssertEqual(Digest(bytes: d.bytes), d)
        XCTAssertEqual(MemoryLayout<Digest>.size, 32)
        d.withUnsafeBytes { XCTAssertEqual($0.count, 32) }
        // sha256("") is well known.
        XCTAssertEqual(Digest.sha256([UInt8]()).description,
                       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(Digest.zero.bytes, [UInt8](repeating: 0, count: 32))
        let r1 = Digest.random()
        let r2 = Digest.random()
        XCTAssertNotEqual(r1, r2)
        XCTAssertEqual(Set([d, d, r1]).count, 2)
        // auth = sha256(token || nonce)
        let nonce = try XCTUnwrap(Digest(hex: "c70075432209553efea6bb1d5dd91c20687efd73714957e46d3a7240f418ca1a"))
        XCTAssertEqual(Digest.auth(token: "wire_token_1", nonce: nonce).description,
                       "460f48b99fd3f62d57cdfd0bd0f52363c86e6c3f2c382d2807610a21af5fb328")
        XCTAssertEqual(Digest.auth(token: Array("wire_token_1".utf8), nonce: nonce),
                       Digest.sha256(Array("wire_token_1".utf8) + nonce.bytes))
    }

    // MARK: UDP framing

    func testUdpFrameIPv4Bytes() throws {
        let f = UdpFrame(from: .v4(IPv4Address(127, 0, 0, 1), port: 44409), payload: Array("dgram-0".utf8))
        XCTAssertEqual(try f.encode(), hexBytes("0c000000007f00000179ad0700646772616d2d30"))
        XCTAssertEqual(try UdpFrame(decoding: hexBytes("0c000000007f00000179ad0700646772616d2d30")), f)
        XCTAssertEqual(f.encodedSize, 20)
    }

    func testUdpFrameIPv6Bytes() throws {
        let addr = try XCTUnwrap(IPv6Address("2001:db8::1"))
        let f = UdpFrame(from: .v6(addr, port: 0x1234), payload: [0xAA, 0xBB])
        let bytes = try f.encode()
        var expected: [UInt8] = [24, 1, 0, 0, 0]
        expected += [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        expected += [0x34, 0x12, 2, 0, 0xAA, 0xBB]
        XCTAssertEqual(bytes, expected)
        XCTAssertEqual(try UdpFrame(decoding: bytes), f)
        XCTAssertEqual(UdpHeader.prefixSize(for: f.from), 25)
    }

    func testUdpEncodeIntoBufferWithoutAllocation() throws {
        var buf = [UInt8](repeating: 0xEE, count: 64)
        let payload: [UInt8] = [1, 2, 3]
        let from = PeerAddress.v4(IPv4Address(10, 0, 0, 7), port: 53)
        let n = try buf.withUnsafeMutableBytes { out in
            try payload.withUnsafeBytes { p in try UdpFrame.encode(from: from, payload: p, into: out) }
        }
        XCTAssertEqual(n, 16)
        XCTAssertEqual(Array(buf[0..<n]), [12, 0, 0, 0, 0, 10, 0, 0, 7, 53, 0, 3, 0, 1, 2, 3])
        XCTAssertEqual(buf[n], 0xEE)
        // Prefix only, then the payload placed by the caller.
        let m = try buf.withUnsafeMutableBytes { try UdpHeader.encodePrefix(from: from, payloadLength: 3, into: $0) }
        XCTAssertEqual(m, 13)
        // Too small a buffer.
        var small = [UInt8](repeating: 0, count: 10)
        XCTAssertThrowsError(try small.withUnsafeMutableBytes {
            try UdpHeader.encodePrefix(from: from, payloadLength: 3, into: $0)
        }) { e in XCTAssertEqual(e as? ProtocolError, .bufferTooSmall(needed: 13, available: 10)) }
        XCTAssertThrowsError(try small.withUnsafeMutableBytes { out in
            try payload.withUnsafeBytes { try UdpFrame.encode(from: from, payload: $0, into: out) }
        }) { e in XCTAssertEqual(e as? ProtocolError, .bufferTooSmall(needed: 16, available: 10)) }
    }

    func testUdpLargePayloads() throws {
        let from = PeerAddress.v6(.loopback, port: 9)
        let big = UdpFrame(from: from, payload: [UInt8](repeating: 7, count: UdpHeader.maxPayload))
        let bytes = try big.encode()
        XCTAssertEqual(bytes.count, UdpHeader.maxFrameSize)
        var dec = WireDecoder()
        // Two frames, fed in 1000-byte chunks.
        let stream = bytes + bytes
        var got: [UdpFrame] = []
        for start in stride(from: 0, to: stream.count, by: 1000) {
            dec.feed(stream[start..<min(start + 1000, stream.count)])
            while let f = try dec.nextUdpFrame() { got.append(f) }
        }
        XCTAssertEqual(got, [big, big])
        // Above the maximum: not encodable.
        let tooBig = UdpFrame(from: from, payload: [UInt8](repeating: 0, count: UdpHeader.maxPayload + 1))
        XCTAssertThrowsError(try tooBig.encode()) { e in
            XCTAssertEqual(e as? ProtocolError, .udpPayloadTooLarge(65508))
        }
        // The header field itself can hold 65535.
        XCTAssertEqual(UdpHeader(from: from, length: 65535).length, 65535)
        var hdr = [UInt8](repeating: 0, count: 32)
        _ = try hdr.withUnsafeMutableBytes { try UdpHeader.encodePrefix(from: from, payloadLength: 0, into: $0) }
        hdr[23] = 0xFF
        hdr[24] = 0xFF
        XCTAssertThrowsError(try hdr.withUnsafeBytes { try UdpHeader.decodePrefix($0) }) { e in
            XCTAssertEqual(e as? ProtocolError, .udpPayloadTooLarge(65535))
        }
    }

    func testUdpMalformed() throws {
        let good = hexBytes("0c000000007f00000179ad0700646772616d2d30")
        func decodeError(_ bytes: [UInt8]) -> ProtocolError? {
            do {
                _ = try UdpFrame(decoding: bytes)
                return nil
            } catch {
                return error
            }
        }
        func streamError(_ bytes: [UInt8]) -> ProtocolError? {
            var dec = WireDecoder()
            dec.feed(bytes)
            do {
                _ = try dec.nextUdpFrame()
                return nil
            } catch {
                return error
            }
        }
        var b = good
        b[0] = 13
        XCTAssertEqual(decodeError(b), .udpHeaderLengthInvalid(13))
        XCTAssertEqual(streamError([13]), .udpHeaderLengthInvalid(13))
        b[0] = 24  // IPv4 address tag but an IPv6 length
        XCTAssertEqual(decodeError(b), .udpHeaderLengthMismatch(declared: 24, expected: 12))
        b = good
        b[1] = 1  // IPv6 tag with an IPv4 length byte
        XCTAssertEqual(decodeError(b), .udpHeaderLengthMismatch(declared: 12, expected: 24))
        XCTAssertEqual(streamError(Array(b[0..<5])), .udpHeaderLengthMismatch(declared: 12, expected: 24))
        b = good
        b[1] = 5
        XCTAssertEqual(decodeError(b), .udpAddressTag(5))
        b = good
        b[11] = 0xE4  // len = 0xFFE4 = 65508
        b[12] = 0xFF
        XCTAssertEqual(decodeError(b), .udpPayloadTooLarge(65508))
        XCTAssertEqual(decodeError(Array(good.dropLast(2))), .udpTruncated(declared: 7, available: 5))
        XCTAssertEqual(decodeError(good + [0]), .trailingBytes(message: "UDP frame", count: 1))
        XCTAssertEqual(decodeError(Array(good[0..<8])), .wrongLength(message: "UDP frame header", expected: 13, actual: 8))
        XCTAssertEqual(decodeError([]), .wrongLength(message: "UDP frame header", expected: 1, actual: 0))
        // Incomplete frames in a stream are not errors.
        for cut in 0..<good.count {
            var dec = WireDecoder()
            dec.feed(good[0..<cut])
            XCTAssertNil(try dec.nextUdpFrame(), "cut at \(cut)")
            XCTAssertEqual(dec.bufferedCount, cut)
        }
        // Every description is a single, non-empty line.
        let all: [ProtocolError] = [
            .wrongLength(message: "Hello", expected: 37, actual: 1), .unknownTag(message: "Ack", tag: 9),
            .unsupportedVersion(2), .udpHeaderLengthInvalid(3), .udpHeaderLengthMismatch(declared: 12, expected: 24),
            .udpAddressTag(4), .udpPayloadTooLarge(70000), .udpTruncated(declared: 5, available: 1),
            .trailingBytes(message: "UDP frame", count: 2), .bufferTooSmall(needed: 3, available: 1),
        ]
        for e in all {
            XCTAssertFalse(e.description.isEmpty)
            XCTAssertFalse(e.description.contains("\n"))
        }
    }

    func testUdpFrameCallbackDecode() throws {
        var dec = WireDecoder()
        dec.feed(hexBytes("0c000000007f00000179ad0700646772616d2d30"))
        let r = try dec.nextUdpFrame { header, payload -> (PeerAddress, Int, [UInt8]) in
            (header.from, Int(header.length), Array(payload))
        }
        XCTAssertEqual(r?.0, .v4(.loopback, port: 44409))
        XCTAssertEqual(r?.1, 7)
        XCTAssertEqual(r?.2, Array("dgram-0".utf8))
        XCTAssertTrue(dec.isEmpty)
    }

    // MARK: Addresses

    func testIPv4() {
        XCTAssertEqual(IPv4Address("127.0.0.1"), .loopback)
        XCTAssertEqual(IPv4Address("0.0.0.0"), .any)
        XCTAssertEqual(IPv4Address("255.255.255.255")?.value, 0xFFFF_FFFF)
        XCTAssertEqual(IPv4Address(10, 1, 2, 3).description, "10.1.2.3")
        XCTAssertEqual(IPv4Address(192, 168, 0, 1).networkOrder, UInt32(0xC0A8_0001).bigEndian)
        for bad in ["256.0.0.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1..2.3", "", "a.b.c.d", "1.2.3.4 ", "1234.1.1.1"] {
            XCTAssertNil(IPv4Address(bad), bad)
        }
    }

    func testIPv6() throws {
        let cases: [(String, String)] = [
            ("::1", "::1"), ("::", "::"), ("1::", "1::"), ("fe80::1:2", "fe80::1:2"),
            ("2001:DB8:0:0:8:800:200C:417A", "2001:db8::8:800:200c:417a"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"),
            ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"), ("1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"), ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
        ]
        for (input, canonical) in cases {
            let a = try XCTUnwrap(IPv6Address(input), input)
            XCTAssertEqual(a.description, canonical, input)
            XCTAssertEqual(IPv6Address(canonical), a)
            XCTAssertEqual(IPv6Address(bytes: a.bytes), a)
        }
        XCTAssertEqual(IPv6Address("::1"), .loopback)
        XCTAssertEqual(IPv6Address("::ffff:1.2.3.4")?.ipv4Mapped, IPv4Address(1, 2, 3, 4))
        for bad in ["", ":", ":::", "1:::2", "1::2::3", ":1::", "12345::", "g::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9",
                    "::1.2.3", "1.2.3.4::", "::1%eth0", "1:2:3:4:5:6:7::8:9"] {
            XCTAssertNil(IPv6Address(bad), bad)
        }
    }

    func testPeerAddress() {
        XCTAssertEqual(PeerAddress("127.0.0.1:2333"), .v4(.loopback, port: 2333))
        XCTAssertEqual(PeerAddress("[::1]:2333"), .v6(.loopback, port: 2333))
        XCTAssertEqual(PeerAddress("0.0.0.0:0")?.port, 0)
        XCTAssertEqual(PeerAddress.v6(.loopback, port: 80).description, "[::1]:80")
        XCTAssertEqual(PeerAddress.v4(.loopback, port: 80).description, "127.0.0.1:80")
        XCTAssertTrue(PeerAddress.v6(.any, port: 1).isIPv6)
        for bad in ["127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "::1:80", "[::1]", "[::1]80", "localhost:80",
                    "[::1]:-1", "1.2.3.4:8a"] {
            XCTAssertNil(PeerAddress(bad), bad)
        }
    }
}
