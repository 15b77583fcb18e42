// Why bytes from a peer are not a valid rathole v1 message.

/// A malformed or unexpected byte sequence. Every case describes itself in one line.
public enum ProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// One-shot decoding of a fixed-size message was given the wrong number of bytes.
    case wrongLength(message: String, expected: Int, actual: Int)
    /// An enum variant index that the message does not have.
    case unknownTag(message: String, tag: UInt32)
    /// A `Hello` with a protocol version other than 1.
    case unsupportedVersion(UInt8)
    /// The u8 that precedes a UDP header is neither 12 (IPv4) nor 24 (IPv6).
    case udpHeaderLengthInvalid(UInt8)
    /// The u8 that precedes a UDP header does not match the size of the header's address family.
    case udpHeaderLengthMismatch(declared: UInt8, expected: Int)
    /// A socket address tag other than 0 (IPv4) or 1 (IPv6).
    case udpAddressTag(UInt32)
    /// A UDP payload length above 65507 bytes.
    case udpPayloadTooLarge(Int)
    /// A complete UDP datagram was expected but the declared payload runs past the data.
    case udpTruncated(declared: Int, available: Int)
    /// Bytes left over after a message that was expected to fill its input exactly.
    case trailingBytes(message: String, count: Int)
    /// A caller-provided output buffer is too small.
    case bufferTooSmall(needed: Int, available: Int)

    public var description: String {
        switch self {
        case let .wrongLength(message, expected, actual):
            return "\(message): expected \(expected) bytes, got \(actual)"
        case let .unknownTag(message, tag):
            return "\(message): unknown variant tag \(tag)"
        case let .unsupportedVersion(v):
            return "Hello: unsupported protocol version \(v) (this implementation speaks version \(Hello.protocolVersion))"
        case let .udpHeaderLengthInvalid(n):
            return "UDP frame: header length byte is \(n), expected 12 (IPv4) or 24 (IPv6)"
        case let .udpHeaderLengthMismatch(declared, expected):
            let family = expected == UdpHeader.ipv4Size ? "IPv4" : "IPv6"
            return "UDP frame: header length byte is \(declared) but an \(family) header is \(expected) bytes"
        case let .udpAddressTag(tag):
            return "UDP frame: unknown socket address tag \(tag) (expected 0 for IPv4 or 1 for IPv6)"
        case let .udpPayloadTooLarge(n):
            return "UDP frame: payload length \(n) exceeds the maximum UDP payload of \(UdpHeader.maxPayload) bytes"
        case let .udpTruncated(declared, available):
            return "UDP frame: declares \(declared) payload bytes but only \(available) are present"
        case let .trailingBytes(message, count):
            return "\(message): \(count) unexpected bytes after the message"
        case let .bufferTooSmall(needed, available):
            return "output buffer too small: need \(needed) bytes, have \(available)"
        }
    }
}
