// The rathole v1 wire protocol: value types and a pure encoder/decoder (no I/O, no Foundation).
//
// Everything is bincode 1.x "legacy" encoding: little-endian fixed-width integers, an enum is a u32
// variant index followed by its fields, a fixed-size byte array is written raw. See
// shared/wire/README.md for the message flow.

import CRatholeCrypto

// MARK: - Errors

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

// MARK: - Little-endian helpers

extension UnsafeRawBufferPointer {
    @inline(__always)
    fileprivate func u16LE(at offset: Int) -> UInt16 {
        UInt16(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    fileprivate func u32LE(at offset: Int) -> UInt32 {
        UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    fileprivate func storeU16LE(_ v: UInt16, at offset: Int) {
        storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inline(__always)
    fileprivate func storeU32LE(_ v: UInt32, at offset: Int) {
        storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
}

/// Runs `body` over the bytes of `c`, contiguously (copying only when `c` has no contiguous storage).
@inline(__always)
private func withContiguousBytes<C: Collection<UInt8>, R>(_ c: C, _ body: (UnsafeRawBufferPointer) -> R) -> R {
    if let r = c.withContiguousStorageIfAvailable({ body(UnsafeRawBufferPointer($0)) }) {
        return r
    }
    return Array(c).withUnsafeBytes(body)
}

// MARK: - Digest

/// 32 bytes: a SHA-256 output, a nonce, or a session key. Stored inline (no heap allocation).
public struct Digest: Hashable, Sendable, CustomStringConvertible {
    public static let size = 32

    private var storage: (UInt64, UInt64, UInt64, UInt64)

    /// All zero bytes.
    public static let zero = Digest(storage: (0, 0, 0, 0))

    private init(storage: (UInt64, UInt64, UInt64, UInt64)) {
        self.storage = storage
    }

    /// The digest made of exactly these 32 bytes; nil for any other count.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Digest.size else { return nil }
        var s: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &s) { $0.copyBytes(from: bytes) }
        self.storage = s
    }

    /// The digest whose bytes are `hex` (64 hex digits, either case); nil otherwise.
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 2 * Digest.size else { return nil }
        var bytes = [UInt8](repeating: 0, count: Digest.size)
        for i in 0..<Digest.size {
            guard let hi = hexValue(utf8[2 * i]), let lo = hexValue(utf8[2 * i + 1]) else { return nil }
            bytes[i] = hi << 4 | lo
        }
        self.init(bytes: bytes)
    }

    /// Copies 32 bytes from `raw` starting at `offset` (the caller checked the bounds).
    init(copying raw: UnsafeRawBufferPointer, at offset: Int) {
        var s: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &s) {
            $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[offset..<offset + Digest.size]))
        }
        self.storage = s
    }

    /// Calls `body` with the 32 bytes.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        var s = storage
        return try Swift.withUnsafeBytes(of: &s) { (raw) throws(E) -> R in try body(raw) }
    }

    /// The 32 bytes as an array.
    public var bytes: [UInt8] {
        withUnsafeBytes { Array($0) }
    }

    /// Lowercase hex, 64 characters.
    public var description: String {
        withUnsafeBytes { raw in
            var out = ""
            out.reserveCapacity(64)
            for b in raw {
                out.unicodeScalars.append(hexDigits[Int(b >> 4)])
                out.unicodeScalars.append(hexDigits[Int(b & 0xF)])
            }
            return out
        }
    }

    /// Equality in constant time (no early exit), since digests are compared against secrets.
    public static func == (a: Digest, b: Digest) -> Bool {
        let d = (a.storage.0 ^ b.storage.0) | (a.storage.1 ^ b.storage.1)
            | (a.storage.2 ^ b.storage.2) | (a.storage.3 ^ b.storage.3)
        return d == 0
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(storage.0)
        hasher.combine(storage.1)
        hasher.combine(storage.2)
        hasher.combine(storage.3)
    }

    /// SHA-256 of raw bytes.
    public static func sha256(_ raw: UnsafeRawBufferPointer) -> Digest {
        var s: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        Swift.withUnsafeMutableBytes(of: &s) { out in
            _ = SHA256(raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count,
                       out.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return Digest(storage: s)
    }

    /// SHA-256 of a byte collection.
    public static func sha256(_ bytes: some Collection<UInt8>) -> Digest {
        withContiguousBytes(bytes) { sha256($0) }
    }

    /// The digest that names a service on the wire: sha256(service name as UTF-8).
    public static func service(named name: String) -> Digest {
        sha256(Array(name.utf8))
    }

    /// What a client proves it knows the token with: sha256(token bytes || 32 nonce bytes). The same
    /// value is the session key that the client's data channels present.
    public static func auth(token: some Collection<UInt8>, nonce: Digest) -> Digest {
        var buf: [UInt8] = []
        buf.reserveCapacity(token.count + Digest.size)
        buf.append(contentsOf: token)
        nonce.withUnsafeBytes { buf.append(contentsOf: $0) }
        return sha256(buf)
    }

    /// `auth(token:nonce:)` with the token's UTF-8 bytes.
    public static func auth(token: String, nonce: Digest) -> Digest {
        auth(token: Array(token.utf8), nonce: nonce)
    }

    /// 32 cryptographically secure random bytes (the server's nonce).
    public static func random() -> Digest {
        var s: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        Swift.withUnsafeMutableBytes(of: &s) { fillSecureRandom($0) }
        return Digest(storage: s)
    }
}

private let hexDigits: [Unicode.Scalar] = Array("0123456789abcdef".unicodeScalars)

@inline(__always)
private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}

// MARK: - Fixed-size messages

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

// MARK: - Addresses

/// An IPv4 address; `value` is the numeric address (a.b.c.d == a << 24 | b << 16 | c << 8 | d).
public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
    public var value: UInt32

    public init(value: UInt32) {
        self.value = value
    }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    public static let any = IPv4Address(value: 0)
    public static let loopback = IPv4Address(127, 0, 0, 1)

    /// Dotted decimal, exactly four octets, no leading zeros (as Rust's `Ipv4Addr` parses).
    public init?(_ text: some StringProtocol) {
        guard let v = IPv4Address.parseNumeric(Array(text.utf8)[...]) else { return nil }
        value = v
    }

    /// The four bytes in network order.
    public var octets: (UInt8, UInt8, UInt8, UInt8) {
        (UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16),
         UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value))
    }

    /// The numeric value as stored in `in_addr.s_addr` (network byte order).
    public var networkOrder: UInt32 { value.bigEndian }

    public var description: String {
        let o = octets
        return "\(o.0).\(o.1).\(o.2).\(o.3)"
    }
}

/// An IPv6 address; `high` holds bytes 0-7 and `low` bytes 8-15, most significant first.
public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public static let any = IPv6Address(high: 0, low: 0)
    public static let loopback = IPv6Address(high: 0, low: 1)

    /// From exactly 16 bytes in network order.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var h: UInt64 = 0
        var l: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt64(b) }
        }
        high = h
        low = l
    }

    /// From eight 16-bit groups.
    public init(groups: [UInt16]) {
        precondition(groups.count == 8)
        var h: UInt64 = 0
        var l: UInt64 = 0
        for i in 0..<4 { h = h << 16 | UInt64(groups[i]) }
        for i in 4..<8 { l = l << 16 | UInt64(groups[i]) }
        high = h
        low = l
    }

    /// Textual IPv6 (RFC 4291 forms, with `::` and an optional trailing dotted IPv4), without brackets
    /// or zone.
    public init?(_ text: some StringProtocol) {
        guard let g = IPv6Address.parseGroups(Array(text.utf8)) else { return nil }
        self.init(groups: g)
    }

    /// The eight 16-bit groups.
    public var groups: [UInt16] {
        (0..<4).map { UInt16(truncatingIfNeeded: high >> (48 - 16 * UInt64($0))) }
            + (0..<4).map { UInt16(truncatingIfNeeded: low >> (48 - 16 * UInt64($0))) }
    }

    /// Calls `body` with the 16 bytes in network order.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        var be = (high.bigEndian, low.bigEndian)
        return try Swift.withUnsafeBytes(of: &be) { (raw) throws(E) -> R in try body(raw) }
    }

    /// The 16 bytes in network order.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// If this is an IPv4-mapped address (::ffff:a.b.c.d), the IPv4 address.
    public var ipv4Mapped: IPv4Address? {
        guard high == 0, low >> 32 == 0xFFFF else { return nil }
        return IPv4Address(value: UInt32(truncatingIfNeeded: low))
    }

    /// RFC 5952 text: lowercase, longest run of two or more zero groups as `::`.
    public var description: String {
        if let v4 = ipv4Mapped { return "::ffff:\(v4)" }
        let g = groups
        var bestStart = -1
        var bestLen = 0
        var i = 0
        while i < 8 {
            if g[i] == 0 {
                var j = i
                while j < 8 && g[j] == 0 { j += 1 }
                if j - i > bestLen { bestStart = i; bestLen = j - i }
                i = j
            } else {
                i += 1
            }
        }
        if bestLen < 2 { bestStart = -1 }
        var out = ""
        i = 0
        while i < 8 {
            if i == bestStart {
                out += "::"
                i += bestLen
                continue
            }
            if !out.isEmpty && !out.hasSuffix(":") { out += ":" }
            out += String(g[i], radix: 16)
            i += 1
        }
        return out
    }
}

/// A socket address as rathole puts it on the wire (Rust's `SocketAddr`).
public enum PeerAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Address, port: UInt16)
    case v6(IPv6Address, port: UInt16)

    public var port: UInt16 {
        switch self {
        case let .v4(_, port), let .v6(_, port): return port
        }
    }

    public var isIPv6: Bool {
        if case .v6 = self { return true }
        return false
    }

    /// `a.b.c.d:port` or `[v6]:port`, as Rust's `SocketAddr` parses (port 0-65535).
    public init?(_ text: some StringProtocol) {
        let b = Array(text.utf8)
        if b.first == UInt8(ascii: "[") {
            guard let close = b.firstIndex(of: UInt8(ascii: "]")),
                  close + 1 < b.count, b[close + 1] == UInt8(ascii: ":"),
                  let g = IPv6Address.parseGroups(Array(b[1..<close])),
                  let port = PeerAddress.parsePort(b[(close + 2)...])
            else { return nil }
            self = .v6(IPv6Address(groups: g), port: port)
        } else {
            guard let colon = b.lastIndex(of: UInt8(ascii: ":")),
                  let v = IPv4Address.parseNumeric(b[..<colon]),
                  let port = PeerAddress.parsePort(b[(colon + 1)...])
            else { return nil }
            self = .v4(IPv4Address(value: v), port: port)
        }
    }

    public var description: String {
        switch self {
        case let .v4(a, port): return "\(a):\(port)"
        case let .v6(a, port): return "[\(a)]:\(port)"
        }
    }
}

extension PeerAddress {
    /// Decimal port 0-65535 (1-5 digits).
    static func parsePort(_ b: ArraySlice<UInt8>) -> UInt16? {
        guard !b.isEmpty, b.count <= 5 else { return nil }
        var v: UInt32 = 0
        for c in b {
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            v = v * 10 + UInt32(c - UInt8(ascii: "0"))
        }
        return v <= 65535 ? UInt16(v) : nil
    }
}

extension IPv4Address {
    /// Dotted decimal to the numeric address.
    static func parseNumeric(_ b: ArraySlice<UInt8>) -> UInt32? {
        var value: UInt32 = 0
        var octets = 0
        var digits = 0
        var cur: UInt32 = 0
        var leadingZero = false
        for c in b {
            if c == UInt8(ascii: ".") {
                guard digits > 0, octets < 3 else { return nil }
                value = value << 8 | cur
                octets += 1
                digits = 0
                cur = 0
            } else if c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") {
                if digits == 0 { leadingZero = c == UInt8(ascii: "0") } else if leadingZero { return nil }
                digits += 1
                cur = cur * 10 + UInt32(c - UInt8(ascii: "0"))
                guard digits <= 3, cur <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard digits > 0, octets == 3 else { return nil }
        return value << 8 | cur
    }
}

extension IPv6Address {
    /// Parses colon-separated hex groups; the last may be a dotted IPv4 address when `allowV4`.
    private static func parseGroupList(_ b: ArraySlice<UInt8>, allowV4: Bool) -> [UInt16]? {
        var groups: [UInt16] = []
        let parts = b.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        for (i, part) in parts.enumerated() {
            guard !part.isEmpty else { return nil }
            if allowV4, i == parts.count - 1, part.contains(UInt8(ascii: ".")) {
                guard let v4 = IPv4Address.parseNumeric(part) else { return nil }
                groups.append(UInt16(v4 >> 16))
                groups.append(UInt16(truncatingIfNeeded: v4))
                continue
            }
            guard part.count <= 4 else { return nil }
            var v: UInt16 = 0
            for c in part {
                guard let h = hexValue(c) else { return nil }
                v = v << 4 | UInt16(h)
            }
            groups.append(v)
        }
        return groups
    }

    /// Textual IPv6 to its eight groups.
    static func parseGroups(_ b: [UInt8]) -> [UInt16]? {
        guard b.count >= 2 else { return nil }
        var gap: Int? = nil
        var i = 0
        while i + 1 < b.count {
            if b[i] == UInt8(ascii: ":") && b[i + 1] == UInt8(ascii: ":") {
                guard gap == nil else { return nil }
                gap = i
                i += 2
            } else {
                i += 1
            }
        }
        if let gap {
            let head = b[..<gap]
            let tail = b[(gap + 2)...]
            guard let h = head.isEmpty ? [] : parseGroupList(head, allowV4: false),
                  let t = tail.isEmpty ? [] : parseGroupList(tail, allowV4: true),
                  h.count + t.count <= 7
            else { return nil }
            return h + [UInt16](repeating: 0, count: 8 - h.count - t.count) + t
        }
        guard let g = parseGroupList(b[...], allowV4: true), g.count == 8 else { return nil }
        return g
    }
}

// MARK: - UDP framing

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

// MARK: - Incremental decoding

/// Buffers a byte stream that arrives in arbitrary chunks and cuts messages off its front. Which message
/// comes next is the caller's decision (it follows the protocol state). Amortised O(1) per byte.
public struct WireDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0

    public init() {}

    /// Bytes received and not yet consumed.
    public var bufferedCount: Int { buffer.count - start }

    public var isEmpty: Bool { bufferedCount == 0 }

    /// Appends received bytes.
    public mutating func feed(_ raw: UnsafeRawBufferPointer) {
        compact()
        buffer.append(contentsOf: raw)
    }

    /// Appends received bytes.
    public mutating func feed(_ bytes: some Sequence<UInt8>) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    /// Drops consumed bytes from the front when that is cheap relative to what was consumed.
    private mutating func compact() {
        if start == 0 { return }
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 4096 && start * 2 >= buffer.count {
            buffer.removeSubrange(0..<start)
            start = 0
        }
    }

    /// The next message of type `M`, or nil if fewer than `M.size` bytes are buffered. On error nothing
    /// is consumed.
    public mutating func next<M: WireMessage>(_ type: M.Type = M.self) throws(ProtocolError) -> M? {
        guard bufferedCount >= M.size else { return nil }
        let s = start
        let r: Result<M, ProtocolError> = buffer.withUnsafeBytes { raw in
            Result { () throws(ProtocolError) -> M in
                try M(decodingPrefixOf: UnsafeRawBufferPointer(rebasing: raw[s..<s + M.size]))
            }
        }
        let m = try r.get()
        start += M.size
        return m
    }

    /// Calls `body` with the next complete UDP frame's header and payload (valid only during the call),
    /// consumes the frame and returns what `body` returned; nil if no complete frame is buffered yet.
    public mutating func nextUdpFrame<R>(_ body: (UdpHeader, UnsafeRawBufferPointer) -> R) throws(ProtocolError) -> R? {
        let s = start
        let r: Result<(R, Int)?, ProtocolError> = buffer.withUnsafeBytes { all in
            let raw = UnsafeRawBufferPointer(rebasing: all[s...])
            return Result { () throws(ProtocolError) -> (R, Int)? in
                guard let (header, size) = try UdpFrame.parse(raw) else { return nil }
                let payload = UnsafeRawBufferPointer(rebasing: raw[header.prefixSize..<size])
                return (body(header, payload), size)
            }
        }
        guard let (value, size) = try r.get() else { return nil }
        start += size
        return value
    }

    /// The next complete UDP frame, or nil if none is buffered yet.
    public mutating func nextUdpFrame() throws(ProtocolError) -> UdpFrame? {
        try nextUdpFrame { header, payload in UdpFrame(from: header.from, payload: Array(payload)) }
    }

    /// Calls `body` with the buffered, unconsumed bytes.
    public func withBufferedBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let s = start
        return try buffer.withUnsafeBytes { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw[s...]))
        }
    }

    /// Removes and returns everything buffered (e.g. payload that arrived with the last handshake
    /// message, to be forwarded before the relay starts).
    public mutating func takeBuffered() -> [UInt8] {
        let rest = Array(buffer[start...])
        buffer.removeAll(keepingCapacity: false)
        start = 0
        return rest
    }

    /// Discards `count` buffered bytes.
    public mutating func skip(_ count: Int) {
        precondition(count >= 0 && count <= bufferedCount)
        start += count
    }
}
