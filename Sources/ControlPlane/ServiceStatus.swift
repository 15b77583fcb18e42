// Only for the HTTP API: left out of builds without the AdminAPI package trait.
#if AdminAPI

import DataPlane
import Synchronization

/// One service as the HTTP API shows it: its settings, its control channel and its counters.
public struct ServiceStatus: Sendable {
    public var name: String
    public var type: ServiceType
    /// `bind_addr` on the server, `local_addr` on the client.
    public var address: String
    public var nodelay: Bool
    /// The peer's address while the control channel is up (the client's on the server, the
    /// server's on the client); nil while it is down.
    public var controlChannelPeer: String?
    /// Data channels open and not yet carrying a connection.
    public var idleDataChannels: Int
    public var counters: ServiceCounters.Snapshot
}

extension Instance {
    /// Every service in force, by name.
    public func serviceStatuses() async -> [ServiceStatus] {
        let (config, server) = state.withLock { ($0.config, $0.server) }
        switch mode {
        case .server:
            let services = config.server!.services.values.sorted { $0.name < $1.name }
            let live = await server?.hub.liveStatus(of: services.map(\.name)) ?? [:]
            return services.map { s in
                ServiceStatus(
                    name: s.name, type: s.type, address: s.bindAddr.description, nodelay: s.nodelay,
                    controlChannelPeer: live[s.name]?.peer, idleDataChannels: live[s.name]?.idle ?? 0,
                    counters: metrics.counters(for: s.name).snapshot)
            }
        case .client:
            return config.client!.services.values.sorted { $0.name < $1.name }.map { s in
                let counters = metrics.counters(for: s.name)
                return ServiceStatus(
                    name: s.name, type: s.type, address: s.localAddr.description, nodelay: s.nodelay,
                    controlChannelPeer: counters.controlChannelPeer, idleDataChannels: counters.idleDataChannels,
                    counters: counters.snapshot)
            }
        }
    }

    /// One service in force, or nil.
    public func serviceStatus(named name: String) async -> ServiceStatus? {
        await serviceStatuses().first { $0.name == name }
    }
}

extension ServerHub {
    /// The control channel's peer and the idle data channels of each service named.
    func liveStatus(of names: [String]) -> [String: (peer: String?, idle: Int)] {
        var out: [String: (peer: String?, idle: Int)] = [:]
        for name in names {
            guard let entry = entry(named: name) else { continue }
            out[name] = (controlPeer(of: entry), entry.channels.idleCount)
        }
        return out
    }
}

#endif
