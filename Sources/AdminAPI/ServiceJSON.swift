// Built with the AdminAPI package trait only (the default).
#if AdminAPI

import ControlPlane

/// A request the API refuses: the status, one line saying why, and the field at fault if any.
struct APIError: Error, Equatable {
    var status: Int
    var message: String
    var field: String?
    /// For 405: the methods the path takes.
    var allow: String?

    init(_ status: Int, _ message: String, field: String? = nil, allow: String? = nil) {
        self.status = status
        self.message = message
        self.field = field
        self.allow = allow
    }

    var json: String {
        var w = JSONObjectWriter()
        w.add("error", field.map { "\($0): \(message)" } ?? message)
        w.add("field", field)
        return w.finished()
    }
}

/// The JSON bodies of the services endpoints, on either side of the tunnel.
enum ServiceJSON {
    enum Kind { case string, bool, integer }

    /// The fields a PUT body may have on each side, in the order the config file gets them.
    static func fields(_ mode: Mode) -> [(name: String, kind: Kind)] {
        switch mode {
        case .server:
            return [("type", .string), ("token", .string), ("bind_addr", .string), ("nodelay", .bool)]
        case .client:
            return [("type", .string), ("token", .string), ("local_addr", .string), ("nodelay", .bool),
                    ("retry_interval", .integer), ("prefer_ipv6", .bool)]
        }
    }

    static let maxNameBytes = 128

    /// A service name from the URL: 1 to 128 bytes, no control characters (it goes into log
    /// lines, TOML keys and Prometheus labels).
    static func checkName(_ name: String) throws(APIError) {
        guard !name.isEmpty, name.utf8.count <= maxNameBytes,
              !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else {
            throw APIError(400, "a service name is 1 to \(maxNameBytes) bytes without control characters", field: "name")
        }
    }

    /// The service a PUT body defines, checked for its JSON shape here (unknown fields, types, the
    /// token); the values themselves are checked by the config's own parser.
    static func definition(name: String, body: [UInt8], mode: Mode) throws(APIError) -> ServiceDefinition {
        let value: JSON
        do {
            value = try JSON.parse(body)
        } catch {
            throw APIError(400, "the body is not valid JSON: \(error)")
        }
        guard case .object(let members) = value else {
            throw APIError(400, "the body must be a JSON object, not \(value.kind)")
        }
        let allowed = fields(mode)
        for (key, _) in members where !allowed.contains(where: { $0.name == key }) {
            throw APIError(400, "unknown field (expected one of: \(allowed.map(\.name).joined(separator: ", ")))", field: key)
        }
        var definition = ServiceDefinition(name: name, fields: [])
        for (field, kind) in allowed {
            guard let value = members.first(where: { $0.0 == field })?.1 else { continue }
            switch (kind, value) {
            case (.string, .string(let s)): definition.fields.append(.init(field, .string(s)))
            case (.bool, .bool(let b)): definition.fields.append(.init(field, .bool(b)))
            case (.integer, .integer(let i)): definition.fields.append(.init(field, .integer(i)))
            case (.string, _): throw APIError(400, "expected a string, found \(value.kind)", field: field)
            case (.bool, _): throw APIError(400, "expected a boolean, found \(value.kind)", field: field)
            case (.integer, _): throw APIError(400, "expected an integer, found \(value.kind)", field: field)
            }
        }
        guard let token = definition.fields.first(where: { $0.key == "token" }) else {
            throw APIError(400, "required (the service's token)", field: "token")
        }
        guard token.value != .string("") else { throw APIError(400, "must not be empty", field: "token") }
        return definition
    }

    /// One service as GET shows it. The token is never shown.
    static func render(_ s: ServiceStatus, mode: Mode) -> String {
        var w = JSONObjectWriter()
        w.add("name", s.name)
        w.add("type", s.type.rawValue)
        w.add(mode == .server ? "bind_addr" : "local_addr", s.address)
        w.add("nodelay", s.nodelay)
        w.add("control_channel_up", s.controlChannelPeer != nil)
        w.add("control_channel_peer", s.controlChannelPeer)
        w.add("connections_active", s.counters.connectionsActive)
        w.add("connections_total", s.counters.connectionsTotal)
        w.add("bytes_in", s.counters.bytesIn)
        w.add("bytes_out", s.counters.bytesOut)
        w.add("udp_datagrams_in", s.counters.datagramsIn)
        w.add("udp_datagrams_out", s.counters.datagramsOut)
        w.add("udp_datagrams_dropped", s.counters.datagramsDropped)
        w.add("data_channels_idle", s.idleDataChannels)
        return w.finished()
    }

    static func render(_ all: [ServiceStatus], mode: Mode) -> String {
        var w = JSONObjectWriter()
        w.add("services", raw: "[" + all.map { render($0, mode: mode) }.joined(separator: ",") + "]")
        return w.finished()
    }
}

#endif
