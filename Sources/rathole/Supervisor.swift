import ControlPlane
import DataPlane
import Logging

/// Tells systemd (a `Type=notify` unit) what the process is doing: ready, reloading, stopping, and
/// a status line for `systemctl status`. Without `$NOTIFY_SOCKET` every call does nothing.
struct Supervisor: Sendable {
    private let notifier: ServiceNotifier?

    /// A `$NOTIFY_SOCKET` that cannot be used is reported on stderr once, and ignored.
    static func fromEnvironment() -> Supervisor {
        do {
            return Supervisor(notifier: try ServiceNotifier.fromEnvironment())
        } catch {
            writeStderr("warning: not notifying systemd: \(error)\n")
            return Supervisor(notifier: nil)
        }
    }

    func ready(_ config: Config, mode: Mode) {
        send(["READY=1"], status: Self.status(config, mode: mode))
    }

    func reloading() {
        send(["RELOADING=1", "MONOTONIC_USEC=\(ServiceNotifier.monotonicMicroseconds)"], status: "reloading")
    }

    func reloaded(_ config: Config, mode: Mode, rejected: ConfigError?) {
        var status = Self.status(config, mode: mode)
        if let rejected { status += "; last reload refused: \(rejected)" }
        send(["READY=1"], status: status)
    }

    func stopping() {
        send(["STOPPING=1"], status: "shutting down")
    }

    /// One line: the mode, where it listens or connects, and its services.
    static func status(_ config: Config, mode: Mode) -> String {
        switch mode {
        case .server:
            let server = config.server!
            return "server listening at \(server.bindAddr) (\(server.transport.type)), \(count(server.services.values.map(\.type)))"
        case .client:
            let client = config.client!
            return "client of \(client.remoteAddr) (\(client.transport.type)), \(count(client.services.values.map(\.type)))"
        }
    }

    private static func count(_ types: [ServiceType]) -> String {
        let udp = types.filter { $0 == .udp }.count
        let total = "\(types.count) service\(types.count == 1 ? "" : "s")"
        return udp == 0 ? total : "\(total) (\(types.count - udp) tcp, \(udp) udp)"
    }

    private func send(_ assignments: [String], status: String) {
        guard let notifier else { return }
        // A newline in the status (from a file: a name, an error) would start another assignment.
        let line = String(status.map { $0.isNewline ? " " : $0 })
        do {
            try notifier.send((assignments + ["STATUS=\(line)"]).joined(separator: "\n"))
        } catch {
            Logger(label: "rathole::systemd").debug("cannot notify systemd: \(error)")
        }
    }
}
