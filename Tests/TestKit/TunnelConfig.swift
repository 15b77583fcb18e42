// The one config builder: a tunnel described once (control port, services, transport tables,
// extra keys) and rendered as the server's file, the client's file, or one file with both; plus
// the two ways an edit reaches a config file.
import Foundation
import Glibc

/// One service as both config files see it.
public struct ServiceSpec: Sendable {
    public enum Sides: Sendable { case both, serverOnly, clientOnly }

    public var name: String
    public var type: String
    /// The server's public port for the service (its bind_addr).
    public var port: UInt16
    public var bindHost: String
    /// Where the client forwards to: `localHost:localPort`, or `localAddr` when set (a host name).
    public var localPort: UInt16
    public var localHost: String
    public var localAddr: String?
    /// The service's own token; nil: the default_token.
    public var token: String?
    /// Extra lines in the service's table on each side (`nodelay = false`, `retry_interval = 1`).
    public var serverKeys: [String]
    public var clientKeys: [String]
    public var sides: Sides

    public init(
        _ name: String, type: String = "tcp", port: UInt16, localPort: UInt16, bindHost: String = "127.0.0.1",
        localHost: String = "127.0.0.1", token: String? = nil, serverKeys: [String] = [], clientKeys: [String] = [],
        sides: Sides = .both
    ) {
        self.name = name
        self.type = type
        self.port = port
        self.localPort = localPort
        self.bindHost = bindHost
        self.localHost = localHost
        self.token = token
        self.serverKeys = serverKeys
        self.clientKeys = clientKeys
        self.sides = sides
    }

    /// Data channels the server asks for when the service's control channel starts.
    public var poolSize: Int { type == "udp" ? 2 : 8 }
    public var isUDP: Bool { type == "udp" }
}

public struct TunnelConfig: Sendable {
    public static let defaultToken = "e2e-secret"

    public var controlPort: UInt16
    public var services: [ServiceSpec]
    public var serverToken: String?
    public var clientToken: String?
    /// server.bind_addr and client.remote_addr.
    public var bindAddr: String
    public var remoteAddr: String
    /// Extra lines in [server] and [client] (`heartbeat_interval = 1`).
    public var serverKeys: [String] = []
    public var clientKeys: [String] = []
    /// Extra tables at the end of each side (`[server.transport]` ...).
    public var serverTables = ""
    public var clientTables = ""

    public init(controlPort: UInt16 = Ports.free(), services: [ServiceSpec], token: String? = TunnelConfig.defaultToken) {
        self.controlPort = controlPort
        self.services = services
        serverToken = token
        clientToken = token
        bindAddr = "127.0.0.1:\(controlPort)"
        remoteAddr = "127.0.0.1:\(controlPort)"
    }

    public static func hostPort(_ host: String, _ port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    public var serverText: String {
        var t = "[server]\nbind_addr = \"\(bindAddr)\"\n"
        if let serverToken { t += "default_token = \"\(serverToken)\"\n" }
        for k in serverKeys { t += k + "\n" }
        for s in services where s.sides != .clientOnly {
            t += "\n[server.services.\(s.name)]\ntype = \"\(s.type)\"\nbind_addr = \"\(Self.hostPort(s.bindHost, s.port))\"\n"
            if let tok = s.token { t += "token = \"\(tok)\"\n" }
            for k in s.serverKeys { t += k + "\n" }
        }
        return t + (serverTables.isEmpty ? "" : "\n" + serverTables + "\n")
    }

    public var clientText: String {
        var t = "[client]\nremote_addr = \"\(remoteAddr)\"\n"
        if let clientToken { t += "default_token = \"\(clientToken)\"\n" }
        for k in clientKeys { t += k + "\n" }
        for s in services where s.sides != .serverOnly {
            let local = s.localAddr ?? Self.hostPort(s.localHost, s.localPort)
            t += "\n[client.services.\(s.name)]\ntype = \"\(s.type)\"\nlocal_addr = \"\(local)\"\n"
            if let tok = s.token { t += "token = \"\(tok)\"\n" }
            for k in s.clientKeys { t += k + "\n" }
        }
        return t + (clientTables.isEmpty ? "" : "\n" + clientTables + "\n")
    }

    /// One file with both [server] and [client] (upstream's own test setup).
    public var combinedText: String { serverText + "\n" + clientText }

    public var serverServices: [ServiceSpec] { services.filter { $0.sides != .clientOnly } }
    public var clientServices: [ServiceSpec] { services.filter { $0.sides != .serverOnly } }

    /// How many connections the server holds from a client once every client service's control
    /// channel is up: the control channel and its initial pool of data channels, per service.
    public var establishedChannelCount: Int {
        services.filter { $0.sides == .both }.reduce(0) { $0 + 1 + $1.poolSize }
    }
}

public enum ConfigFile {
    /// Rewrites the file in place: same inode, truncated and written (what `>` in a shell does).
    public static func rewriteInPlace(_ path: String, _ text: String) throws {
        let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { throw TestFailure("open \(path): \(errnoText())") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw TestFailure("write \(path): \(errnoText())") }
            done += n
        }
    }

    /// Writes a temporary file next to `path` and renames it over `path` (what most editors do).
    public static func replaceByRename(_ path: String, _ text: String) throws {
        let tmp = path + ".tmp-\(getpid())-\(Int(monoNow() * 1000))"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8)) else {
            throw TestFailure("cannot write \(tmp)")
        }
        guard rename(tmp, path) == 0 else { throw TestFailure("rename \(tmp) -> \(path): \(errnoText())") }
    }
}
