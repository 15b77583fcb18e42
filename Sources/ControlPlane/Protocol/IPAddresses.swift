// IP addresses and socket addresses as rathole puts them on the wire (Rust's std::net types).

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
        (
            UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16),
            UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)
        )
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
                if j - i > bestLen {
                    bestStart = i
                    bestLen = j - i
                }
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
