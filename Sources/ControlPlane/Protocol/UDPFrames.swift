// The framing of datagrams on a UDP data channel.

/// The header in front of every datagram on a UDP data channel (after a u8 holding its length):
/// bincode `UdpHeader { from: SocketAddr, len: u16 }`.
public struct UdpHeader: Hashable, Sendable {
    /// The visitor's address (in both directions).
    public var from: PeerAddress
    /// Payload length in bytes.
    public var length: UInt16

    /// Largest payload carried (the largest IPv4 UDP payload).
    public static let maxPayload = 65507
    /// bincode size of the header with an IPv4 / IPv6 address.
    public static let ipv4Size = 12
    public static let ipv6Size = 24
    /// Largest frame: length byte, IPv6 header, largest payload.
    public static let maxFrameSize = 1 + ipv6Size + maxPayload

    public init(from: PeerAddress, length: UInt16) {
        self.from = from
        self.length = length
    }

    /// bincode size of the header: 12 or 24.
    public static func encodedSize(for address: PeerAddress) -> Int {
        address.isIPv6 ? ipv6Size : ipv4Size
    }

    /// Size of what precedes the payload: the length byte plus the header (13 or 25).
    public static func prefixSize(for address: PeerAddress) -> Int {
        1 + encodedSize(for: address)
    }

    public var prefixSize: Int { UdpHeader.prefixSize(for: from) }

    /// Writes the length byte and the header (13 or 25 bytes) at the start of `buffer`, for a payload of
    /// `payloadLength` bytes; returns the bytes written. No allocation.
    public static func encodePrefix(
        from: PeerAddress, payloadLength: Int, into buffer: UnsafeMutableRawBufferPointer
    ) throws(ProtocolError) -> Int {
        guard payloadLength >= 0, payloadLength <= maxPayload else { throw .udpPayloadTooLarge(payloadLength) }
        let size = prefixSize(for: from)
        guard buffer.count >= size else { throw .bufferTooSmall(needed: size, available: buffer.count) }
        buffer[0] = UInt8(size - 1)
        switch from {
        case let .v4(addr, port):
            buffer.storeU32LE(0, at: 1)
            buffer.storeBytes(of: addr.networkOrder, toByteOffset: 5, as: UInt32.self)
            buffer.storeU16LE(port, at: 9)
            buffer.storeU16LE(UInt16(payloadLength), at: 11)
        case let .v6(addr, port):
            buffer.storeU32LE(1, at: 1)
            buffer.storeBytes(of: addr.high.bigEndian, toByteOffset: 5, as: UInt64.self)
            buffer.storeBytes(of: addr.low.bigEndian, toByteOffset: 13, as: UInt64.self)
            buffer.storeU16LE(port, at: 21)
            buffer.storeU16LE(UInt16(payloadLength), at: 23)
        }
        return size
    }

    /// Decodes the length byte and header at the start of `raw`. Returns nil when `raw` is too short to
    /// hold them yet (the payload is not looked at); throws as soon as the bytes present are malformed.
    public static func decodePrefix(_ raw: UnsafeRawBufferPointer) throws(ProtocolError) -> UdpHeader? {
        guard raw.count >= 1 else { return nil }
        let declared = raw[0]
        guard Int(declared) == ipv4Size || Int(declared) == ipv6Size else {
            throw .udpHeaderLengthInvalid(declared)
        }
        guard raw.count >= 5 else { return nil }
        let tag = raw.u32LE(at: 1)
        let expected: Int
        switch tag {
        case 0: expected = ipv4Size
        case 1: expected = ipv6Size
        default: throw .udpAddressTag(tag)
        }
        guard Int(declared) == expected else { throw .udpHeaderLengthMismatch(declared: declared, expected: expected) }
        guard raw.count >= 1 + expected else { return nil }
        let from: PeerAddress
        let length: UInt16
        if tag == 0 {
            let a = raw.loadUnaligned(fromByteOffset: 5, as: UInt32.self)
            from = .v4(IPv4Address(value: UInt32(bigEndian: a)), port: raw.u16LE(at: 9))
            length = raw.u16LE(at: 11)
        } else {
            let h = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 5, as: UInt64.self))
            let l = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 13, as: UInt64.self))
            from = .v6(IPv6Address(high: h, low: l), port: raw.u16LE(at: 21))
            length = raw.u16LE(at: 23)
        }
        guard Int(length) <= maxPayload else { throw .udpPayloadTooLarge(Int(length)) }
        return UdpHeader(from: from, length: length)
    }
}

/// One datagram as carried on a UDP data channel.
public struct UdpFrame: Hashable, Sendable, CustomStringConvertible {
    public var from: PeerAddress
    public var payload: [UInt8]

    public init(from: PeerAddress, payload: [UInt8]) {
        self.from = from
        self.payload = payload
    }

    /// Encoded size: length byte, header, payload.
    public var encodedSize: Int { UdpHeader.prefixSize(for: from) + payload.count }

    /// Writes a whole frame (length byte, header, payload) at the start of `buffer`; returns the bytes
    /// written. No allocation.
    public static func encode(
        from: PeerAddress, payload: UnsafeRawBufferPointer, into buffer: UnsafeMutableRawBufferPointer
    ) throws(ProtocolError) -> Int {
        let total = UdpHeader.prefixSize(for: from) + payload.count
        guard payload.count <= UdpHeader.maxPayload else { throw .udpPayloadTooLarge(payload.count) }
        guard buffer.count >= total else { throw .bufferTooSmall(needed: total, available: buffer.count) }
        let n = try UdpHeader.encodePrefix(from: from, payloadLength: payload.count, into: buffer)
        if payload.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: buffer[n..<total]).copyMemory(from: payload)
        }
        return total
    }

    /// Writes this frame at the start of `buffer`; returns the bytes written.
    public func encode(into buffer: UnsafeMutableRawBufferPointer) throws(ProtocolError) -> Int {
        let r: Result<Int, ProtocolError> = payload.withUnsafeBytes { p in
            Result { () throws(ProtocolError) -> Int in try UdpFrame.encode(from: from, payload: p, into: buffer) }
        }
        return try r.get()
    }

    /// The encoded frame.
    public func encode() throws(ProtocolError) -> [UInt8] {
        guard payload.count <= UdpHeader.maxPayload else { throw .udpPayloadTooLarge(payload.count) }
        var out = [UInt8](repeating: 0, count: encodedSize)
        let r: Result<Int, ProtocolError> = out.withUnsafeMutableBytes { buf in
            Result { () throws(ProtocolError) -> Int in try encode(into: buf) }
        }
        _ = try r.get()
        return out
    }

    /// Examines the start of `raw`: nil if it does not yet hold a complete frame, else the header and
    /// the frame's total size (the payload is `raw[size - header.length ..< size]`). No allocation.
    public static func parse(_ raw: UnsafeRawBufferPointer) throws(ProtocolError) -> (header: UdpHeader, size: Int)? {
        guard let header = try UdpHeader.decodePrefix(raw) else { return nil }
        let size = header.prefixSize + Int(header.length)
        guard raw.count >= size else { return nil }
        return (header, size)
    }

    /// Decodes exactly one frame that fills `bytes`.
    public init(decoding bytes: some Collection<UInt8>) throws(ProtocolError) {
        let r: Result<UdpFrame, ProtocolError> = withContiguousBytes(bytes) { raw in
            Result { () throws(ProtocolError) -> UdpFrame in
                guard let header = try UdpHeader.decodePrefix(raw) else {
                    // Too short for the header: report what is there as a truncation.
                    let want = raw.count >= 1 ? Int(raw[0]) + 1 : 1
                    throw .wrongLength(message: "UDP frame header", expected: want, actual: raw.count)
                }
                let start = header.prefixSize
                let size = start + Int(header.length)
                guard raw.count >= size else {
                    throw .udpTruncated(declared: Int(header.length), available: raw.count - start)
                }
                guard raw.count == size else { throw .trailingBytes(message: "UDP frame", count: raw.count - size) }
                return UdpFrame(from: header.from, payload: Array(UnsafeRawBufferPointer(rebasing: raw[start..<size])))
            }
        }
        self = try r.get()
    }

    public var description: String { "UdpFrame(from: \(from), \(payload.count) bytes)" }
}
