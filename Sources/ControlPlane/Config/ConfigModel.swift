// rathole's TOML configuration: every key of upstream rathole, with its defaults, validated into
// value types that hot reload can compare per service.

import DataPlane

/// A secret (token, password, private key). Prints as `MASKED`, as upstream does; use `value` for the
/// actual string.
public struct MaskedString: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable, ExpressibleByStringLiteral
{
    public var value: String

    public init(_ value: String) {
        self.value = value
    }

    public init(stringLiteral value: String) {
        self.value = value
    }

    public var description: String { "MASKED" }
    public var debugDescription: String { "MASKED" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// Which side of the tunnel to run.
public enum Mode: String, Sendable, Equatable, CustomStringConvertible {
    case server
    case client

    public var description: String { rawValue }
}

public enum ServiceType: String, Sendable, Equatable, CustomStringConvertible {
    case tcp
    case udp

    public var description: String { rawValue }
}

public enum TransportType: String, Sendable, Equatable, CustomStringConvertible {
    case tcp
    case tls
    case noise
    case websocket

    public var description: String { rawValue }
}

/// `host:port` where the host may be a name or an IP literal (IPv6 in brackets).
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public enum Host: Hashable, Sendable, CustomStringConvertible {
        case ipv4(IPv4Address)
        case ipv6(IPv6Address)
        case name(String)

        /// The host as text, without brackets (for DNS lookups and TLS server names).
        public var description: String {
            switch self {
            case let .ipv4(a): return a.description
            case let .ipv6(a): return a.description
            case let .name(n): return n
            }
        }
    }

    public var host: Host
    public var port: UInt16

    public init(host: Host, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// The socket address when the host is an IP literal (no resolution needed), else nil.
    public var literalAddress: PeerAddress? {
        switch host {
        case let .ipv4(a): return .v4(a, port: port)
        case let .ipv6(a): return .v6(a, port: port)
        case .name: return nil
        }
    }

    /// The host part as text, without brackets.
    public var hostString: String { host.description }

    public var description: String {
        if case .ipv6 = host { return "[\(host)]:\(port)" }
        return "\(host):\(port)"
    }
}

public struct Config: Equatable, Sendable {
    /// The file the configuration came from (as given to `load` or `parse`), for messages.
    public var file: String
    public var server: ServerConfig?
    public var client: ClientConfig?

    public init(file: String, server: ServerConfig?, client: ClientConfig?) {
        self.file = file
        self.server = server
        self.client = client
    }
}

public struct ServerConfig: Equatable, Sendable {
    public var bindAddr: PeerAddress
    public var defaultToken: MaskedString?
    /// Seconds of control channel idleness before a heartbeat is sent; 0 disables heartbeats.
    public var heartbeatInterval: UInt64
    public var transport: TransportConfig
    /// By service name.
    public var services: [String: ServerServiceConfig]
    public var api: ApiConfig?

    public static let defaultHeartbeatInterval: UInt64 = 30

    public init(
        bindAddr: PeerAddress, defaultToken: MaskedString? = nil,
        heartbeatInterval: UInt64 = ServerConfig.defaultHeartbeatInterval,
        transport: TransportConfig = TransportConfig(), services: [String: ServerServiceConfig] = [:],
        api: ApiConfig? = nil
    ) {
        self.bindAddr = bindAddr
        self.defaultToken = defaultToken
        self.heartbeatInterval = heartbeatInterval
        self.transport = transport
        self.services = services
        self.api = api
    }
}

public struct ServerServiceConfig: Equatable, Sendable {
    public var name: String
    public var type: ServiceType
    public var bindAddr: PeerAddress
    /// Effective token: the service's `token`, else the server's `default_token`.
    public var token: MaskedString
    /// Effective TCP_NODELAY: the service's `nodelay`, else `server.transport.tcp.nodelay`.
    public var nodelay: Bool

    public init(name: String, type: ServiceType, bindAddr: PeerAddress, token: MaskedString, nodelay: Bool) {
        self.name = name
        self.type = type
        self.bindAddr = bindAddr
        self.token = token
        self.nodelay = nodelay
    }

    /// The digest a client names this service with: sha256(name).
    public var digest: Digest { Digest.service(named: name) }
}

public struct ClientConfig: Equatable, Sendable {
    public var remoteAddr: HostPort
    public var defaultToken: MaskedString?
    /// Seconds without anything received on a control channel before reconnecting; 0 disables.
    public var heartbeatTimeout: UInt64
    /// Seconds; the cap of the reconnect backoff.
    public var retryInterval: UInt64
    public var preferIPv6: Bool
    public var transport: TransportConfig
    /// By service name.
    public var services: [String: ClientServiceConfig]
    public var api: ApiConfig?

    public static let defaultHeartbeatTimeout: UInt64 = 40
    public static let defaultRetryInterval: UInt64 = 1

    public init(
        remoteAddr: HostPort, defaultToken: MaskedString? = nil,
        heartbeatTimeout: UInt64 = ClientConfig.defaultHeartbeatTimeout,
        retryInterval: UInt64 = ClientConfig.defaultRetryInterval, preferIPv6: Bool = false,
        transport: TransportConfig = TransportConfig(), services: [String: ClientServiceConfig] = [:],
        api: ApiConfig? = nil
    ) {
        self.remoteAddr = remoteAddr
        self.defaultToken = defaultToken
        self.heartbeatTimeout = heartbeatTimeout
        self.retryInterval = retryInterval
        self.preferIPv6 = preferIPv6
        self.transport = transport
        self.services = services
        self.api = api
    }

    /// The name a TLS client checks the server against: `transport.tls.hostname`, else the host of
    /// `remote_addr`.
    public var tlsHostname: String {
        transport.tls?.hostname ?? remoteAddr.hostString
    }
}

public struct ClientServiceConfig: Equatable, Sendable {
    public var name: String
    public var type: ServiceType
    public var localAddr: HostPort
    /// Effective token: the service's `token`, else the client's `default_token`.
    public var token: MaskedString
    /// Effective TCP_NODELAY: the service's `nodelay`, else `client.transport.tcp.nodelay`.
    public var nodelay: Bool
    /// Effective retry interval in seconds: the service's, else the client's.
    public var retryInterval: UInt64
    /// Effective: the service's `prefer_ipv6`, else the client's, else false.
    public var preferIPv6: Bool

    public init(
        name: String, type: ServiceType, localAddr: HostPort, token: MaskedString, nodelay: Bool,
        retryInterval: UInt64, preferIPv6: Bool
    ) {
        self.name = name
        self.type = type
        self.localAddr = localAddr
        self.token = token
        self.nodelay = nodelay
        self.retryInterval = retryInterval
        self.preferIPv6 = preferIPv6
    }

    /// The digest that names this service on the wire: sha256(name).
    public var digest: Digest { Digest.service(named: name) }
}

public struct TransportConfig: Equatable, Sendable {
    public var type: TransportType
    public var tcp: TcpConfig
    public var tls: TlsConfig?
    public var noise: NoiseConfig?
    public var websocket: WebsocketConfig?

    public init(
        type: TransportType = .tcp, tcp: TcpConfig = TcpConfig(), tls: TlsConfig? = nil,
        noise: NoiseConfig? = nil, websocket: WebsocketConfig? = nil
    ) {
        self.type = type
        self.tcp = tcp
        self.tls = tls
        self.noise = noise
        self.websocket = websocket
    }
}

public struct TcpConfig: Equatable, Sendable {
    public var nodelay: Bool
    /// TCP keepalive idle time in seconds.
    public var keepaliveSecs: UInt64
    /// TCP keepalive probe interval in seconds.
    public var keepaliveInterval: UInt64
    public var proxy: ProxyConfig?

    public static let defaultNodelay = true
    public static let defaultKeepaliveSecs: UInt64 = 20
    public static let defaultKeepaliveInterval: UInt64 = 8

    public init(
        nodelay: Bool = TcpConfig.defaultNodelay, keepaliveSecs: UInt64 = TcpConfig.defaultKeepaliveSecs,
        keepaliveInterval: UInt64 = TcpConfig.defaultKeepaliveInterval, proxy: ProxyConfig? = nil
    ) {
        self.nodelay = nodelay
        self.keepaliveSecs = keepaliveSecs
        self.keepaliveInterval = keepaliveInterval
        self.proxy = proxy
    }
}

/// `transport.tcp.proxy`, e.g. `socks5://user:pass@127.0.0.1:1080` or `http://proxy:3128`.
public struct ProxyConfig: Equatable, Sendable, CustomStringConvertible {
    public enum Scheme: String, Sendable, Equatable {
        case socks5
        case http
    }

    public var scheme: Scheme
    /// Percent-decoded.
    public var username: String?
    /// Percent-decoded.
    public var password: MaskedString?
    public var address: HostPort

    public init(scheme: Scheme, username: String? = nil, password: MaskedString? = nil, address: HostPort) {
        self.scheme = scheme
        self.username = username
        self.password = password
        self.address = address
    }

    /// The URL without credentials.
    public var description: String { "\(scheme.rawValue)://\(address)" }
}

public struct TlsConfig: Equatable, Sendable {
    public var hostname: String?
    public var trustedRoot: String?
    public var pkcs12: String?
    public var pkcs12Password: MaskedString?

    public init(
        hostname: String? = nil, trustedRoot: String? = nil, pkcs12: String? = nil,
        pkcs12Password: MaskedString? = nil
    ) {
        self.hostname = hostname
        self.trustedRoot = trustedRoot
        self.pkcs12 = pkcs12
        self.pkcs12Password = pkcs12Password
    }
}

public struct NoiseConfig: Equatable, Sendable {
    public var pattern: String
    /// Standard padded base64 of the raw 32-byte X25519 private key.
    public var localPrivateKey: MaskedString?
    /// Standard padded base64 of the raw 32-byte X25519 public key.
    public var remotePublicKey: String?

    public static let defaultPattern = "Noise_NK_25519_ChaChaPoly_BLAKE2s"

    public init(
        pattern: String = NoiseConfig.defaultPattern, localPrivateKey: MaskedString? = nil,
        remotePublicKey: String? = nil
    ) {
        self.pattern = pattern
        self.localPrivateKey = localPrivateKey
        self.remotePublicKey = remotePublicKey
    }
}

public struct WebsocketConfig: Equatable, Sendable {
    public var tls: Bool

    public init(tls: Bool) {
        self.tls = tls
    }
}
