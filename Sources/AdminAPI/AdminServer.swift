// Built with the AdminAPI package trait only (the default).
#if AdminAPI

import AdminAPIBodies
import ControlPlane
import DataPlane
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The HTTP API of one running instance (`[server.api]` or `[client.api]`): HummingbirdCore on
/// one event-loop thread of its own. `apply` starts, restarts or stops it as the config says. It
/// owns the server's task and the reconfiguration a reload asked for; `stop` ends both.
public final class AdminServer: Sendable {
    private let instance: Instance
    private let logger = Logger(label: "rathole::api")
    private let running = Mutex<Running?>(nil)
    /// The last reconfiguration asked for by a reload (each waits for the one before), and
    /// whether `stop` was called (no reconfiguration starts the API again after it).
    private let reconfiguring = Mutex<(last: Task<Void, Never>?, stopped: Bool)>((nil, false))

    private struct Running {
        let config: ApiConfig
        let task: Task<Void, Never>
        let group: MultiThreadedEventLoopGroup
    }

    public init(instance: Instance) { self.instance = instance }

    /// The API settings of the instance's side, nil when the API is off.
    public static func config(of instance: Instance) -> ApiConfig? {
        switch instance.mode {
        case .server: return instance.config.server?.api
        case .client: return instance.config.client?.api
        }
    }

    /// Starts, restarts or stops the API for `config` (nil: off). Returns once it listens;
    /// throws, with the API left off, when it cannot listen.
    public func apply(_ config: ApiConfig?) async throws(StartError) {
        if running.withLock({ $0?.config }) == config { return }
        await stopServer()
        guard let config, !reconfiguring.withLock({ $0.stopped }) else { return }
        let key = "\(instance.mode).api.bind_addr"
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let executor = EventLoopExecutor(group.next())
        var http = Logger(label: "rathole::api::http")
        http.logLevel = max(logger.logLevel, .warning)
        let (host, port) = Self.hostAndPort(config.bindAddr)
        let bound = AsyncStream<Result<Void, StartError>>.makeStream()
        let responder = AdminResponder(instance: instance, token: BearerToken(config.token.value), logger: logger)
        let server: any Service
        do {
            server = try HTTPServerBuilder.http1().buildServer(
                configuration: ServerConfiguration(address: .hostname(host, port: port), reuseAddress: true),
                eventLoopGroup: group, logger: http,
                responder: { request, writer, channel in
                    let response = await responder.respond(to: request, peer: channel.remoteAddress.map(Self.text) ?? "?")
                    try await writer.write(response: response.head, body: response.body)
                },
                onServerRunning: { _ in bound.continuation.yield(.success(())) })
        } catch {
            try? await group.shutdownGracefully()
            throw StartError("cannot start the API (\(key)): \(error)")
        }
        // Unstructured: the server runs for as long as the config has it, across calls; `stop`
        // cancels it and waits for it.
        let task = Task(executorPreference: executor) {
            do {
                try await server.run()
            } catch {
                bound.continuation.yield(.failure(StartError("cannot listen on \(config.bindAddr) (\(key)): \(error)")))
            }
            bound.continuation.finish()
        }
        var result: Result<Void, StartError> = .failure(StartError("the API server stopped at once (\(key))"))
        for await first in bound.stream {
            result = first
            break
        }
        if case .failure(let error) = result {
            task.cancel()
            _ = await task.value
            try? await group.shutdownGracefully()
            throw error
        }
        running.withLock { $0 = Running(config: config, task: task, group: group) }
        logger.info("API listening at \(config.bindAddr)")
    }

    /// Stops the API for good (a reload arriving later does not start it again), and waits
    /// until its port is closed.
    public func stop() async {
        let last = reconfiguring.withLock { r -> Task<Void, Never>? in
            r.stopped = true
            return r.last
        }
        await last?.value
        await stopServer()
    }

    private func stopServer() async {
        guard let old = running.withLock({ $0.take() }) else { return }
        old.task.cancel()
        await old.task.value
        try? await old.group.shutdownGracefully()
    }

    /// `ip:port`, `[v6]:port`: the peer in log lines.
    private static func text(_ address: NIOCore.SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return address.description }
        if case .v6 = address { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }

    private static func hostAndPort(_ address: PeerAddress) -> (String, Int) {
        switch address {
        case .v4(let ip, let port): return (ip.description, Int(port))
        case .v6(let ip, let port): return (ip.description, Int(port))
        }
    }
}

extension AdminServer {
    /// After a reload: the API follows its table's new settings (a failure to listen is logged,
    /// and the API stays off until the next reload fixes it).
    public func instanceReloaded() {
        let config = Self.config(of: instance)
        reconfiguring.withLock { r in
            guard !r.stopped else { return }
            let before = r.last
            // The reload that tells us does not wait for the API to restart; `stop` waits for it.
            r.last = Task {
                await before?.value
                do {
                    try await self.apply(config)
                } catch {
                    self.logger.error("\(error); the API is off")
                }
            }
        }
    }
}

#endif
