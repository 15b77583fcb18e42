import DataPlane
import Noise

/// The transport a server's `[server.transport]` asks for.
func makeServerTransport(_ config: TransportConfig) throws(StartError) -> any Transport {
    let tcp = TCPTransport(options: config.tcp)
    switch config.type {
    case .tcp: return tcp
    case .tls: return try TLSTransport.server(config)
    case .noise: return try NoiseTransport(config, role: .responder, section: "server.transport", tcp: tcp)
    case .websocket: return try WebSocketTransport.server(config)
    }
}

/// The transport a client's `[client.transport]` asks for.
func makeClientTransport(_ config: TransportConfig, remote: HostPort) throws(StartError) -> any Transport {
    let tcp = TCPTransport(options: config.tcp)
    switch config.type {
    case .tcp: return tcp
    case .tls: return try TLSTransport.client(config, hostname: config.tls?.hostname ?? remote.hostString, tcp: tcp)
    case .noise: return try NoiseTransport(config, role: .initiator, section: "client.transport", tcp: tcp)
    case .websocket: return try WebSocketTransport.client(config, remote: remote, tcp: tcp)
    }
}
