import DataPlane

/// The transport a server's `[server.transport]` asks for.
func makeServerTransport(_ config: TransportConfig) throws(StartError) -> any Transport {
    switch config.type {
    case .tcp: return TCPTransport(options: config.tcp)
    default: throw unsupported(config.type, section: "server.transport.type")
    }
}

/// The transport a client's `[client.transport]` asks for.
func makeClientTransport(_ config: TransportConfig, remote: HostPort) throws(StartError) -> any Transport {
    switch config.type {
    case .tcp: return TCPTransport(options: config.tcp)
    default: throw unsupported(config.type, section: "client.transport.type")
    }
}

private func unsupported(_ type: TransportType, section: String) -> StartError {
    StartError("\(section) = \"\(type)\": this build has no \(type) transport")
}
