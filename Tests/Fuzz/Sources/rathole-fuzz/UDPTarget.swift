import ControlPlane

// UDP frames on a UDP data channel: u8 header length, bincode UdpHeader { from: SocketAddr,
// len: u16 }, payload. Input: mode byte, then
//   mode even: the bytes of one frame, decoded whole and by prefixes;
//   mode odd: a frame to build (family, address, port, payload length), encoded then decoded.
//
// Properties: a decoded frame re-encodes to exactly its bytes; the error is the first one the
// layout calls for (an independent reading of the layout); a prefix of the bytes never decodes
// differently from the whole (nil while incomplete, the same header or the same error);
// decodePrefix and parse allocate nothing (beyond the runtime's one-time metadata); building then
// decoding gives the frame back.

let udpTarget = FuzzTarget(
    name: "udp",
    summary: "UdpFrame/UdpHeader: decode against the layout, prefixes, encode/decode round trip"
) { data in
    var input = FuzzInput(data)
    if input.byte() & 1 == 0 {
        UDPChecks.decode(input.rest())
    } else {
        UDPChecks.roundTrip(&input)
    }
}

enum UDPChecks {
    static func decode(_ bytes: [UInt8]) {
        let result = boundedHeap(input: bytes.count, fixed: 4096, "UdpFrame(decoding:)") {
            Result { () throws(ProtocolError) -> UdpFrame in try UdpFrame(decoding: bytes) }
        }
        let expected = layout(bytes)
        switch (result, expected) {
        case (.success(let f), .success(let (from, length))):
            require(f.from == from && f.payload.count == Int(length), "decoded \(f), layout says \(from) \(length)")
            require((try? f.encode()) == bytes, "\(f) does not re-encode to \(hex(bytes))")
        case (.failure(let e), .failure(let e2)):
            require(e == e2, "error \(e), layout says \(e2), for \(hex(bytes))")
            requireOneLine(e.description, "ProtocolError")
        default:
            require(false, "decoded \(result), layout says \(expected), for \(hex(bytes))")
        }

        // The same bytes seen a prefix at a time, as a stream decoder sees them.
        let full = bytes.withUnsafeBytes { raw in Result { () throws(ProtocolError) in try UdpHeader.decodePrefix(raw) } }
        for cut in [0, 1, 4, 5, 12, 13, 24, 25, bytes.count / 2, bytes.count] where cut <= bytes.count {
            bytes.withUnsafeBytes { all in
                let raw = UnsafeRawBufferPointer(rebasing: all[..<cut])
                let prefix = boundedHeap(input: 0, perByte: 0, fixed: 2048, "UdpHeader.decodePrefix") {
                    Result { () throws(ProtocolError) in try UdpHeader.decodePrefix(raw) }
                }
                switch (prefix, full) {
                case (.success(nil), _): break
                case (.success(let h?), .success(let hf)): require(h == hf, "prefix \(cut): header \(h), whole \(String(describing: hf))")
                case (.failure(let e), .failure(let ef)): require(e == ef, "prefix \(cut): error \(e), whole \(ef)")
                default: require(false, "prefix \(cut) decodes to \(prefix), the whole to \(full)")
                }
                let parsed = boundedHeap(input: 0, perByte: 0, fixed: 2048, "UdpFrame.parse") {
                    Result { () throws(ProtocolError) in try UdpFrame.parse(raw) }
                }
                if case .success(let p?) = parsed {
                    require(p.size <= cut && p.size == p.header.prefixSize + Int(p.header.length), "parse of \(cut) bytes: \(p)")
                }
                if case .success = result, cut < bytes.count {
                    let incomplete = if case .success(nil) = parsed { true } else { false }
                    require(incomplete, "parse of an incomplete frame (\(cut) of \(bytes.count)): \(parsed)")
                }
            }
        }
    }

    /// The frame's address and payload length, or the first error, read straight off the layout.
    static func layout(_ b: [UInt8]) -> Result<(PeerAddress, UInt16), ProtocolError> {
        let n = b.count
        guard n >= 1 else { return .failure(.wrongLength(message: "UDP frame header", expected: 1, actual: 0)) }
        let declared = b[0]
        guard declared == 12 || declared == 24 else { return .failure(.udpHeaderLengthInvalid(declared)) }
        let short = ProtocolError.wrongLength(message: "UDP frame header", expected: Int(declared) + 1, actual: n)
        guard n >= 5 else { return .failure(short) }
        let tag = le(b, 1, 4)
        guard tag <= 1 else { return .failure(.udpAddressTag(UInt32(tag))) }
        let size = tag == 0 ? 12 : 24
        guard Int(declared) == size else { return .failure(.udpHeaderLengthMismatch(declared: declared, expected: size)) }
        guard n >= 1 + size else { return .failure(short) }
        let from: PeerAddress
        if tag == 0 {
            from = .v4(IPv4Address(b[5], b[6], b[7], b[8]), port: UInt16(le(b, 9, 2)))
        } else {
            from = .v6(IPv6Address(bytes: b[5..<21])!, port: UInt16(le(b, 21, 2)))
        }
        let length = Int(le(b, size - 1, 2))
        guard length <= UdpHeader.maxPayload else { return .failure(.udpPayloadTooLarge(length)) }
        let total = 1 + size + length
        guard n >= total else { return .failure(.udpTruncated(declared: length, available: n - 1 - size)) }
        guard n == total else { return .failure(.trailingBytes(message: "UDP frame", count: n - total)) }
        return .success((from, UInt16(length)))
    }

    private static func le(_ b: [UInt8], _ at: Int, _ count: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in (0..<count).reversed() { v = v << 8 | UInt64(b[at + i]) }
        return v
    }

    static func roundTrip(_ input: inout FuzzInput) {
        let v6 = input.byte() & 1 == 1
        let from: PeerAddress
        if v6 {
            from = .v6(IPv6Address(bytes: input.takePadded(16))!, port: input.u16())
        } else {
            from = .v4(IPv4Address(value: input.u32()), port: input.u16())
        }
        // A length past the maximum must be refused; a long payload repeats the input's bytes.
        // Long payloads are slow to build and check: one input in 16 asks for one.
        let long = input.byte() & 15 == 0
        let length = Int(input.u16()) % (long ? UdpHeader.maxPayload + 64 : 600)
        let seed = input.rest()
        let payload = (0..<length).map { seed.isEmpty ? UInt8(truncatingIfNeeded: $0) : seed[$0 % seed.count] }
        let frame = UdpFrame(from: from, payload: payload)
        do {
            let bytes = try frame.encode()
            require(length <= UdpHeader.maxPayload, "a \(length)-byte payload was encoded")
            require(bytes.count == frame.encodedSize, "encoded \(bytes.count) bytes, encodedSize \(frame.encodedSize)")
            require((try? UdpFrame(decoding: bytes)) == frame, "\(frame) does not decode back")
            var small = [UInt8](repeating: 0, count: bytes.count - 1)
            let r = small.withUnsafeMutableBytes { buf in Result { () throws(ProtocolError) in try frame.encode(into: buf) } }
            require(r == .failure(.bufferTooSmall(needed: bytes.count, available: bytes.count - 1)), "encode into a short buffer: \(r)")
        } catch {
            require(error == .udpPayloadTooLarge(length) && length > UdpHeader.maxPayload, "encode: \(error) for \(length) bytes")
        }
    }
}
