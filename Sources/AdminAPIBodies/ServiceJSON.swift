// Built with the AdminAPI package trait only (the default): it speaks ControlPlane's API types.
#if AdminAPI

import ControlPlane

/// A request the API refuses: the status, one line saying why, and the field at fault if any.
public struct APIError: Error, Equatable {
    public var status: Int
    public var message: String
    public var field: String?
    /// For 405: the methods the path takes.
    public var allow: String?

    public init(_ status: Int, _ message: String, field: String? = nil, allow: String? = nil) {
        self.status = status
        self.message = message
        self.field = field
        self.allow = allow
    }

    /// The refusal as one log line: the field at fault (quoted when it holds control characters:
    /// it is a caller's key) and why.
    public var summary: String {
        guard let field else { return message }
        let shown = field.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F } ? JSONObjectWriter.quoted(field) : field
        return "\(shown): \(message)"
    }

    public var json: String {
        var w = JSONObjectWriter()
        w.add("error", field.map { "\($0): \(message)" } ?? message)
        w.add("field", field)
        return w.finished()
    }
}

/// The JSON bodies of the services endpoints, on either side of the tunnel.
public enum ServiceJSON {
    public enum Kind { case string, bool, integer }

    /// The fields a PUT body may have on each side, in the order the config file gets them.
    public static func fields(_ mode: Mode) -> [(name: String, kind: Kind)] {
        switch mode {
        case .server:
            return [("type", .string), ("token", .string), ("bind_addr", .string), ("nodelay", .bool)]
        case .client:
            return [
                ("type", .string), ("token", .string), ("local_addr", .string), ("nodelay", .bool),
                ("retry_interval", .integer), ("prefer_ipv6", .bool),
            ]
        }
    }

    public static let maxNameBytes = 128

    /// A service name from the URL: 1 to 128 bytes, no control characters (it goes into log
    /// lines, TOML keys and Prometheus labels).
    public static func checkName(_ name: String) throws(APIError) {
        guard !name.isEmpty, name.utf8.count <= maxNameBytes,
            !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else {
            throw APIError(400, "a service name is 1 to \(maxNameBytes) bytes without control characters", field: "name")
        }
    }

    /// The service a PUT body defines, checked for its JSON shape here (unknown fields, types, the
    /// token); the values themselves are checked by the config's own parser.
    public static func definition(name: String, body: [UInt8], mode: Mode) throws(APIError) -> ServiceDefinition {
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
    public static func render(_ s: ServiceStatus, mode: Mode) -> String {
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

    public static func render(_ all: [ServiceStatus], mode: Mode) -> String {
        var w = JSONObjectWriter()
        w.add("services", raw: "[" + all.map { render($0, mode: mode) }.joined(separator: ",") + "]")
        return w.finished()
    }

    /// A path segment with its %XX escapes decoded; nil when they are malformed, not UTF-8, or the
    /// segment holds a '/'.
    public static func percentDecoded(_ segment: Substring) -> String? {
        var bytes: [UInt8] = []
        var i = segment.utf8.startIndex
        let utf8 = segment.utf8
        while i < utf8.endIndex {
            let b = utf8[i]
            if b == UInt8(ascii: "/") { return nil }
            if b == UInt8(ascii: "%") {
                let hi = utf8.index(after: i)
                guard hi < utf8.endIndex, utf8.index(after: hi) < utf8.endIndex,
                    let high = hexDigit(utf8[hi]), let low = hexDigit(utf8[utf8.index(after: hi)])
                else { return nil }
                bytes.append(high << 4 | low)
                i = utf8.index(hi, offsetBy: 2)
            } else {
                bytes.append(b)
                i = utf8.index(after: i)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexDigit(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

#endif
