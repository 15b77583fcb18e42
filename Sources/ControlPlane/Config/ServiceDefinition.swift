// Only for the HTTP API: left out of builds without the AdminAPI package trait.
#if AdminAPI

// A service as the HTTP API receives it: the keys of its config table, validated by the same code
// that reads the config file, and written to the file in the same form.

import TOMLKit

/// The value of one key of a service's table.
public enum ConfigValue: Equatable, Sendable {
    case string(String)
    case bool(Bool)
    case integer(Int)

    /// As TOML writes it.
    var tomlText: String {
        switch self {
        case .string(let s): return tomlBasicString(s)
        case .bool(let b): return b ? "true" : "false"
        case .integer(let i): return String(i)
        }
    }

    var tomlValue: TOMLValueConvertible {
        switch self {
        case .string(let s): return s
        case .bool(let b): return b
        case .integer(let i): return i
        }
    }
}

/// One service's table (`[server.services.NAME]` or `[client.services.NAME]`): its keys in the
/// order they are written.
public struct ServiceDefinition: Equatable, Sendable {
    public struct Field: Equatable, Sendable {
        public var key: String
        public var value: ConfigValue

        public init(_ key: String, _ value: ConfigValue) {
            self.key = key
            self.value = value
        }
    }

    public var name: String
    public var fields: [Field]

    public init(name: String, fields: [Field]) {
        self.name = name
        self.fields = fields
    }

    func table() -> TOMLTable {
        let table = TOMLTable()
        for field in fields { table[field.key] = field.value.tomlValue }
        return table
    }

    func reader(section: Mode, file: String) -> TableReader {
        TableReader(table: table(), path: [section.rawValue, "services", name], file: file)
    }

    /// The key path of the service's table, `server.services.NAME`, as TOML writes it.
    static func tablePath(section: Mode, name: String) -> String {
        formatKeyPath([section.rawValue, "services", name])
    }
}

extension ServerConfig {
    /// The service `definition` describes, with this server's defaults, checked as the config file
    /// would be; an error names the key (`server.services.NAME.bind_addr`).
    public func service(from definition: ServiceDefinition, file: String) throws(ConfigError) -> ServerServiceConfig {
        try parseService(
            definition.name, definition.reader(section: .server, file: file),
            defaultTokenKey: formatKeyPath(["server", "default_token"]))
    }
}

extension ClientConfig {
    /// The service `definition` describes, with this client's defaults, checked as the config file
    /// would be; an error names the key (`client.services.NAME.local_addr`).
    public func service(from definition: ServiceDefinition, file: String) throws(ConfigError) -> ClientServiceConfig {
        try parseService(
            definition.name, definition.reader(section: .client, file: file),
            defaultTokenKey: formatKeyPath(["client", "default_token"]))
    }
}

#endif
