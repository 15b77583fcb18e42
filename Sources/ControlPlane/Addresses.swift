import DataPlane

extension PeerAddress {
    /// The wire address of a socket address (UDP frames carry visitors' addresses).
    init(_ address: SocketAddress) {
        if let v4 = address.ipv4Value {
            self = .v4(IPv4Address(value: v4), port: address.port)
        } else {
            let (high, low) = address.ipv6Halves!
            self = .v6(IPv6Address(high: high, low: low), port: address.port)
        }
    }

    /// The same address as the runtime's socket address type.
    public var socketAddress: SocketAddress {
        switch self {
        case let .v4(a, port): return SocketAddress(ipv4: a.value, port: port)
        case let .v6(a, port): return SocketAddress(ipv6: a.high, a.low, port: port)
        }
    }
}

extension HostPort {
    /// Resolves the host (names through getaddrinfo, off the ring), preferring the family asked for.
    func resolve(preferIPv6: Bool) async throws(IOError) -> SocketAddress {
        if let literal = literalAddress { return literal.socketAddress }
        let all = try await SocketAddress.resolve(host: hostString, port: port)
        return all.first { $0.isIPv6 == preferIPv6 } ?? all[0]
    }
}
