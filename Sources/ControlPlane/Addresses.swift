import DataPlane

extension PeerAddress {
    /// The same address as the runtime's socket address type.
    var socketAddress: SocketAddress {
        // Both types print as `ip:port` / `[ip]:port`, which SocketAddress parses.
        SocketAddress(description)!
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
