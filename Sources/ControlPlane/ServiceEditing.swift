// Only for the HTTP API: left out of builds without the AdminAPI package trait.
#if AdminAPI

import DataPlane
import Logging
import Synchronization
import TOMLKit

/// Why a service change asked for through the API was refused; nothing was changed.
public struct ServiceEditError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// The definition is wrong: `field` names the key at fault.
        case invalid
        case notFound
        /// The config file cannot be read, parsed or written.
        case configFile
    }

    public var kind: Kind
    /// The key of the service's table at fault (`bind_addr`), for `invalid`.
    public var field: String?
    public var message: String

    public init(_ kind: Kind, field: String? = nil, _ message: String) {
        self.kind = kind
        self.field = field
        self.message = message
    }

    public var description: String { field.map { "\($0): \(message)" } ?? message }
}

public enum ServicePutOutcome: Sendable {
    case added
    case changed
    /// The service already ran with exactly this definition: nothing was restarted.
    case unchanged
}

/// Adding, changing and removing one service while running (the HTTP API): each change is written
/// to the config file, so that a restart keeps it, and applied as a reload applies a change to that
/// service. Changes and reloads take turns (`changes`), and the config in force is updated before
/// the file watcher's reload reads the file, so that reload finds nothing left to apply.
extension Instance {
    /// Adds service `definition.name`, or changes it to `definition`.
    public func putService(_ definition: ServiceDefinition) async throws(ServiceEditError) -> ServicePutOutcome {
        try await changes.withLock { () async throws(ServiceEditError) -> ServicePutOutcome in
            let name = definition.name
            let running = config
            switch mode {
            case .server:
                let service = try validated { () throws(ConfigError) in try running.server!.service(from: definition, file: path) }
                try write(name, definition.fields) { $0.server?.services[name] = service }
                let old = running.server!.services[name]
                if old == service { return .unchanged }
                state.withLock { $0.config.server!.services[name] = service }
                await apply(old == nil ? .added(service) : .changed(service), to: state.withLock { $0.server! })
                return old == nil ? .added : .changed
            case .client:
                let service = try validated { () throws(ConfigError) in try running.client!.service(from: definition, file: path) }
                try write(name, definition.fields) { $0.client?.services[name] = service }
                let old = running.client!.services[name]
                if old == service { return .unchanged }
                state.withLock { $0.config.client!.services[name] = service }
                apply(old == nil ? .added(service) : .changed(service), to: state.withLock { $0.client! })
                return old == nil ? .added : .changed
            }
        }
    }

    /// Removes service `name`: its port closes, its running connections get the usual grace.
    public func deleteService(named name: String) async throws(ServiceEditError) {
        try await changes.withLock { () async throws(ServiceEditError) in
            let running = config
            switch mode {
            case .server:
                guard running.server!.services[name] != nil else { throw ServiceEditError(.notFound, "no service \(name)") }
                try write(name, nil) { $0.server?.services[name] = nil }
                state.withLock { _ = $0.config.server!.services.removeValue(forKey: name) }
                await apply(.removed(name), to: state.withLock { $0.server! })
            case .client:
                guard running.client!.services[name] != nil else { throw ServiceEditError(.notFound, "no service \(name)") }
                try write(name, nil) { $0.client?.services[name] = nil }
                state.withLock { _ = $0.config.client!.services.removeValue(forKey: name) }
                apply(.removed(name), to: state.withLock { $0.client! })
            }
        }
    }

    /// The service a definition describes, or `invalid` naming the key at fault.
    private func validated<S>(_ parse: () throws(ConfigError) -> S) throws(ServiceEditError) -> S {
        do {
            return try parse()
        } catch {
            let table = "\(mode.rawValue).services."
            var field = error.key
            // The key path is `server.services.NAME.KEY`; the name is the last component but one.
            if let key = error.key, key.hasPrefix(table), let dot = key.lastIndex(of: ".") {
                field = String(key[key.index(after: dot)...])
            }
            throw ServiceEditError(.invalid, field: field, error.message)
        }
    }

    /// Writes service `name`'s table (`fields`, or none to remove it) into the config file, when
    /// the file does not say so already. `change` is what the edit must do to the file's config;
    /// the edited text is parsed back and must give exactly that, or nothing is written.
    private func write(
        _ name: String, _ fields: [ServiceDefinition.Field]?, change: (inout Config) -> Void
    )
        throws(ServiceEditError)
    {
        let text: String
        let onDisk: Config
        do {
            text = try readText(path)
            onDisk = try Config.parse(text, file: path)
            _ = try onDisk.mode(forced: mode)
        } catch {
            throw ServiceEditError(.configFile, "the config file cannot be edited: \(error)")
        }
        var expected = onDisk
        change(&expected)
        if expected == onDisk { return }
        let parsesAsExpected = { (edited: String) -> Bool in (try? Config.parse(edited, file: self.path)) == expected }
        var edited = ConfigTextEditor.replacingService(name, in: mode, with: fields, text: text)
        if edited.map(parsesAsExpected) != true {
            edited = Self.rewrittenByTOMLKit(text, section: mode, name: name, fields: fields)
            guard let e = edited, parsesAsExpected(e) else {
                throw ServiceEditError(.configFile, "\(path): cannot write service \(name) into the file's layout; edit the file by hand")
            }
            logger.warning("\(path): service \(name) written by re-serializing the whole file: its comments and layout were not kept")
        }
        do {
            try Files.replace(path, with: Array(edited!.utf8))
        } catch {
            throw ServiceEditError(.configFile, "cannot write \(path): \(error)")
        }
    }

    /// The whole file parsed and written back by TOMLKit, with the service's table replaced: for
    /// layouts the line editor does not handle (inline tables, dotted keys). Comments are lost.
    private static func rewrittenByTOMLKit(_ text: String, section: Mode, name: String, fields: [ServiceDefinition.Field]?) -> String? {
        guard let root = try? TOMLTable(string: text), let top = root[section.rawValue]?.table else { return nil }
        if top["services"] == nil { top["services"] = TOMLTable() }
        guard let services = top["services"]?.table else { return nil }
        services.remove(at: name)
        if let fields {
            services[name] = ServiceDefinition(name: name, fields: fields).table()
        }
        return root.convert(to: .toml)
    }
}

#endif
