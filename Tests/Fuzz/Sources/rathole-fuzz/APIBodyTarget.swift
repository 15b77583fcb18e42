import AdminAPIBodies
import ControlPlane

// api-body: what a caller of the HTTP API sends. Input: kind byte, then
//   0: any JSON text (JSON.parse);
//   1: a PUT /services/NAME body (mode bit in a flag byte), then the service the config's own
//      reader makes of it, as the API applies it;
//   2: a path segment (percent-decoding) and an Authorization header against a token.
//
// Properties: a refusal is a typed error of one line with its offset inside the input; whatever
// parses prints back (by an encoder of this file's own) to text that parses to the same value; heap
// within a multiple of the input (depth and length are bounded, never bought by a length field); a
// refused body is a 400 whose JSON reply parses back to an object naming the field; an accepted one
// has only the allowed keys with their kinds and a non-empty token, and the config reader either
// accepts it under its own name and token or refuses it in one line naming the key; path segments
// decode exactly as an independent decoder does; the token check accepts exactly the token.

let apiBodyTarget = FuzzTarget(
    name: "api-body",
    summary: "HTTP API bodies: JSON round trip, PUT service bodies through the config reader, path segments, bearer token"
) { data in
    var input = FuzzInput(data)
    switch input.byte() % 3 {
    case 0:
        APIBodyChecks.json(input.rest())
    case 1:
        let mode: Mode = input.byte() & 1 == 0 ? .server : .client
        APIBodyChecks.serviceBody(input.rest(), mode: mode)
    default:
        let split = Int(input.byte())
        let rest = input.rest()
        let cut = rest.isEmpty ? 0 : split % (rest.count + 1)
        APIBodyChecks.pathSegment(Array(rest[..<cut]))
        APIBodyChecks.bearer(Array(rest[cut...]))
    }
}

enum APIBodyChecks {
    static func parse(_ bytes: [UInt8]) -> Result<JSON, JSONError> {
        boundedHeap(input: bytes.count, perByte: 256, fixed: 1 << 16, "JSON.parse") {
            Result { () throws(JSONError) in try JSON.parse(bytes) }
        }
    }

    static func json(_ bytes: [UInt8]) {
        switch parse(bytes) {
        case .failure(let e):
            requireOneLine(e.description, "JSONError")
            require((0...bytes.count).contains(e.offset), "error offset \(e.offset) outside 0...\(bytes.count)")
        case .success(let value):
            let text = encode(value)
            let again = try? JSON.parse(Array(text.utf8))
            require(again == value, "\(text.debugDescription) does not parse back to the value it prints")
        }
    }

    static func serviceBody(_ body: [UInt8], mode: Mode) {
        let result = Result { () throws(APIError) in try ServiceJSON.definition(name: "svc", body: body, mode: mode) }
        switch result {
        case .failure(let e):
            require(e.status == 400, "a body refused with \(e.status), not 400: \(e.message)")
            requireOneLine(e.message, "APIError")
            requireOneLine(e.summary, "APIError's log line")
            guard case .object(let members)? = try? JSON.parse(Array(e.json.utf8)) else {
                require(false, "the error reply is not a JSON object: \(e.json.debugDescription)")
                return
            }
            require(members.first?.0 == "error", "the error reply has no error member: \(e.json.debugDescription)")
            if let field = e.field {
                require(members.contains { $0.0 == "field" && $0.1 == .string(field) }, "the reply does not name \(field.debugDescription)")
            }
        case .success(let definition):
            let allowed = ServiceJSON.fields(mode)
            for f in definition.fields {
                guard let kind = allowed.first(where: { $0.name == f.key })?.kind else {
                    require(false, "accepted a field that is not allowed: \(f.key.debugDescription)")
                    return
                }
                switch (kind, f.value) {
                case (.string, .string), (.bool, .bool), (.integer, .integer): break
                default: require(false, "\(f.key) accepted as \(f.value)")
                }
            }
            let token = definition.fields.first { $0.key == "token" }?.value
            require(token != nil && token != .string(""), "accepted without a token")
            applied(definition, mode: mode)
        }
    }

    static let base = """
        [server]
        bind_addr = "127.0.0.1:2333"
        [client]
        remote_addr = "127.0.0.1:2333"
        """
    static let config = try! Config.parse(base, file: "base.toml")

    /// The definition as the API applies it: through the config file's own reader.
    static func applied(_ definition: ServiceDefinition, mode: Mode) {
        let token: String
        let name: String
        do throws(ConfigError) {
            switch mode {
            case .server:
                let s = try config.server!.service(from: definition, file: "api")
                (token, name) = (s.token.value, s.name)
            case .client:
                let s = try config.client!.service(from: definition, file: "api")
                (token, name) = (s.token.value, s.name)
            }
        } catch {
            requireOneLine(error.description, "ConfigError")
            require(error.description.hasPrefix("api: "), "error does not name its source: \(error.description)")
            return
        }
        require(name == "svc", "service filed as \(name.debugDescription)")
        require(definition.fields.contains { $0.key == "token" && $0.value == .string(token) }, "the token changed on the way")
    }

    static func pathSegment(_ bytes: [UInt8]) {
        let segment = Substring(String(decoding: bytes, as: UTF8.self))
        let decoded = ServiceJSON.percentDecoded(segment)
        require(
            decoded == independentlyDecoded(Array(segment.utf8)),
            "\(segment.debugDescription) decoded to \(decoded.debugDescription)")
        if let decoded {
            let check = Result { () throws(APIError) in try ServiceJSON.checkName(decoded) }
            if case .failure(let e) = check {
                require(e.status == 400 && e.field == "name", "a name refused as \(e)")
                requireOneLine(e.message, "APIError")
            }
        }
    }

    static func independentlyDecoded(_ utf8: [UInt8]) -> String? {
        func hexValue(_ b: UInt8) -> UInt8? {
            let lower = (0x41...0x46).contains(b) ? b | 0x20 : b
            return Array("0123456789abcdef".utf8).firstIndex(of: lower).map(UInt8.init)
        }
        var out: [UInt8] = []
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "/") { return nil }
            if utf8[i] == UInt8(ascii: "%") {
                guard i + 2 < utf8.count, let h = hexValue(utf8[i + 1]), let l = hexValue(utf8[i + 2]) else { return nil }
                out.append(h * 16 + l)
                i += 3
            } else {
                out.append(utf8[i])
                i += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    static func bearer(_ bytes: [UInt8]) {
        let secret = "s3cret-Token"
        let token = BearerToken(secret)
        let header = String(decoding: bytes, as: UTF8.self)
        let words = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
        var expected = false
        if words.count == 2, words[0].lowercased() == "bearer" {
            expected = words[1].drop { $0 == " " } == secret
        }
        require(token.accepts(header) == expected, "Authorization \(header.debugDescription): accepts \(!expected)")
        require(token.accepts("Bearer " + secret), "the right token is refused")
    }

    /// JSON text for `value`, written here rather than with the API's writer, so that a bug in one
    /// is not hidden by the same bug in the other (strings go through the writer's quoting, which
    /// is the part under test).
    static func encode(_ value: JSON) -> String {
        switch value {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .integer(let i): return String(i)
        case .number(let text): return text
        case .string(let s): return JSONObjectWriter.quoted(s)
        case .array(let items): return "[" + items.map(encode).joined(separator: ",") + "]"
        case .object(let members):
            return "{" + members.map { JSONObjectWriter.quoted($0.0) + ":" + encode($0.1) }.joined(separator: ",") + "}"
        }
    }
}
