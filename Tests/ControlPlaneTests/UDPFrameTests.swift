// UDP frames as the protocol lays them out: encoding, decoding, sizes and malformed frames.
import ControlPlane
import Foundation
import TestKit
import XCTest

final class UDPFrameTests: XCTestCase {
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
        XCTAssertThrowsError(
            try small.withUnsafeMutableBytes {
                try UdpHeader.encodePrefix(from: from, payloadLength: 3, into: $0)
            }
        ) { e in XCTAssertEqual(e as? ProtocolError, .bufferTooSmall(needed: 13, available: 10)) }
        XCTAssertThrowsError(
            try small.withUnsafeMutableBytes { out in
                try payload.withUnsafeBytes { try UdpFrame.encode(from: from, payload: $0, into: out) }
            }
        ) { e in XCTAssertEqual(e as? ProtocolError, .bufferTooSmall(needed: 16, available: 10)) }
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
}
