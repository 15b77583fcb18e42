// Reading a config file and choosing the mode.

import DataPlane
import Glibc
import TOMLKit

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
        if let f = TOMLPrecheck.check(text) {
            throw ConfigError(file: file, key: nil, message: "invalid TOML at line \(f.line), column \(f.column): \(f.message)")
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

func oneLine(_ s: String) -> String {
    s.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).joined(separator: " ")
}

func readText(_ path: String) throws(ConfigError) -> String {
    let bytes: [UInt8]
    do {
        bytes = try Files.read(path)
    } catch .system(.fileTooLarge, _) {
        throw ConfigError(file: path, key: nil, message: "the file is larger than 16 MiB")
    } catch .system(let e, _) where [ENOENT, EACCES, ENOTDIR, ELOOP].contains(e.rawValue) {
        throw ConfigError(file: path, key: nil, message: "cannot open the file: \(e)")
    } catch {
        let reason = error.errno.map(\.description) ?? error.description
        throw ConfigError(file: path, key: nil, message: "cannot read the file: \(reason)")
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
        throw ConfigError(file: path, key: nil, message: "the file is not valid UTF-8")
    }
    return text
}
