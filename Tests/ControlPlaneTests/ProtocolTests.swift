// The protocol codecs without sockets: messages, the stream decoder, digests, IP addresses.
import ControlPlane
import Foundation
import TestKit
import XCTest

final class ProtocolTests: XCTestCase {
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
        XCTAssertEqual(
            Digest.sha256([UInt8]()).description,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(Digest.zero.bytes, [UInt8](repeating: 0, count: 32))
        let r1 = Digest.random()
        let r2 = Digest.random()
        XCTAssertNotEqual(r1, r2)
        XCTAssertEqual(Set([d, d, r1]).count, 2)
        // auth = sha256(token || nonce)
        let nonce = try XCTUnwrap(Digest(hex: "c70075432209553efea6bb1d5dd91c20687efd73714957e46d3a7240f418ca1a"))
        XCTAssertEqual(
            Digest.auth(token: "wire_token_1", nonce: nonce).description,
            "460f48b99fd3f62d57cdfd0bd0f52363c86e6c3f2c382d2807610a21af5fb328")
        XCTAssertEqual(
            Digest.auth(token: Array("wire_token_1".utf8), nonce: nonce),
            Digest.sha256(Array("wire_token_1".utf8) + nonce.bytes))
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
        for bad in [
            "", ":", ":::", "1:::2", "1::2::3", ":1::", "12345::", "g::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9",
            "::1.2.3", "1.2.3.4::", "::1%eth0", "1:2:3:4:5:6:7::8:9",
        ] {
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
        for bad in [
            "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "::1:80", "[::1]", "[::1]80", "localhost:80",
            "[::1]:-1", "1.2.3.4:8a",
        ] {
            XCTAssertNil(PeerAddress(bad), bad)
        }
    }
}
