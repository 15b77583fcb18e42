// The TOML tables of a config, read key by key with upstream rathole's keys and defaults.

import DataPlane
import Glibc
import TOMLKit

/// Formats a key path the way TOML would write it: bare keys where possible, quoted otherwise.
func formatKeyPath(_ components: [String]) -> String {
    components.map { c -> String in
        let bare =
            !c.isEmpty
            && c.utf8.allSatisfy { b in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x5F
            }
        return bare ? c : tomlBasicString(c)
    }.joined(separator: ".")
}

/// `text` as a TOML basic string: quoted, with quotes, backslashes and control characters escaped.
func tomlBasicString(_ text: String) -> String {
    var q = "\""
    for ch in text.unicodeScalars {
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
}

func typeName(_ t: TOMLType) -> String {
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
struct TableReader {
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

    func typed<T>(_ key: String, _ expected: String, _ get: (TOMLValueConvertible) -> T?) throws(ConfigError) -> T? {
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

func parseServiceType(_ r: TableReader) throws(ConfigError) -> ServiceType {
    guard let s = try r.string("type") else { return .tcp }
    guard let t = ServiceType(rawValue: s) else {
        throw r.error("type", "unknown service type \"\(s)\" (expected \"tcp\" or \"udp\")")
    }
    return t
}

func parseServer(_ r: TableReader) throws(ConfigError) -> ServerConfig {
    try r.checkKeys(["bind_addr", "default_token", "heartbeat_interval", "transport", "services", "api"])
    let bindAddr = try readBindAddr(r, "bind_addr", required: true)!
    let defaultToken = try r.string("default_token").map { MaskedString($0) }
    let heartbeat = try r.uint64("heartbeat_interval") ?? ServerConfig.defaultHeartbeatInterval
    let transport = try parseTransport(r.table("transport"), isServer: true)
    let api = try r.table("api").map { (t) throws(ConfigError) in try parseApi(t) }
    var config = ServerConfig(
        bindAddr: bindAddr, defaultToken: defaultToken, heartbeatInterval: heartbeat, transport: transport, api: api)
    if let st = try r.table("services") {
        for (name, s) in try st.subtables() {
            config.services[name] = try config.parseService(name, s, defaultTokenKey: r.keyPath("default_token"))
        }
    }
    return config
}

extension ServerConfig {
    /// One `[server.services.NAME]` table, with this server's defaults.
    func parseService(_ name: String, _ s: TableReader, defaultTokenKey: String) throws(ConfigError) -> ServerServiceConfig {
        try s.checkKeys(["type", "token", "bind_addr", "nodelay"])
        let type = try parseServiceType(s)
        let bind = try readBindAddr(s, "bind_addr", required: true)!
        guard let token = try s.string("token").map({ MaskedString($0) }) ?? defaultToken else {
            throw s.error("token", "not set and \(defaultTokenKey) is not set either")
        }
        let nodelay = try s.bool("nodelay") ?? transport.tcp.nodelay
        return ServerServiceConfig(name: name, type: type, bindAddr: bind, token: token, nodelay: nodelay)
    }
}

func parseClient(_ r: TableReader) throws(ConfigError) -> ClientConfig {
    try r.checkKeys([
        "remote_addr", "default_token", "heartbeat_timeout", "retry_interval", "prefer_ipv6", "transport", "services",
        "api",
    ])
    let remote = try readHostPort(r, "remote_addr", required: true)!
    let defaultToken = try r.string("default_token").map { MaskedString($0) }
    let heartbeatTimeout = try r.uint64("heartbeat_timeout") ?? ClientConfig.defaultHeartbeatTimeout
    let retry = try r.uint64("retry_interval") ?? ClientConfig.defaultRetryInterval
    let preferIPv6 = try r.bool("prefer_ipv6") ?? false
    let transport = try parseTransport(r.table("transport"), isServer: false)
    let api = try r.table("api").map { (t) throws(ConfigError) in try parseApi(t) }
    var config = ClientConfig(
        remoteAddr: remote, defaultToken: defaultToken, heartbeatTimeout: heartbeatTimeout, retryInterval: retry,
        preferIPv6: preferIPv6, transport: transport, api: api)
    if let st = try r.table("services") {
        for (name, s) in try st.subtables() {
            config.services[name] = try config.parseService(name, s, defaultTokenKey: r.keyPath("default_token"))
        }
    }
    return config
}

extension ClientConfig {
    /// One `[client.services.NAME]` table, with this client's defaults.
    func parseService(_ name: String, _ s: TableReader, defaultTokenKey: String) throws(ConfigError) -> ClientServiceConfig {
        try s.checkKeys(["type", "token", "local_addr", "nodelay", "retry_interval", "prefer_ipv6"])
        let type = try parseServiceType(s)
        let local = try readHostPort(s, "local_addr", required: true)!
        guard let token = try s.string("token").map({ MaskedString($0) }) ?? defaultToken else {
            throw s.error("token", "not set and \(defaultTokenKey) is not set either")
        }
        let nodelay = try s.bool("nodelay") ?? transport.tcp.nodelay
        let serviceRetry = try s.uint64("retry_interval") ?? retryInterval
        let servicePrefer = try s.bool("prefer_ipv6") ?? preferIPv6
        return ClientServiceConfig(
            name: name, type: type, localAddr: local, token: token, nodelay: nodelay,
            retryInterval: serviceRetry, preferIPv6: servicePrefer)
    }
}

func parseTransport(
    _ tr: TableReader?, isServer: Bool
) throws(ConfigError)
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

/// `key` as `host:port` (a name or an IP), nil when it is optional and absent.
func readHostPort(_ r: TableReader, _ key: String, required: Bool) throws(ConfigError) -> HostPort? {
    try readAddress(r, key, required: required, ipOnly: false)
}

/// `key` as an IP address and port (a bind address), nil when it is optional and absent.
func readBindAddr(_ r: TableReader, _ key: String, required: Bool) throws(ConfigError) -> PeerAddress? {
    try readAddress(r, key, required: required, ipOnly: true)?.literalAddress!
}

private func readAddress(_ r: TableReader, _ key: String, required: Bool, ipOnly: Bool) throws(ConfigError) -> HostPort? {
    guard let text = required ? try r.requiredString(key) : try r.string(key) else { return nil }
    switch HostPort.parse(text, ipOnly: ipOnly) {
    case let .success(hp): return hp
    case let .failure(e): throw r.error(key, e.message)
    }
}
