// Built with the AdminAPI package trait only (the default).
#if AdminAPI

import ControlPlane

/// Prometheus' text exposition format (version 0.0.4), rendered from the tunnel's own counters at
/// each scrape: nothing is kept or counted twice for it.
enum PrometheusText {
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    static func render(
        services: [ServiceStatus], failures: [(reason: HandshakeFailure, count: UInt64)],
        process: ProcessStats
    ) -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: [(String, String)], value: String)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for sample in samples {
                out += name
                if !sample.labels.isEmpty {
                    out += "{" + sample.labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
                }
                out += " \(sample.value)\n"
            }
        }
        func perService(_ value: (ServiceStatus) -> String) -> [(labels: [(String, String)], value: String)] {
            services.map { ([("service", $0.name)], value($0)) }
        }
        func bothWays(
            _ inbound: (ServiceStatus) -> UInt64, _ outbound: (ServiceStatus) -> UInt64
        )
            -> [(labels: [(String, String)], value: String)]
        {
            services.flatMap { s in
                [
                    ([("service", s.name), ("direction", "in")], String(inbound(s))),
                    ([("service", s.name), ("direction", "out")], String(outbound(s))),
                ]
            }
        }

        family(
            "rathole_connections_total", "counter", "TCP connections relayed since the start.",
            perService { String($0.counters.connectionsTotal) })
        family(
            "rathole_connections_active", "gauge", "TCP connections being relayed now.",
            perService { String($0.counters.connectionsActive) })
        family(
            "rathole_bytes_total", "counter",
            "Bytes relayed (TCP at the end of each connection, and UDP payloads): in is toward the service, out back.",
            bothWays({ $0.counters.bytesIn }, { $0.counters.bytesOut }))
        family(
            "rathole_udp_datagrams_total", "counter", "UDP datagrams forwarded: in is toward the service, out back.",
            bothWays({ $0.counters.datagramsIn }, { $0.counters.datagramsOut }))
        family(
            "rathole_udp_dropped_total", "counter", "UDP datagrams dropped (no data channel, queue full, too many visitors).",
            perService { String($0.counters.datagramsDropped) })
        family(
            "rathole_control_channel_up", "gauge", "1 while the service's control channel is established.",
            perService { $0.controlChannelPeer == nil ? "0" : "1" })
        family(
            "rathole_data_channels_idle", "gauge", "Data channels open and waiting for a connection.",
            perService { String($0.idleDataChannels) })
        family(
            "rathole_handshake_failures_total", "counter", "Connections that failed before becoming a working channel, by reason.",
            failures.map { ([("reason", $0.reason.rawValue)], String($0.count)) })

        if let v = process.cpuSeconds {
            family("process_cpu_seconds_total", "counter", "User and system CPU time, in seconds.", [([], "\(v)")])
        }
        if let v = process.openFDs { family("process_open_fds", "gauge", "Open file descriptors.", [([], String(v))]) }
        if let v = process.maxFDs { family("process_max_fds", "gauge", "The open-file limit.", [([], String(v))]) }
        if let v = process.residentBytes {
            family("process_resident_memory_bytes", "gauge", "Resident memory, in bytes.", [([], String(v))])
        }
        if let v = process.virtualBytes { family("process_virtual_memory_bytes", "gauge", "Virtual memory, in bytes.", [([], String(v))]) }
        if let v = process.startTimeSeconds {
            family("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.", [([], "\(v)")])
        }
        return out
    }

    /// A label value: backslash, double quote and line feed escaped.
    static func escape(_ value: String) -> String {
        var out = ""
        for u in value.unicodeScalars {
            switch u {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }
}

#endif
