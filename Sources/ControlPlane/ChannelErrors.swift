import DataPlane

/// Why a transport could not make or take a connection. Each layer's own error is kept, typed.
/// `indirect`, like the two below: boxed, an error is one word in every async frame that may hold
/// one; inline, the nested payloads made the data channel's task contexts 1.5-1.8 KB each.
indirect enum TransportError: Error, CustomStringConvertible {
    /// Connecting the socket failed.
    case connect(IOError)
    /// The proxy could not give us a connection to the server.
    case proxy(ProxyConfig, ProxyFailure)
    /// An encrypted session could not be made (`layer`: "tls", "noise").
    case setup(layer: String, any Error & Sendable)
    /// An encrypted session's handshake failed.
    case handshake(layer: String, IOError)
    /// The websocket upgrade failed.
    case websocket(WebSocketUpgradeFailure)

    var description: String {
        switch self {
        case .connect(let e): return e.description
        case .proxy(let proxy, let failure): return "proxy \(proxy): \(failure)"
        case .setup(let layer, let e): return "\(layer): \(e)"
        case .handshake(let layer, let e): return "\(layer) handshake: \(e)"
        case .websocket(let failure): return "websocket handshake: \(failure)"
        }
    }
}

/// Why a control or data channel ended or was refused.
indirect enum ControlError: Error, CustomStringConvertible {
    case io(IOError)
    case protocolViolation(ProtocolError)
    case transport(TransportError)
    case refused(Refusal)

    var description: String {
        switch self {
        case .io(let e): return e.description
        case .protocolViolation(let e): return "protocol violation: \(e)"
        case .transport(let e): return e.description
        case .refused(let why): return why.description
        }
    }
}

/// A handshake or session that one side refused, and why (said as the log line says it).
indirect enum Refusal: CustomStringConvertible {
    /// Server: a control channel for a service it does not have.
    case unknownService(Digest)
    /// Server: the client's Auth did not match the service's token.
    case wrongToken(service: String)
    /// Client: the server's Ack said ServiceNotExist.
    case serverDoesNotKnowService
    /// Client: the server's Ack said AuthFailed.
    case serverRefusedToken(service: String)
    /// Client: the server answered the control Hello with a data channel Hello.
    case dataChannelHelloFromServer
    /// Client: the server's name does not resolve.
    case unresolvedServer(HostPort, IOError)
    /// Client: the server cannot be reached.
    case unreachableServer(HostPort, TransportError)
    /// Client: no heartbeat within heartbeat_timeout.
    case noHeartbeat(seconds: UInt64)
    /// Client: the server closed the control channel.
    case closedByServer

    var description: String {
        switch self {
        case .unknownService(let digest): return "control channel for an unknown service (digest \(digest)) refused"
        case .wrongToken(let service): return "service \(service): wrong token; control channel refused"
        case .serverDoesNotKnowService: return "the server does not know this service (check its name in the server's config)"
        case .serverRefusedToken(let service): return "the server refused the token (check client.services.\(service).token)"
        case .dataChannelHelloFromServer: return "server answered with a data channel hello"
        case .unresolvedServer(let server, let e): return "cannot resolve client.remote_addr \(server): \(e)"
        case .unreachableServer(let server, let e): return "cannot connect to server \(server): \(e)"
        case .noHeartbeat(let seconds): return "no heartbeat from the server for \(seconds)s; reconnecting"
        case .closedByServer: return "the server closed the control channel"
        }
    }
}
