import ControlPlane
// The websocket codec (frames, masking, the upgrade) against RFC 6455's own examples and against
// the recorded upstream session (../shared/wire/07-websocket.hex.txt): every upgrade request and
// response upstream sent is rebuilt byte for byte from its key, and every frame either side sent
// decodes to the rathole messages it carried, whatever the chunking.
import Foundation
import XCTest

/// The chunks of one scenario, per connection and direction, in order.
struct WireTranscript {
    var chunks: [String: [[UInt8]]] = [:]  // "c1 C>S" -> chunks

    init(named name: String) throws {
        let text = try String(contentsOf: wireTranscriptsDirectory.appendingPathComponent(name), encoding: .utf8)
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ")
            guard f.count == 5, f[3].hasPrefix("len=") else { continue }
            chunks["\(f[1]) \(f[2])", default: []].append(Self.hex(f[4]))
        }
    }

    func stream(_ key: String) -> [UInt8] { (chunks[key] ?? []).flatMap { $0 } }

    static func hex(_ s: some StringProtocol) -> [UInt8] {
        let u = Array(s.utf8)
        func nib(_ c: UInt8) -> UInt8 { c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x61 + 10 }
        return stride(from: 0, to: u.count, by: 2).map { nib(u[$0]) << 4 | nib(u[$0 + 1]) }
    }
}

/// Decodes a whole byte stream offered in pieces of the given sizes, as WebSocketStream does:
/// what a decode leaves unconsumed is offered again in front of the next piece.
func decodeStream(_ bytes: [UInt8], peerMasks: Bool, pieces: [Int]) throws -> (payload: [UInt8], controls: [WebSocketControlFrame]) {
    var decoder = WebSocketFrameDecoder(peerMasks: peerMasks)
    var payload: [UInt8] = []
    var controls: [WebSocketControlFrame] = []
    var left: [UInt8] = []
    var offset = 0
    var sizes = pieces.makeIterator()
    while offset < bytes.count {
        let n = min(sizes.next() ?? bytes.count, bytes.count - offset)
        var buffer = left + bytes[offset..<offset + n]
        offset += n
        let count = buffer.count
        let (p, consumed) = try buffer.withUnsafeMutableBytes { b in try decoder.decode(b, count: count, controls: &controls) }
        payload += buffer[..<p]
        left = Array(buffer[consumed..<count])
    }
    XCTAssertTrue(left.isEmpty || decoder.closed, "\(left.count) bytes of an unfinished frame left over")
    return (payload, controls)
}

final class WebSocketCodecTests: XCTestCase {
    // MARK: The upgrade

    func testAcceptValueOfRFC6455Example() {
        XCTAssertEqual(WebSocketHandshake.acceptValue(key: "dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    /// Every upgrade of the recorded session: the request is exactly what we build from its key and
    /// the client's remote_addr, the response exactly what we build from that key, and each side's
    /// checks accept the other's bytes.
    func testUpgradesOfTheRecordedSessionAreRebuiltByteForByte() throws {
        let t = try WireTranscript(named: "07-websocket.hex.txt")
        var checked = 0
        for conn in 1...10 {
            let request = try XCTUnwrap(t.chunks["c\(conn) C>S"]?.first)
            let response = try XCTUnwrap(t.chunks["c\(conn) S>C"]?.first)
            let key = try WebSocketHandshake.checkRequest(request)
            XCTAssertEqual(key.count, 24)
            XCTAssertEqual(request, WebSocketHandshake.request(host: "127.0.0.1:2334", key: key), "c\(conn) request")
            XCTAssertEqual(response, WebSocketHandshake.response(key: key), "c\(conn) response")
            XCTAssertNoThrow(try WebSocketHandshake.checkResponse(response, key: key), "c\(conn)")
            XCTAssertThrowsError(try WebSocketHandshake.checkResponse(response, key: WebSocketHandshake.randomKey()))
            checked += 1
        }
        XCTAssertEqual(checked, 10)
    }

    func testHostHeaderIsTheAuthorityOfTheWsURL() throws {
        func host(_ s: String) throws -> String { WebSocketHandshake.hostHeader(for: try XCTUnwrap(HostPort(s))) }
        XCTAssertEqual(try host("127.0.0.1:2334"), "127.0.0.1:2334")
        XCTAssertEqual(try host("Tunnel.Example.COM:2333"), "tunnel.example.com:2333")
        XCTAssertEqual(try host("example.com:80"), "example.com", "80 is the ws default port")
        XCTAssertEqual(try host("example.com:443"), "example.com:443", "the URL is ws:// even with TLS underneath")
        XCTAssertEqual(try host("[::1]:2333"), "[::1]:2333")
    }

    func testRandomKeysAreSixteenBytesOfBase64() {
        let a = WebSocketHandshake.randomKey(), b = WebSocketHandshake.randomKey()
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(a.count, 24)
        XCTAssertTrue(a.hasSuffix("=="))
        XCTAssertEqual(Data(base64Encoded: a)?.count, 16)
    }

    private func request(_ lines: [String]) -> [UInt8] { Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8) }

    private let good = [
        "GET / HTTP/1.1", "Host: h:1", "Connection: Upgrade", "Upgrade: websocket",
        "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ]

    /// What tungstenite requires of a request, we require; the rest (path, case, other headers,
    /// a Connection list, an extension offer) does not matter.
    func testServerChecksTheRequestAsUpstream() throws {
        XCTAssertEqual(try WebSocketHandshake.checkRequest(request(good)), "dGhlIHNhbXBsZSBub25jZQ==")
        // What the Python websockets client and browsers send.
        let python = [
            "GET /some/path?x=1 HTTP/1.1", "host: h", "upgrade: WebSocket", "connection: keep-alive, Upgrade",
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version: 13",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits", "User-Agent: Python/3.11 websockets/17.4",
        ]
        XCTAssertEqual(try WebSocketHandshake.checkRequest(request(python)), "dGhlIHNhbXBsZSBub25jZQ==")

        func refused(_ lines: [String], _ why: String) {
            XCTAssertThrowsError(try WebSocketHandshake.checkRequest(request(lines)), why)
        }
        refused(["POST / HTTP/1.1"] + good.dropFirst(), "method")
        refused(["GET / HTTP/1.0"] + good.dropFirst(), "version")
        refused(good.filter { !$0.hasPrefix("Connection") }, "no Connection")
        refused(good.map { $0.hasPrefix("Connection") ? "Connection: keep-alive" : $0 }, "Connection without upgrade")
        refused(good.map { $0.hasPrefix("Upgrade") ? "Upgrade: h2c" : $0 }, "Upgrade")
        refused(good.map { $0.hasPrefix("Sec-WebSocket-Version") ? "Sec-WebSocket-Version: 8" : $0 }, "version 8")
        refused(good.filter { !$0.hasPrefix("Sec-WebSocket-Key") }, "no key")
        refused(good.map { $0.hasPrefix("Host") ? "Bad Header: x" : $0 }, "space in a header name")
        refused(good + ["X: caf\u{e9}"], "a byte outside ASCII")
        XCTAssertThrowsError(try WebSocketHandshake.checkRequest(Array("GET / HTTP/1.1\r\n\r\n".utf8)))
    }

    /// Fuzzer find (websocket-upgrade target, Tests/Fuzz/corpus/websocket-upgrade/regression-*):
    /// a bare CR or LF inside the request line (kept by the head parser, which splits on CRLF)
    /// went into the refusal, so a stranger's request logged several lines. Shown as '?'.
    func testRefusalsOfBareCRorLFHeadsAreOneLine() {
        let found = Array("GET / HTTP/1t\rosH\n1.: 127.0.0.1:2334\r\nConnection: Upgrade\r\n\r\n".utf8)
        XCTAssertThrowsError(try WebSocketHandshake.checkRequest(found)) {
            XCTAssertEqual($0 as? WebSocketHandshakeError, .malformed("request line \"GET / HTTP/1t?osH?1.: 127.0.0.1:2334\""))
        }
        let heads = [
            "GET / HTTP/1.1\nX\r\nHost: h\r\n\r\n", "GET / HTTP/1.1\r\nBad\rName: x\r\n\r\n",
            "GET / HTTP/1.1\rX\r\n\r\n", "GET / HTTP/1.\n1\r\n\r\n",
        ]
        for head in heads {
            XCTAssertThrowsError(try WebSocketHandshake.checkRequest(Array(head.utf8))) {
                let line = "\($0)"
                XCTAssertFalse(line.contains("\n") || line.contains("\r"), line.debugDescription)
            }
        }
        let response = Array("HTTP/1.1 200 O\nK\r\n\r\n".utf8)
        XCTAssertThrowsError(try WebSocketHandshake.checkResponse(response, key: "x")) {
            XCTAssertEqual($0 as? WebSocketHandshakeError, .refused("the server answered \"HTTP/1.1 200 O?K\""))
        }
    }

    func testClientChecksTheResponseAsUpstream() throws {
        let key = "dGhlIHNhbXBsZSBub25jZQ=="
        let ok = [
            "HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "Date: today", "Server: Python/3.11 websockets/17.4",
        ]
        XCTAssertNoThrow(try WebSocketHandshake.checkResponse(request(ok), key: key))
        func refused(_ lines: [String], _ why: String) {
            XCTAssertThrowsError(try WebSocketHandshake.checkResponse(request(lines), key: key), why)
        }
        refused(["HTTP/1.1 200 OK", "Content-Length: 0"], "200")
        refused(["HTTP/1.1 404 Not Found"] + ok.dropFirst(), "404")
        refused(ok.filter { !$0.hasPrefix("Upgrade") }, "no Upgrade")
        refused(ok.filter { !$0.hasPrefix("Connection") }, "no Connection")
        refused(ok.map { $0.hasPrefix("Sec-WebSocket-Accept") ? "Sec-WebSocket-Accept: AAAA" : $0 }, "wrong accept")
        refused(ok + ["Sec-WebSocket-Protocol: chat"], "a subprotocol we did not ask for")
        refused(ok + ["Sec-WebSocket-Extensions: permessage-deflate"], "an extension we did not ask for")
    }

    func testHeadLengthRefusesStrangersAtTheirFirstBytes() throws {
        func length(_ bytes: [UInt8], _ prefix: String = "GET ") throws -> Int? {
            try bytes.withUnsafeBytes { try WebSocketHandshake.headLength($0, startsWith: prefix) }
        }
        // A rathole Hello sent by a client configured for plain TCP.
        XCTAssertThrowsError(try length([0, 0, 0, 0, 1])) { XCTAssertEqual($0 as? WebSocketHandshakeError, .notHTTP) }
        XCTAssertThrowsError(try length(Array("POST".utf8)))
        XCTAssertThrowsError(try length([0x16, 3, 1], "HTTP/"), "a TLS record where a response was expected")
        XCTAssertNil(try length(Array("GE".utf8)))
        XCTAssertNil(try length(Array("GET / HTTP/1.1\r\nHost: x\r\n".utf8)))
        XCTAssertEqual(try length(Array("GET / HTTP/1.1\r\n\r\nextra".utf8)), 18)
        let huge = Array("GET / HTTP/1.1\r\n".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: WebSocketHandshake.maxHeadSize)
        XCTAssertThrowsError(try length(huge)) { XCTAssertEqual($0 as? WebSocketHandshakeError, .headTooLarge) }
    }

    // MARK: Frames of the recorded session

    /// Every byte stream of the recorded session after its upgrade decodes to the rathole messages
    /// upstream sent, offered whole, one byte at a time, or in random pieces.
    func testRecordedFramesDecodeToTheProtocolStream() throws {
        let t = try WireTranscript(named: "07-websocket.hex.txt")
        let hello = WireTranscript.hex("0000000001092c79e8f80e559e404bcf660c48f3522b67aba9ff1484b0367e1a4ddef7431d")
        var rng = SystemRandomNumberGenerator()
        for chunking in ["whole", "bytes", "random"] {
            func pieces(_ n: Int) -> [Int] {
                switch chunking {
                case "whole": return [n]
                case "bytes": return Array(repeating: 1, count: n)
                default: return (0..<n).map { _ in Int.random(in: 1...20, using: &rng) }
                }
            }
            func decode(_ key: String, clientFrames: Bool) throws -> ([UInt8], [WebSocketControlFrame]) {
                let chunks = try XCTUnwrap(t.chunks[key])
                let frames = Array(chunks.dropFirst().joined())  // after the upgrade
                return try decodeStream(frames, peerMasks: clientFrames, pieces: pieces(frames.count))
            }
            // Control channel: Hello, then Auth from the client; Hello, Ack, 8 + 1 CreateDataChannel from the server.
            let (c1up, _) = try decode("c1 C>S", clientFrames: true)
            XCTAssertEqual(Array(c1up.prefix(37)), hello, chunking)
            XCTAssertEqual(c1up.count, 37 + 32, chunking)
            let (c1down, _) = try decode("c1 S>C", clientFrames: false)
            XCTAssertEqual(c1down.count, 37 + 4 + 9 * 4, chunking)
            XCTAssertEqual(Array(c1down.suffix(40)), [UInt8](repeating: 0, count: 40), chunking)
            // The visitor's data channel: StartForwardTcp and the payload, echoed back, then a close.
            let (c2down, controls) = try decode("c2 S>C", clientFrames: false)
            XCTAssertEqual(c2down, [0, 0, 0, 0] + Array("hello ws-0".utf8), chunking)
            XCTAssertEqual(controls, [WebSocketControlFrame(kind: .close, payload: [])], chunking)
            let (c2up, _) = try decode("c2 C>S", clientFrames: true)
            XCTAssertEqual(Array(c2up.suffix(10)), Array("hello ws-0".utf8), chunking)
            XCTAssertEqual(Array(c2up.prefix(5)), [1, 0, 0, 0, 1], "\(chunking): a data channel Hello")
        }
    }

    /// What upstream sent, message for message, is what we encode (server frames are unmasked, so
    /// byte for byte; client frames with the recorded masking key).
    func testWeEncodeTheRecordedFrames() throws {
        let t = try WireTranscript(named: "07-websocket.hex.txt")
        let serverAck = try XCTUnwrap(t.chunks["c1 S>C"]?[2])
        let nine = (0..<9).flatMap { _ in WebSocketFrame.encode(opcode: 2, payload: [0, 0, 0, 0], mask: nil) }
        XCTAssertEqual(serverAck, nine, "Ack Ok and eight CreateDataChannel, one message each")
        let close = try XCTUnwrap(t.chunks["c2 S>C"]?.last)
        XCTAssertEqual(close, WebSocketFrame.encode(opcode: 8, payload: [], mask: nil))
        let echoed = try XCTUnwrap(t.chunks["c2 C>S"]?.last)  // 82 8a <mask> <masked "hello ws-0">
        let mask = echoed[2..<6].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        XCTAssertEqual(echoed, WebSocketFrame.encode(opcode: 2, payload: Array("hello ws-0".utf8), mask: mask))
    }

    // MARK: Frames: lengths, masking, fragmentation, control frames

    func testLengthFormsRoundTrip() throws {
        for n in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            for mask: UInt32? in [nil, 0x1234_5678] {
                let frame = WebSocketFrame.encode(opcode: 2, payload: payload, mask: mask)
                XCTAssertEqual(frame.count, WebSocketFrame.headerSize(payloadCount: n, masked: mask != nil) + n)
                XCTAssertEqual(frame[1] & 0x7F, n < 126 ? UInt8(n) : n <= 0xFFFF ? 126 : 127, "\(n)")
                let (out, _) = try decodeStream(frame, peerMasks: mask != nil, pieces: [3, 7, 1, 100])
                XCTAssertEqual(out, payload, "\(n) bytes, mask \(String(describing: mask))")
            }
        }
    }

    func testMaskingMatchesTheByteWiseDefinition() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let count = Int.random(in: 0...40, using: &rng)
            let phase = Int.random(in: 0...3, using: &rng)
            let mask = UInt32.random(in: 0...UInt32.max, using: &rng)
            let input = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let keyBytes = withUnsafeBytes(of: mask) { Array($0) }
            let expected = input.enumerated().map { $1 ^ keyBytes[($0 + phase) % 4] }
            var out = [UInt8](repeating: 0, count: count)
            let next = input.withUnsafeBytes { i in
                out.withUnsafeMutableBytes { o in
                    WebSocketFrame.applyMask(mask, phase: phase, from: i.baseAddress, to: o.baseAddress!, count: count)
                }
            }
            XCTAssertEqual(out, expected)
            XCTAssertEqual(next, (phase + count) % 4)
        }
    }

    /// A fragmented binary message with a ping between its fragments: the payload is the
    /// concatenation, the ping is reported.
    func testFragmentedMessageWithInterleavedPing() throws {
        let mask: UInt32 = 0xA1B2_C3D4
        var stream: [UInt8] = []
        stream += frame(fin: false, opcode: 2, Array("frag-1 ".utf8), mask: mask)
        stream += frame(fin: true, opcode: 9, Array("are you there".utf8), mask: mask)
        stream += frame(fin: false, opcode: 0, Array("frag-2 ".utf8), mask: mask)
        stream += frame(fin: true, opcode: 0, Array("frag-3".utf8), mask: mask)
        stream += frame(fin: true, opcode: 0xA, [], mask: mask)
        stream += frame(fin: true, opcode: 2, Array(" next".utf8), mask: mask)
        for pieces in [[stream.count], Array(repeating: 1, count: stream.count), [5, 3, 9, 2]] {
            let (payload, controls) = try decodeStream(stream, peerMasks: true, pieces: pieces)
            XCTAssertEqual(String(decoding: payload, as: UTF8.self), "frag-1 frag-2 frag-3 next")
            XCTAssertEqual(controls.map(\.kind), [.ping, .pong])
            XCTAssertEqual(controls.first?.payload, Array("are you there".utf8))
        }
    }

    func testBytesAfterACloseAreIgnored() throws {
        let stream =
            frame(fin: true, opcode: 2, [1, 2, 3], mask: nil) + frame(fin: true, opcode: 8, [0x03, 0xE8], mask: nil)
            + frame(fin: true, opcode: 2, [4, 5, 6], mask: nil)
        let (payload, controls) = try decodeStream(stream, peerMasks: false, pieces: [stream.count])
        XCTAssertEqual(payload, [1, 2, 3])
        XCTAssertEqual(controls, [WebSocketControlFrame(kind: .close, payload: [0x03, 0xE8])])
    }

    /// Frames upstream refuses are refused, most of them at their first two bytes, before any
    /// payload (or a length field's worth of memory) is involved.
    func testBadFramesAreRefused() {
        func refused(_ bytes: [UInt8], peerMasks: Bool = true, _ expected: WebSocketFrameError) {
            XCTAssertThrowsError(try decodeStream(bytes, peerMasks: peerMasks, pieces: [bytes.count])) {
                XCTAssertEqual($0 as? WebSocketFrameError, expected)
            }
        }
        let key: [UInt8] = [1, 2, 3, 4]
        refused([0x82, 0x03, 1, 2, 3], .unmaskedClientFrame)
        refused([0x82, 0x83] + key + [1, 2, 3], peerMasks: false, .maskedServerFrame)
        refused([0x81, 0x81] + key + [0x41], .textMessage)
        refused([0xC2, 0x81] + key + [0], .reservedBitsSet)
        refused([0x83, 0x80] + key, .unknownOpcode(3))
        refused([0x8B, 0x80] + key, .unknownOpcode(11))
        refused([0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0] + key, .frameTooLarge(1 << 32))
        refused([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0] + key, .frameTooLarge(1 << 63))
        refused([0x09, 0x80] + key, .fragmentedControlFrame)
        refused([0x89, 0xFE, 0, 126] + key + [UInt8](repeating: 0, count: 126), .controlFrameTooLarge(126))
        refused([0x80, 0x81] + key + [0], .continuationWithoutMessage)
        refused([0x02, 0x81] + key + [0, 0x82, 0x81] + key + [0], .messageInterrupted)
    }

    /// Fuzzer find (websocket-frames target): a control frame whose 64-bit length field is 2^63 or
    /// more trapped converting the length to Int for the error, so one stranger's 14 bytes took
    /// the whole server down. Refused like any other oversized control frame.
    func testControlFrameWithHugeLengthIsRefused() {
        let key: [UInt8] = [0x89, 0x89, 0x89, 0x89]
        for length: UInt64 in [1 << 63, UInt64.max, 0x8989_8989_8989_8989] {
            let field = (0..<8).map { UInt8(truncatingIfNeeded: length >> (56 - 8 * UInt64($0))) }
            for (opcode, peerMasks) in [(0x89, true), (0x88, false), (0x8A, true)] {
                let bytes = [UInt8(opcode), peerMasks ? 0xFF : 0x7F] + field + (peerMasks ? key : [])
                XCTAssertThrowsError(try decodeStream(bytes, peerMasks: peerMasks, pieces: [bytes.count])) {
                    XCTAssertEqual($0 as? WebSocketFrameError, .controlFrameTooLarge(length))
                }
            }
        }
    }

    /// Fragments each within the frame limit, adding up to more than a message may hold: refused
    /// at the header that crosses the limit (payloads streamed through a 1 MiB buffer).
    func testMessageLimitAcrossFragments() throws {
        var decoder = WebSocketFrameDecoder(peerMasks: true)
        var controls: [WebSocketControlFrame] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        let fragment = 0xF0_0000
        for i in 0..<5 {
            var header: [UInt8] = [i == 0 ? 0x02 : 0x00, 0xFF, 0, 0, 0, 0, 0, 0xF0, 0, 0, 1, 2, 3, 4]
            let count = header.count
            if i == 4 {
                XCTAssertThrowsError(try header.withUnsafeMutableBytes { try decoder.decode($0, count: count, controls: &controls) }) {
                    XCTAssertEqual($0 as? WebSocketFrameError, .messageTooLarge(5 * fragment))
                }
                return
            }
            let (p, consumed) = try header.withUnsafeMutableBytes { try decoder.decode($0, count: count, controls: &controls) }
            XCTAssertEqual([p, consumed], [0, count])
            var left = fragment
            while left > 0 {
                let n = min(left, chunk.count)
                let (payload, _) = try chunk.withUnsafeMutableBytes { try decoder.decode($0, count: n, controls: &controls) }
                XCTAssertEqual(payload, n)
                left -= n
            }
        }
    }

    private func frame(fin: Bool, opcode: UInt8, _ payload: [UInt8], mask: UInt32?) -> [UInt8] {
        var f = WebSocketFrame.encode(opcode: opcode, payload: payload, mask: mask)
        if !fin { f[0] &= 0x7F }
        return f
    }
}
