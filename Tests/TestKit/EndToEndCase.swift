// The base of the end-to-end suites: a temp dir per test, the rathole processes, local services
// and other programs it started (stopped at tearDown, their logs printed when the test failed),
// and tunnels started and waited for by the programs' state: ports that listen, and control
// channels the server holds.
import Foundation
import Glibc
import XCTest

open class EndToEndCase: XCTestCase {
    public private(set) var dir = ""
    private var processes: [RatholeProcess] = []
    private var externals: [ExternalProgram] = []
    private var cleanups: [() -> Void] = []

    open override func setUp() {
        super.setUp()
        signal(SIGPIPE, SIG_IGN)
        let base = NSTemporaryDirectory().hasSuffix("/") ? NSTemporaryDirectory() : NSTemporaryDirectory() + "/"
        var template = Array("\(base)rathole-e2e-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        dir = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        processes = []
        externals = []
        cleanups = []
    }

    open override func tearDown() {
        for c in cleanups.reversed() { c() }
        for p in processes { p.killNow() }
        for p in externals { p.stop() }
        let failed = (testRun?.totalFailureCount ?? 0) > 0
        if failed {
            for p in processes { print("===== log of \(p.name) (\(p.configPath)):\n\(p.allLogs)") }
            for p in externals { print("===== log of \(p.name) (\(p.argv.joined(separator: " "))):\n\(p.log)") }
        }
        if failed || ProcessInfo.processInfo.environment["E2E_KEEP_LOGS"] != nil {
            print("===== test files kept in \(dir)")
        } else {
            try? FileManager.default.removeItem(atPath: dir)
        }
        processes = []
        externals = []
        cleanups = []
        super.tearDown()
    }

    // MARK: What a test owns

    /// Runs at tearDown (in reverse order), failed or not.
    public func cleanup(_ body: @escaping () -> Void) { cleanups.append(body) }

    /// A local service stopped at tearDown.
    @discardableResult
    public func keep(_ service: LocalService) -> LocalService {
        cleanup { service.stop() }
        return service
    }

    public func keep(_ echo: UDPEcho) -> UDPEcho {
        cleanup { echo.stop() }
        return echo
    }

    /// Writes `text` to <dir>/<name> and returns the path.
    @discardableResult
    public func writeFile(_ name: String, _ text: String) -> String {
        let path = "\(dir)/\(name)"
        precondition(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)), "cannot write \(path)")
        return path
    }

    /// A rathole process with its config in <dir>/<name>.toml (not started).
    public func rathole(_ name: String, config: String, arguments: [String] = []) -> RatholeProcess {
        rathole(name, configPath: writeFile("\(name).toml", config), arguments: arguments)
    }

    /// A rathole process on a config file that exists already (several processes may share one).
    public func rathole(_ name: String, configPath: String, arguments: [String] = []) -> RatholeProcess {
        let p = RatholeProcess(name: name, configPath: configPath, dir: dir, arguments: arguments)
        processes.append(p)
        return p
    }

    /// A rathole process whose config file is a symlink into <dir>/real/: edits of the real file
    /// are invisible to the config watcher (it watches the symlink's directory), so only SIGHUP
    /// picks them up. Returns the process and the real file's path.
    public func ratholeBehindSymlink(_ name: String, config: String) throws -> (RatholeProcess, String) {
        let p = rathole(name, config: config)
        let realDir = "\(dir)/real"
        try FileManager.default.createDirectory(atPath: realDir, withIntermediateDirectories: true)
        let real = "\(realDir)/\(name).toml"
        guard rename(p.configPath, real) == 0, symlink(real, p.configPath) == 0 else {
            throw TestFailure("cannot move \(p.configPath) behind a symlink: \(errnoText())")
        }
        return (p, real)
    }

    /// Another program, stopped (with its process group) at tearDown; its output goes to <dir>/<name>.log.
    public func program(_ name: String, _ argv: [String]) -> ExternalProgram {
        let p = ExternalProgram(name: name, argv: argv, logPath: "\(dir)/\(name).log")
        externals.append(p)
        return p
    }

    // MARK: Tunnels

    public struct Tunnel {
        public let server: RatholeProcess
        public let client: RatholeProcess
        public let config: TunnelConfig
        public var controlPort: UInt16 { config.controlPort }
        /// The first service's public port on the server (where visitors connect).
        public var publicPort: UInt16 { config.services[0].port }
        public var name: String { config.services[0].name }
        /// The service behind the client.
        public let local: LocalService
    }

    /// A server and a client for one TCP service `name` backed by `local`, both ready.
    public func startTunnel(
        name: String = "svc", local: LocalService, serverKeys: [String] = [], clientKeys: [String] = [],
        environment: [String: String] = [:]
    ) throws -> Tunnel {
        var config = TunnelConfig(services: [ServiceSpec(name, port: Ports.free(), localPort: local.port)])
        config.serverKeys = serverKeys
        config.clientKeys = clientKeys
        let (server, client) = try start(config, environment: environment)
        return Tunnel(server: server, client: client, config: config, local: local)
    }

    /// Writes both files, starts the server, waits until it listens, starts the client and waits
    /// until the server holds its control channels.
    public func start(
        _ config: TunnelConfig, serverName: String = "server", clientName: String = "client",
        environment: [String: String] = [:]
    ) throws -> (server: RatholeProcess, client: RatholeProcess) {
        let server = rathole(serverName, config: config.serverText)
        let client = rathole(clientName, config: config.clientText)
        for p in [server, client] { p.environment.merge(environment) { $1 } }
        try server.start()
        try waitServerReady(server, config)
        try client.start()
        try waitClientReady(client, server: server, config)
        return (server, client)
    }

    public func startTunnel(_ config: TunnelConfig, local: LocalService) throws -> Tunnel {
        let (server, client) = try start(config)
        return Tunnel(server: server, client: client, config: config, local: local)
    }

    // MARK: Readiness, from the programs' state

    /// Waits until the server listens on its control port and on every service port (TCP) or has
    /// the service's UDP socket bound.
    public func waitServerReady(_ server: RatholeProcess, _ config: TunnelConfig, timeout: Double = 20) throws {
        var missing: [String] = []
        let ready = waitUntil(timeout: timeout, interval: 0.05) {
            // One read of each table per round: on a shared machine they hold thousands of sockets.
            let listening = Set(server.tcpSockets.filter(\.isListening).map(\.localPort))
            let udp =
                config.serverServices.contains(where: \.isUDP) && server.isRunning
                ? Set(ProcFS.udpSockets(pid: server.pid).map(\.localPort)) : []
            missing = []
            if !listening.contains(config.controlPort) { missing.append("control port \(config.controlPort)") }
            for s in config.serverServices where !(s.isUDP ? udp : listening).contains(s.port) {
                missing.append("service \(s.name) (\(s.type) port \(s.port))")
            }
            return missing.isEmpty || !server.isRunning
        }
        guard ready && server.isRunning else {
            throw TestFailure(
                "\(server.name) not ready within \(timeout)s (\(server.poll()?.description ?? "running")): "
                    + "not listening on \(missing.joined(separator: ", "))")
        }
    }

    /// Waits until the server holds, besides the connections in `since`, the client's control
    /// channels and their initial data channels, `count` connections in all (default: all of the
    /// config's services): a data channel is only opened after the server accepted the control
    /// channel, so this is the control channel seen by the peer.
    public func waitClientReady(
        _ client: RatholeProcess, server: RatholeProcess, _ config: TunnelConfig,
        since: Set<UInt64> = [], count: Int? = nil, timeout: Double = 20
    ) throws {
        let wanted = count ?? config.establishedChannelCount
        var seen = 0
        let ready = waitUntil(timeout: timeout, interval: 0.05) {
            seen = server.connections(acceptedOn: config.controlPort).subtracting(since).count
            return seen >= wanted || !client.isRunning || !server.isRunning
        }
        guard ready && client.isRunning && server.isRunning else {
            throw TestFailure(
                "the server holds \(seen) of the \(wanted) channels of \(client.name) within \(timeout)s "
                    + "(client \(client.poll()?.description ?? "running"), server \(server.poll()?.description ?? "running"))")
        }
    }

    /// The connections the server holds on its control port now (for `waitClientReady(since:)`).
    public func channels(of server: RatholeProcess, _ config: TunnelConfig) -> Set<UInt64> {
        server.connections(acceptedOn: config.controlPort)
    }

    /// A visitor through `publicPort` gets no bytes within `seconds` (the server may hold it, then
    /// close it), and `local` sees no connection.
    public func assertNothingForwarded(
        publicPort: UInt16, local: LocalService, seconds: Double = 3,
        file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let v = try Conn.connect(port: publicPort)
        defer { v.close() }
        try? v.send("is anybody there?")
        if case .data(let d) = v.readSome(timeout: seconds) {
            XCTFail("the visitor got bytes: \(hexString(d.prefix(64)))", file: file, line: line)
        }
        XCTAssertEqual(local.accepted, 0, "the local service must see no connection", file: file, line: line)
    }
}
