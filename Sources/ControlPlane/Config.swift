// rathole's TOML configuration: every key of upstream rathole, with its defaults, validated into
// value types that hot reload can compare per service.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import DataPlane
import TOMLKit

// MARK: - Errors

/// A configuration problem; `description` is the one line to print:
/// `<file>: <full.key.path>: <what is wrong>` (or `<file>: <what is wrong>` when no single key is at fault).
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    /// The full dotted key path, e.g. `client.services.ssh.token`; nil for file-level problems.
    public var key: String?
    public var message: String

    public init(file: String, key: String?, message: String) {
        self.file = file
        self.key = key
        self.message = message
    }

    public var description: String {
        if let key { return "\(file): \(key): \(message)" }
        return "\(file): \(message)"
    }
}

// MARK: - Model

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

    public static let defaultHeartbeatInterval: UInt64 = 30

    public init(
        bindAddr: PeerAddress, defaultToken: MaskedString? = nil,
        heartbeatInterval: UInt64 = ServerConfig.defaultHeartbeatInterval,
        transport: TransportConfig = TransportConfig(), services: [String: ServerServiceConfig] = [:]
    ) {
        self.bindAddr = bindAddr
        self.defaultToken = defaultToken
        self.heartbeatInterval = heartbeatInterval
        self.transport = transport
        self.services = services
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

    public static let defaultHeartbeatTimeout: UInt64 = 40
    public static let defaultRetryInterval: UInt64 = 1

    public init(
        remoteAddr: HostPort, defaultToken: MaskedString? = nil,
        heartbeatTimeout: UInt64 = ClientConfig.defaultHeartbeatTimeout,
        retryInterval: UInt64 = ClientConfig.defaultRetryInterval, preferIPv6: Bool = false,
        transport: TransportConfig = TransportConfig(), services: [String: ClientServiceConfig] = [:]
    ) {
        self.remoteAddr = remoteAddr
        self.defaultToken = defaultToken
        self.heartbeatTimeout = heartbeatTimeout
        self.retryInterval = retryInterval
        self.preferIPv6 = preferIPv6
        self.transport = transport
        self.services = services
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

// MARK: - Loading

extension Config {
    /// Reads and parses the file at `path`.
    public static func load(path: String) throws(ConfigError) -> Config {
        let text = try readText(path)
        return try parse(text, file: path)
    }

    /// Parses TOML text; `file` names the source in error messages.
    public static func parse(_ text: String, file: String) throws(ConfigError) -> Config {
        guard !text.utf8.contains(0) else {
            throw ConfigError(file: file, key: nil, message: "the file contains a NUL byte")
        }
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            let at = e.source.begin
            throw ConfigError(
                file: file, key: nil,
                message: "invalid TOML at line \(at.line), column \(at.column): \(oneLine(e.description))")
        } catch {
            throw ConfigError(file: file, key: nil, message: "invalid TOML: \(oneLine("\(error)"))")
        }
        let r = TableReader(table: root, path: [], file: file)
        try r.checkKeys(["server", "client"])
        let server = try r.table("server").map { (t) throws(ConfigError) in try parseServer(t) }
        let client = try r.table("client").map { (t) throws(ConfigError) in try parseClient(t) }
        if server == nil && client == nil {
            throw ConfigError(file: file, key: nil, message: "neither [server] nor [client] is configured")
        }
        return Config(file: file, server: server, client: client)
    }

    /// The mode to run in. `forced` is what the command line asked for (`--server` / `--client`).
    public func mode(forced: Mode? = nil) throws(ConfigError) -> Mode {
        switch forced {
        case .server?:
            guard server != nil else {
                throw ConfigError(file: file, key: nil, message: "--server was given but there is no [server] section")
            }
            return .server
        case .client?:
            guard client != nil else {
                throw ConfigError(file: file, key: nil, message: "--client was given but there is no [client] section")
            }
            return .client
        case nil:
            switch (server != nil, client != nil) {
            case (true, false): return .server
            case (false, true): return .client
            case (true, true):
                throw ConfigError(
                    file: file, key: nil,
                    message: "both [server] and [client] are configured: pass --server or --client to choose one")
            case (false, false):
                throw ConfigError(file: file, key: nil, message: "neither [server] nor [client] is configured")
            }
        }
    }
}

private func oneLine(_ s: String) -> String {
    s.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).joined(separator: " ")
}

private func readText(_ path: String) throws(ConfigError) -> String {
    let bytes: [UInt8]
    switch Files.read(path) {
    case .success(let b): bytes = b
    case .failure(let e) where e.rawValue == EFBIG:
        throw ConfigError(file: path, key: nil, message: "the file is larger than 16 MiB")
    case .failure(let e) where [ENOENT, EACCES, ENOTDIR, ELOOP].contains(e.rawValue):
        throw ConfigError(file: path, key: nil, message: "cannot open the file: \(e)")
    case .failure(let e):
        throw ConfigError(file: path, key: nil, message: "cannot read the file: \(e)")
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
        throw ConfigError(file: path, key: nil, message: "the file is not valid UTF-8")
    }
    return text
}

// MARK: - Parsing

/// Formats a key path the way TOML would write it: bare keys where possible, quoted otherwise.
private func formatKeyPath(_ components: [String]) -> String {
    components.map { c -> String in
        let bare = !c.isEmpty && c.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x5F
        }
        if bare { return c }
        var q = "\""
        for ch in c.unicodeScalars {
            switch ch {
            case "\"": q += "\\\""
            case "\\": q += "\\\\"
            case "\n": q += "\\n"
            case "\t": q += "\\t"
            default:
                if ch.value < 0x20 || ch.value == 0x7F {
                    let hex = String(ch.value, radix: 16, uppercase: true)
                    q += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    q.unicodeScalars.append(ch)
                }
            }
        }
        return q + "\""
    }.joined(separator: ".")
}

private func typeName(_ t: TOMLType) -> String {
    switch t {
    case .string: return "a string"
    case .int: return "an integer"
    case .double: return "a float"
    case .bool: return "a boolean"
    case .table: return "a table"
    case .array: return "an array"
    case .date: return "a date"
    case .time: return "a time"
    case .dateTime: return "a date-time"
    }
}

/// Typed access to one TOML table, with errors that carry the full key path.
private struct TableReader {
    let table: TOMLTable
    let path: [String]
    let file: String

    var pathString: String { formatKeyPath(path) }

    func keyPath(_ key: String) -> String { formatKeyPath(path + [key]) }

    func error(_ key: String?, _ message: String) -> ConfigError {
        ConfigError(file: file, key: key.map(keyPath) ?? (path.isEmpty ? nil : pathString), message: message)
    }

    /// Rejects keys not in `allowed` (upstream's deny_unknown_fields).
    func checkKeys(_ allowed: [String]) throws(ConfigError) {
        for key in table.keys.sorted() where !allowed.contains(key) {
            throw error(key, "unknown key (expected one of: \(allowed.joined(separator: ", ")))")
        }
    }

    func value(_ key: String) -> TOMLValueConvertible? { table[key] }

    private func typed<T>(_ key: String, _ expected: String, _ get: (TOMLValueConvertible) -> T?) throws(ConfigError) -> T? {
        guard let v = value(key) else { return nil }
        guard let x = get(v) else {
            throw error(key, "expected \(expected), found \(typeName(v.type))")
        }
        return x
    }

    func string(_ key: String) throws(ConfigError) -> String? {
        try typed(key, "a string") { $0.type == .string ? $0.string : nil }
    }

    func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let s = try string(key) else { throw error(key, "required key is missing") }
        return s
    }

    func bool(_ key: String) throws(ConfigError) -> Bool? {
        try typed(key, "a boolean") { $0.type == .bool ? $0.bool : nil }
    }

    func requiredBool(_ key: String) throws(ConfigError) -> Bool {
        guard let b = try bool(key) else { throw error(key, "required key is missing") }
        return b
    }

    /// A non-negative integer (upstream's u64).
    func uint64(_ key: String) throws(ConfigError) -> UInt64? {
        guard let i = try typed(key, "a non-negative integer", { $0.type == .int ? $0.int : nil }) else { return nil }
        guard i >= 0 else { throw error(key, "expected a non-negative integer, found \(i)") }
        return UInt64(i)
    }

    func table(_ key: String) throws(ConfigError) -> TableReader? {
        guard let t = try typed(key, "a table", { $0.type == .table ? $0.table : nil }) else { return nil }
        return TableReader(table: t, path: path + [key], file: file)
    }

    /// The sub-tables of this table, in key order; every value must be a table.
    func subtables() throws(ConfigError) -> [(String, TableReader)] {
        var out: [(String, TableReader)] = []
        for key in table.keys.sorted() {
            guard let t = try table(key) else { continue }
            out.append((key, t))
        }
        return out
    }
}

private func parseServiceType(_ r: TableReader) throws(ConfigError) -> ServiceType {
    guard let s = try r.string("type") else { return .tcp }
    guard let t = ServiceType(rawValue: s) else {
        throw r.error("type", "unknown service type \"\(s)\" (expected \"tcp\" or \"udp\")")
    }
    return t
}

private func parseServer(_ r: TableReader) throws(ConfigError) -> ServerConfig {
    try r.checkKeys(["bind_addr", "default_token", "heartbeat_interval", "transport", "services"])
    let bindAddr = try readBindAddr(r, "bind_addr", required: true)!
    let defaultToken = try r.string("default_token").map { MaskedString($0) }
    let heartbeat = try r.uint64("heartbeat_interval") ?? ServerConfig.defaultHeartbeatInterval
    let transport = try parseTransport(r.table("transport"), isServer: true)
    var services: [String: ServerServiceConfig] = [:]
    if let st = try r.table("services") {
        for (name, s) in try st.subtables() {
            try s.checkKeys(["type", "token", "bind_addr", "nodelay"])
            let type = try parseServiceType(s)
            let bind = try readBindAddr(s, "bind_addr", required: true)!
            guard let token = try s.string("token").map({ MaskedString($0) }) ?? defaultToken else {
                throw s.error("token", "not set and \(r.keyPath("default_token")) is not set either")
            }
            let nodelay = try s.bool("nodelay") ?? transport.tcp.nodelay
            services[name] = ServerServiceConfig(name: name, type: type, bindAddr: bind, token: token, nodelay: nodelay)
        }
    }
    return ServerConfig(
        bindAddr: bindAddr, defaultToken: defaultToken, heartbeatInterval: heartbeat, transport: transport,
        services: services)
}

private func parseClient(_ r: TableReader) throws(ConfigError) -> ClientConfig {
    try r.checkKeys([
        "remote_addr", "default_token", "heartbeat_timeout", "retry_interval", "prefer_ipv6", "transport", "services",
    ])
    let remote = try readHostPort(r, "remote_addr", required: true)!
    let defaultToken = try r.string("default_token").map { MaskedString($0) }
    let heartbeatTimeout = try r.uint64("heartbeat_timeout") ?? ClientConfig.defaultHeartbeatTimeout
    let retry = try r.uint64("retry_interval") ?? ClientConfig.defaultRetryInterval
    let preferIPv6 = try r.bool("prefer_ipv6") ?? false
    let transport = try parseTransport(r.table("transport"), isServer: false)
    var services: [String: ClientServiceConfig] = [:]
    if let st = try r.table("services") {
        for (name, s) in try st.subtables() {
            try s.checkKeys(["type", "token", "local_addr", "nodelay", "retry_interval", "prefer_ipv6"])
            let type = try parseServiceType(s)
            let local = try readHostPort(s, "local_addr", required: true)!
            guard let token = try s.string("token").map({ MaskedString($0) }) ?? defaultToken else {
                throw s.error("token", "not set and \(r.keyPath("default_token")) is not set either")
            }
            let nodelay = try s.bool("nodelay") ?? transport.tcp.nodelay
            let serviceRetry = try s.uint64("retry_interval") ?? retry
            let servicePrefer = try s.bool("prefer_ipv6") ?? preferIPv6
            services[name] = ClientServiceConfig(
                name: name, type: type, localAddr: local, token: token, nodelay: nodelay,
                retryInterval: serviceRetry, preferIPv6: servicePrefer)
        }
    }
    return ClientConfig(
        remoteAddr: remote, defaultToken: defaultToken, heartbeatTimeout: heartbeatTimeout, retryInterval: retry,
        preferIPv6: preferIPv6, transport: transport, services: services)
}

private func parseTransport(_ tr: TableReader?, isServer: Bool) throws(ConfigError)
    -> TransportConfig
{
    guard let r = tr else { return TransportConfig() }
    try r.checkKeys(["type", "tcp", "tls", "noise", "websocket"])
    var type = TransportType.tcp
    if let s = try r.string("type") {
        guard let t = TransportType(rawValue: s) else {
            throw r.error("type", "unknown transport type \"\(s)\" (expected \"tcp\", \"tls\", \"noise\" or \"websocket\")")
        }
        type = t
    }

    var tcp = TcpConfig()
    if let t = try r.table("tcp") {
        try t.checkKeys(["nodelay", "keepalive_secs", "keepalive_interval", "proxy"])
        tcp.nodelay = try t.bool("nodelay") ?? TcpConfig.defaultNodelay
        tcp.keepaliveSecs = try t.uint64("keepalive_secs") ?? TcpConfig.defaultKeepaliveSecs
        tcp.keepaliveInterval = try t.uint64("keepalive_interval") ?? TcpConfig.defaultKeepaliveInterval
        if let url = try t.string("proxy") {
            switch ProxyConfig.parse(url: url) {
            case let .success(p): tcp.proxy = p
            case let .failure(e): throw t.error("proxy", e.message)
            }
        }
    }

    var tls: TlsConfig? = nil
    if let t = try r.table("tls") {
        try t.checkKeys(["hostname", "trusted_root", "pkcs12", "pkcs12_password"])
        tls = TlsConfig(
            hostname: try t.string("hostname"), trustedRoot: try t.string("trusted_root"),
            pkcs12: try t.string("pkcs12"), pkcs12Password: try t.string("pkcs12_password").map { MaskedString($0) })
    }

    var noise: NoiseConfig? = nil
    if let t = try r.table("noise") {
        try t.checkKeys(["pattern", "local_private_key", "remote_public_key"])
        noise = NoiseConfig(
            pattern: try t.string("pattern") ?? NoiseConfig.defaultPattern,
            localPrivateKey: try t.string("local_private_key").map { MaskedString($0) },
            remotePublicKey: try t.string("remote_public_key"))
    }

    var websocket: WebsocketConfig? = nil
    if let t = try r.table("websocket") {
        try t.checkKeys(["tls"])
        websocket = WebsocketConfig(tls: try t.requiredBool("tls"))
    }

    // What each transport type needs from its table.
    let typeKey = r.keyPath("type")
    func requireTLS(because reason: String) throws(ConfigError) {
        let tlsPath = r.keyPath("tls")
        guard let tls else { throw r.error("tls", "required when \(reason)") }
        if isServer {
            if tls.pkcs12 == nil {
                throw ConfigError(file: r.file, key: tlsPath + ".pkcs12", message: "required when \(reason) on a server")
            }
            if tls.pkcs12Password == nil {
                throw ConfigError(
                    file: r.file, key: tlsPath + ".pkcs12_password", message: "required when \(reason) on a server")
            }
        } else if tls.trustedRoot == nil {
            throw ConfigError(file: r.file, key: tlsPath + ".trusted_root", message: "required when \(reason) on a client")
        }
    }
    switch type {
    case .tcp:
        break
    case .tls:
        try requireTLS(because: "\(typeKey) is \"tls\"")
    case .noise:
        if noise == nil { throw r.error("noise", "required when \(typeKey) is \"noise\"") }
    case .websocket:
        guard let websocket else { throw r.error("websocket", "required when \(typeKey) is \"websocket\"") }
        if websocket.tls { try requireTLS(because: "\(r.keyPath("websocket")).tls is true") }
    }
    return TransportConfig(type: type, tcp: tcp, tls: tls, noise: noise, websocket: websocket)
}

// MARK: - Addresses

struct HostPortParseError: Error {
    var message: String
}

private func isHostNameByte(_ b: UInt8) -> Bool {
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

private func readHostPort(_ r: TableReader, _ key: String, required: Bool) throws(ConfigError) -> HostPort? {
    let text: String
    if required {
        text = try r.requiredString(key)
    } else {
        guard let t = try r.string(key) else { return nil }
        text = t
    }
    switch HostPort.parse(text, ipOnly: false) {
    case let .success(hp): return hp
    case let .failure(e): throw r.error(key, e.message)
    }
}

private func readBindAddr(_ r: TableReader, _ key: String, required: Bool) throws(ConfigError) -> PeerAddress? {
    let text: String
    if required {
        text = try r.requiredString(key)
    } else {
        guard let t = try r.string(key) else { return nil }
        text = t
    }
    switch HostPort.parse(text, ipOnly: true) {
    case let .success(hp): return hp.literalAddress!
    case let .failure(e): throw r.error(key, e.message)
    }
}

// MARK: - Proxy URLs

private func percentDecode(_ s: ArraySlice<UInt8>) -> String? {
    var out: [UInt8] = []
    out.reserveCapacity(s.count)
    var i = s.startIndex
    while i < s.endIndex {
        let c = s[i]
        if c == UInt8(ascii: "%") {
            guard i + 2 < s.endIndex else { return nil }
            guard let hi = hexNibble(s[i + 1]), let lo = hexNibble(s[i + 2]) else { return nil }
            out.append(hi << 4 | lo)
            i += 3
        } else {
            out.append(c)
            i += 1
        }
    }
    return String(validating: out, as: UTF8.self)
}

private func hexNibble(_ c: UInt8) -> UInt8? {
    switch c {
    case 0x30...0x39: return c - 0x30
    case 0x41...0x46: return c - 0x41 + 10
    case 0x61...0x66: return c - 0x61 + 10
    default: return nil
    }
}

extension ProxyConfig {
    /// Parses `scheme://[user[:password]@]host[:port][/]` with scheme socks5 or http. The http port
    /// defaults to 80; socks5 needs an explicit port.
    static func parse(url text: String) -> Result<ProxyConfig, HostPortParseError> {
        func fail(_ why: String) -> Result<ProxyConfig, HostPortParseError> {
            .failure(HostPortParseError(message: "invalid proxy URL: \(why)"))
        }
        let b = Array(text.utf8)
        guard let sep = findSubsequence(b, Array("://".utf8)) else {
            return fail("expected socks5://host:port or http://host:port")
        }
        let schemeText = String(decoding: b[..<sep], as: UTF8.self).lowercased()
        guard let scheme = ProxyConfig.Scheme(rawValue: schemeText) else {
            return fail("unsupported scheme \"\(schemeText)\" (expected socks5 or http)")
        }
        var rest = b[(sep + 3)...]
        // Authority ends at the first '/', '?' or '#'.
        if let end = rest.firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) {
            let tail = rest[end...]
            guard tail.count == 1 && tail.first == UInt8(ascii: "/") else {
                return fail("a proxy URL has no path, query or fragment")
            }
            rest = rest[..<end]
        }
        var username: String? = nil
        var password: MaskedString? = nil
        if let at = rest.lastIndex(of: UInt8(ascii: "@")) {
            let userinfo = rest[..<at]
            rest = rest[(at + 1)...]
            let userPart: ArraySlice<UInt8>
            if let colon = userinfo.firstIndex(of: UInt8(ascii: ":")) {
                userPart = userinfo[..<colon]
                guard let p = percentDecode(userinfo[(colon + 1)...]) else {
                    return fail("bad percent-encoding in the password")
                }
                password = MaskedString(p)
            } else {
                userPart = userinfo
            }
            guard let u = percentDecode(userPart) else { return fail("bad percent-encoding in the user name") }
            username = u
        }
        let hostPortText = String(decoding: rest, as: UTF8.self)
        switch HostPort.parse(hostPortText, ipOnly: false, defaultPort: scheme == .http ? 80 : nil) {
        case let .success(hp):
            return .success(ProxyConfig(scheme: scheme, username: username, password: password, address: hp))
        case let .failure(e):
            return fail(e.message)
        }
    }
}

private func findSubsequence(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
    guard haystack.count >= needle.count else { return nil }
    for i in 0...(haystack.count - needle.count) where haystack[i..<i + needle.count].elementsEqual(needle) {
        return i
    }
    return nil
}
