// `host:port` as the config writes it: the one parser of addresses.

struct HostPortParseError: Error {
    var message: String
}

func isHostNameByte(_ b: UInt8) -> Bool {
    (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x2E
        || b == 0x5F
}

extension HostPort {
    /// `host:port` (`[v6]:port`, `a.b.c.d:port` or `name:port`) with a port from 1 to 65535.
    public init?(_ text: some StringProtocol) {
        guard case let .success(hp) = HostPort.parse(String(text), ipOnly: false) else { return nil }
        self = hp
    }

    /// Parses `host:port`: `[v6]:port`, `a.b.c.d:port` or `name:port`, with a port from 1 to 65535. With
    /// `ipOnly`, names are rejected. `defaultPort` is used when the port is absent (nil: the port is required).
    static func parse(_ text: String, ipOnly: Bool, defaultPort: UInt16? = nil) -> Result<HostPort, HostPortParseError> {
        let b = Array(text.utf8)
        let example = ipOnly ? "0.0.0.0:2333 or [::]:2333" : "example.com:2333, 127.0.0.1:2333 or [::1]:2333"
        func fail(_ why: String) -> Result<HostPort, HostPortParseError> {
            .failure(HostPortParseError(message: "\"\(text)\": \(why)"))
        }
        var hostBytes: ArraySlice<UInt8>
        var portBytes: ArraySlice<UInt8>?
        var bracketed = false
        if b.first == UInt8(ascii: "[") {
            guard let close = b.firstIndex(of: UInt8(ascii: "]")) else { return fail("unclosed '[' in an IPv6 address") }
            hostBytes = b[1..<close]
            bracketed = true
            let rest = b[(close + 1)...]
            if rest.isEmpty {
                portBytes = nil
            } else {
                guard rest.first == UInt8(ascii: ":") else { return fail("expected ':' and a port after ']'") }
                portBytes = rest.dropFirst()
            }
        } else if let colon = b.lastIndex(of: UInt8(ascii: ":")) {
            hostBytes = b[..<colon]
            portBytes = b[(colon + 1)...]
            if hostBytes.contains(UInt8(ascii: ":")) {
                return fail("an IPv6 address must be in brackets, e.g. [::1]:2333")
            }
        } else {
            hostBytes = b[...]
            portBytes = nil
        }
        let port: UInt16
        if let portBytes {
            guard let p = PeerAddress.parsePort(portBytes), p != 0 else { return fail("the port must be a number from 1 to 65535") }
            port = p
        } else if let defaultPort {
            port = defaultPort
        } else {
            return fail("the port is missing (expected host:port, e.g. \(example))")
        }
        guard !hostBytes.isEmpty else { return fail("the host is missing (expected host:port, e.g. \(example))") }
        let host: HostPort.Host
        if bracketed {
            guard let g = IPv6Address.parseGroups(Array(hostBytes)) else { return fail("invalid IPv6 address") }
            host = .ipv6(IPv6Address(groups: g))
        } else if let v4 = IPv4Address.parseNumeric(hostBytes) {
            host = .ipv4(IPv4Address(value: v4))
        } else if hostBytes.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E }) {
            return fail("invalid IPv4 address")
        } else {
            if ipOnly { return fail("must be an IP address and a port, e.g. \(example)") }
            guard hostBytes.count <= 253, hostBytes.allSatisfy(isHostNameByte) else { return fail("invalid host name") }
            host = .name(String(decoding: hostBytes, as: UTF8.self))
        }
        return .success(HostPort(host: host, port: port))
    }
}
