// The rathole v1 wire protocol: value types and a pure encoder/decoder (no I/O, no Foundation).
//
// Everything is bincode 1.x "legacy" encoding: little-endian fixed-width integers, an enum is a u32
// variant index followed by its fields, a fixed-size byte array is written raw. See
// shared/wire/README.md for the message flow.

/// A fixed-size protocol message.
public protocol WireMessage: Sendable {
    /// Encoded size in bytes.
    static var size: Int { get }
    /// Decodes from the first `size` bytes of `raw` (more may follow); throws `wrongLength` if `raw`
    /// is shorter than `size`.
    init(decodingPrefixOf raw: UnsafeRawBufferPointer) throws(ProtocolError)
    /// Writes exactly `size` bytes at the start of `buffer` (which must hold at least `size` bytes).
    func encode(into buffer: UnsafeMutableRawBufferPointer)
}

extension WireMessage {
    /// Decodes a message from exactly `Self.size` bytes.
    public init(decoding bytes: some Collection<UInt8>) throws(ProtocolError) {
        let result: Result<Self, ProtocolError> = withContiguousBytes(bytes) { raw in
            guard raw.count == Self.size else {
                return .failure(.wrongLength(message: "\(Self.self)", expected: Self.size, actual: raw.count))
            }
            return Result { () throws(ProtocolError) -> Self in try Self(decodingPrefixOf: raw) }
        }
        self = try result.get()
    }

    /// The encoded bytes.
    public func encode() -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Self.size) { buf, n in
            encode(into: UnsafeMutableRawBufferPointer(buf))
            n = Self.size
        }
    }

    /// Appends the encoded bytes to `out`.
    public func encode(appendingTo out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: Self.size))
        out.withUnsafeMutableBytes { raw in
            encode(into: UnsafeMutableRawBufferPointer(rebasing: raw[start...]))
        }
    }

    @inline(__always)
    static func checkLength(_ raw: UnsafeRawBufferPointer) throws(ProtocolError) {
        guard raw.count >= size else {
            throw .wrongLength(message: "\(Self.self)", expected: size, actual: raw.count)
        }
    }
}

/// The first message on every connection: u32 tag, u8 version, 32-byte digest.
public enum Hello: Hashable, Sendable, WireMessage, CustomStringConvertible {
    /// Client: sha256(service name). Server: the 32-byte nonce.
    case controlChannel(Digest)
    /// Client on a data channel: the session key (the digest it sent as Auth).
    case dataChannel(Digest)

    public static let size = 37
    /// The only protocol version rathole speaks.
    public static let protocolVersion: UInt8 = 1

    public var digest: Digest {
        switch self {
        case let .controlChannel(d), let .dataChannel(d): return d
        }
    }

    public init(decodingPrefixOf raw: UnsafeRawBufferPointer) throws(ProtocolError) {
        try Self.checkLength(raw)
        let tag = raw.u32LE(at: 0)
        guard tag <= 1 else { throw .unknownTag(message: "Hello", tag: tag) }
        let version = raw[4]
        guard version == Hello.protocolVersion else { throw .unsupportedVersion(version) }
        let d = Digest(copying: raw, at: 5)
        self = tag == 0 ? .controlChannel(d) : .dataChannel(d)
    }

    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.size)
        switch self {
        case .controlChannel: buffer.storeU32LE(0, at: 0)
        case .dataChannel: buffer.storeU32LE(1, at: 0)
        }
        buffer[4] = Hello.protocolVersion
        digest.withUnsafeBytes { d in
            UnsafeMutableRawBufferPointer(rebasing: buffer[5..<Self.size]).copyMemory(from: d)
        }
    }

    public var description: String {
        switch self {
        case let .controlChannel(d): return "ControlChannelHello(\(d))"
        case let .dataChannel(d): return "DataChannelHello(\(d))"
        }
    }
}

/// The client's answer to the server's nonce: sha256(token || nonce).
public struct Auth: Hashable, Sendable, WireMessage, CustomStringConvertible {
    public static let size = 32
    public var digest: Digest

    public init(_ digest: Digest) {
        self.digest = digest
    }

    public init(decodingPrefixOf raw: UnsafeRawBufferPointer) throws(ProtocolError) {
        try Self.checkLength(raw)
        digest = Digest(copying: raw, at: 0)
    }

    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.size)
        digest.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Self.size]).copyMemory(from: $0) }
    }

    public var description: String { "Auth(\(digest))" }
}

/// A message that is just a u32 variant index.
public protocol WireTagMessage: WireMessage, RawRepresentable where RawValue == UInt32 {}

extension WireTagMessage {
    public static var size: Int { 4 }

    public init(decodingPrefixOf raw: UnsafeRawBufferPointer) throws(ProtocolError) {
        try Self.checkLength(raw)
        let tag = raw.u32LE(at: 0)
        guard let v = Self(rawValue: tag) else { throw .unknownTag(message: "\(Self.self)", tag: tag) }
        self = v
    }

    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= 4)
        buffer.storeU32LE(rawValue, at: 0)
    }
}

/// The server's verdict on a control channel handshake.
public enum Ack: UInt32, Sendable, WireTagMessage, CustomStringConvertible {
    case ok = 0
    case serviceNotExist = 1
    case authFailed = 2

    public var description: String {
        switch self {
        case .ok: return "Ok"
        case .serviceNotExist: return "Service not exist"
        case .authFailed: return "Incorrect token"
        }
    }
}

/// What the server sends on an established control channel.
public enum ControlChannelCmd: UInt32, Sendable, WireTagMessage, CustomStringConvertible {
    case createDataChannel = 0
    case heartBeat = 1

    public var description: String {
        switch self {
        case .createDataChannel: return "CreateDataChannel"
        case .heartBeat: return "HeartBeat"
        }
    }
}

/// What the server sends on a pooled data channel when it starts using it.
public enum DataChannelCmd: UInt32, Sendable, WireTagMessage, CustomStringConvertible {
    case startForwardTcp = 0
    case startForwardUdp = 1

    public var description: String {
        switch self {
        case .startForwardTcp: return "StartForwardTcp"
        case .startForwardUdp: return "StartForwardUdp"
        }
    }
}
