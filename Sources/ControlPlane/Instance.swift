import DataPlane
import Glibc
import Logging
import Synchronization

/// One running server or client built from a config file, which it follows: on a change of the
/// file (or `reload()`, on SIGHUP) services are added, removed or restarted one by one, and a
/// change of the instance's own settings restarts the instance gracefully. A file that does not
/// parse or validate is rejected with one line, and the running config stays in force.
public final class Instance: Sendable {
    public let path: String
    public let mode: Mode
    let group: RingGroup
    public let logger: Logger
    /// Counters per service and of handshake failures, kept across reloads and restarts.
    public let metrics = Metrics()
    let state: Mutex<State>
    /// Held while the config in force is being changed (a reload, or a service through the API).
    let changes = AsyncLock()
    private let reloads = Mutex<(running: Bool, pending: Bool)>((false, false))
    /// The task that follows the config file.
    private let watcher = TaskScope()
    private let onReload: @Sendable (Instance, ReloadEvent) -> Void

    /// How long the connections of a removed or changed service may go on: 30 s, or
    /// `RATHOLE_RELOAD_GRACE_SECS` seconds (for tests, which cannot wait 30 s).
    static let grace: Duration = graceFromEnvironment(getenv("RATHOLE_RELOAD_GRACE_SECS").map { String(cString: $0) })
    static let defaultGrace: Duration = .seconds(30)

    static func graceFromEnvironment(_ value: String?) -> Duration {
        guard let value, let seconds = UInt32(value) else { return defaultGrace }
        return .seconds(seconds)
    }

    struct State {
        var config: Config
        var server: Server?
        var client: Client?
    }

    /// A reload as the supervisor (systemd) hears of it.
    public enum ReloadEvent: Sendable {
        case started
        /// `rejected`: why the file was refused (the running config stays), nil when it was applied.
        case finished(rejected: ConfigError?)
    }

    /// Loads the file and starts. Errors are one line naming the file and key. `onReload` hears
    /// of every reload (file change or `reload()`), before and after.
    public init(
        path: String, forced: Mode?, group: RingGroup,
        onReload: @escaping @Sendable (Instance, ReloadEvent) -> Void = { _, _ in }
    ) throws(StartError) {
        let config: Config
        do {
            config = try Config.load(path: path)
            mode = try config.mode(forced: forced)
        } catch {
            throw StartError(error.description)
        }
        self.path = path
        self.group = group
        self.onReload = onReload
        let logger = Logger(label: "rathole::\(mode)")
        self.logger = logger
        var state = State(config: config)
        switch mode {
        case .server: state.server = try Self.startServer(config.server!, group: group, logger: logger, metrics: metrics)
        case .client: state.client = try Self.startClient(config.client!, group: group, logger: logger, metrics: metrics)
        }
        self.state = Mutex(state)
    }

    private static func startServer(
        _ config: ServerConfig, group: RingGroup, logger: Logger, metrics: Metrics
    )
        throws(StartError) -> Server
    {
        let server = try Server(config: config, group: group, logger: logger, metrics: metrics)
        try server.start()
        return server
    }

    private static func startClient(
        _ config: ClientConfig, group: RingGroup, logger: Logger, metrics: Metrics
    )
        throws(StartError) -> Client
    {
        let client = try Client(config: config, group: group, logger: logger, metrics: metrics)
        client.start()
        return client
    }

    /// The config in force.
    public var config: Config { state.withLock { $0.config } }

    /// Returns once the server's ports are bound (or known busy and being retried); a client's
    /// control channels are started with it.
    public func listening() async {
        await state.withLock { $0.server }?.listening()
    }

    /// Follows the config file: reloads after it changed and stayed quiet for a moment.
    public func watchConfigFile() {
        let watched: FileWatcher
        do {
            watched = try FileWatcher(path: path)
        } catch {
            logger.warning("cannot watch \(path) for changes (\(error)); reload with SIGHUP")
            return
        }
        let ring = group.executors[0]
        watcher.spawn(on: ring) {
            while !Task.isCancelled {
                do { try await watched.nextChange(on: ring) } catch { return }
                await self.reload()
            }
        }
    }

    /// Re-reads the file and applies the difference. Reloads never overlap: one asked for while
    /// another runs is done right after it.
    public func reload() async {
        let first = reloads.withLock { r -> Bool in
            if r.running {
                r.pending = true
                return false
            }
            r.running = true
            return true
        }
        guard first else { return }
        onReload(self, .started)
        var rejected: ConfigError?
        while true {
            rejected = await changes.withLock { await reloadOnce() }
            let again = reloads.withLock { r -> Bool in
                if r.pending {
                    r.pending = false
                    return true
                }
                r.running = false
                return false
            }
            if !again { break }
        }
        onReload(self, .finished(rejected: rejected))
    }

    /// Applies the file; returns why it was refused, if it was.
    private func reloadOnce() async -> ConfigError? {
        let new: Config
        do throws(ConfigError) {
            new = try Config.load(path: path)
            guard try new.mode(forced: mode) == mode else { return nil }
        } catch {
            logger.error("config not reloaded, the running one stays: \(error)")
            return error
        }
        let current = state.withLock { $0 }
        switch mode {
        case .server: await apply(new.server!, over: current.config.server!, current.server!)
        case .client: apply(new.client!, over: current.config.client!, current.client!)
        }
        state.withLock { $0.config = new }
        return nil
    }

    private func apply(_ new: ServerConfig, over old: ServerConfig, _ server: Server) async {
        if new.needsRestart(from: old) {
            logger.info("server.bind_addr, server.transport or server.heartbeat_interval changed: restarting the server")
            await server.shutdown()
            do {
                let fresh = try Self.startServer(new, group: group, logger: logger, metrics: metrics)
                state.withLock { $0.server = fresh }
            } catch {
                logger.error("new server settings failed (\(error)); restoring the previous ones")
                if let restored = try? Self.startServer(old, group: group, logger: logger, metrics: metrics) {
                    state.withLock { $0.server = restored }
                }
            }
            return
        }
        for change in diff(old.services, new.services) { await apply(change, to: server) }
    }

    /// Applies one service's change to the running server: the one way, for reloads and the API.
    func apply(_ change: ServiceChange<ServerServiceConfig>, to server: Server) async {
        switch change {
        case .removed(let name):
            await server.removeService(named: name, grace: Self.grace)
            metrics.forget(name)
            logger.info("service \(name) removed")
        case .added(let service):
            server.addService(service)
            logger.info("service \(service.name) added")
        case .changed(let service):
            await server.removeService(named: service.name, grace: Self.grace)
            server.addService(service)
            logger.info("service \(service.name) changed: restarted")
        }
    }

    private func apply(_ new: ClientConfig, over old: ClientConfig, _ client: Client) {
        if new.needsRestart(from: old) {
            logger.info(
                "client.remote_addr, client.transport, client.heartbeat_timeout or client.prefer_ipv6 changed: restarting the client")
            do {
                let fresh = try Self.startClient(new, group: group, logger: logger, metrics: metrics)
                client.shutdown()
                state.withLock { $0.client = fresh }
            } catch {
                logger.error("new client settings rejected, the running ones stay: \(error)")
            }
            return
        }
        for change in diff(old.services, new.services) { apply(change, to: client) }
    }

    /// Applies one service's change to the running client: the one way, for reloads and the API.
    func apply(_ change: ServiceChange<ClientServiceConfig>, to client: Client) {
        switch change {
        case .removed(let name):
            client.removeService(named: name, grace: Self.grace)
            metrics.forget(name)
            logger.info("service \(name) removed")
        case .added(let service):
            client.addService(service)
            logger.info("service \(service.name) added")
        case .changed(let service):
            client.removeService(named: service.name, grace: Self.grace)
            client.addService(service)
            logger.info("service \(service.name) changed: restarted")
        }
    }

    /// Stops everything: listeners, control and data channels. Relays end with the ring group.
    public func shutdown() async {
        watcher.cancelAll()
        let current = state.withLock { $0 }
        await current.server?.shutdown()
        current.client?.shutdown()
    }
}

extension ServerConfig {
    /// Whether going from `old` to this config restarts the whole server (its own settings
    /// changed) rather than only the services that differ.
    func needsRestart(from old: ServerConfig) -> Bool {
        bindAddr != old.bindAddr || transport != old.transport || heartbeatInterval != old.heartbeatInterval
    }
}

extension ClientConfig {
    /// Whether going from `old` to this config restarts the whole client.
    func needsRestart(from old: ClientConfig) -> Bool {
        remoteAddr != old.remoteAddr || transport != old.transport || heartbeatTimeout != old.heartbeatTimeout
            || preferIPv6 != old.preferIPv6
    }
}

enum ServiceChange<Service> {
    case added(Service)
    case removed(String)
    case changed(Service)
}

/// What changed between two sets of services, in name order.
func diff<Service: Equatable>(_ old: [String: Service], _ new: [String: Service]) -> [ServiceChange<Service>] {
    var changes: [ServiceChange<Service>] = []
    for name in old.keys.sorted() where new[name] == nil { changes.append(.removed(name)) }
    for name in new.keys.sorted() {
        guard let service = new[name] else { continue }
        if let previous = old[name] {
            if previous != service { changes.append(.changed(service)) }
        } else {
            changes.append(.added(service))
        }
    }
    return changes
}
