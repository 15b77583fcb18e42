// The recorded upstream rathole sessions (../shared/wire, scenarios 01-05) decoded by our codecs,
// byte for byte, under every way of splitting the recorded chunks.
import ControlPlane
import Foundation
import TestKit
import XCTest

// MARK: - Transcript reading

/// shared/wire beside the package (see `Paths.shared`); a missing file fails the test that needs it.
let wireTranscriptsDirectory = URL(fileURLWithPath: Paths.shared).appendingPathComponent("wire")

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
            let bytes = hexBytes(String(f[4]))
            precondition(bytes.count == n, "bad transcript line: \(line)")
            t.chunks[StreamKey(conn: conn, dir: dir), default: []].append(bytes)
        }
        return t
    }
}

/// Deterministic PRNG for reproducible random chunkings.
struct SplitMix64: RandomNumberGenerator {
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
    return [
        ("recorded", recorded), ("1-byte", fixed(1)), ("3-byte", fixed(3)), ("random", random),
        ("whole", all.isEmpty ? [] : [all]),
    ]
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
private func decodeConnection(
    c2s: [[UInt8]], s2c: [[UInt8]], file: StaticString = #filePath, line: UInt = #line
) throws
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
        return .control(
            ControlChannelTrace(
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

final class TranscriptTests: XCTestCase {
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
        XCTAssertEqual(
            control.commands,
            Array(repeating: .createDataChannel, count: 8) + Array(repeating: .heartBeat, count: 4))
        for conn in 2...9 {
            XCTAssertEqual(traces[conn]?.data?.sessionKey, control.auth)
        }
    }
}
