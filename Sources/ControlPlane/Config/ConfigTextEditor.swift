// Only for the HTTP API: left out of builds without the AdminAPI package trait.
#if AdminAPI

// Edits one service's table in the text of a config file, line by line, so that comments, blank
// lines and the order of everything else stay as the operator wrote them. Only the simple layout
// is handled (a `[server.services.NAME]` header followed by one-line `key = value` pairs); for
// anything else the editor gives up and the caller falls back to TOMLKit, which drops comments.
// The caller checks the result by parsing it, so a layout misread here cannot corrupt a file.

enum ConfigTextEditor {
    /// `text` with the table of service `name` under `section` replaced by `fields`, or removed
    /// when `fields` is nil; nil when the text is laid out beyond what this editor handles.
    static func replacingService(
        _ name: String, in section: Mode, with fields: [ServiceDefinition.Field]?,
        text: String
    ) -> String? {
        var lines = splitLines(text)
        let path = [section.rawValue, "services", name]
        let headers = lines.indices.compactMap { i in headerPath(lines[i]).map { (index: i, path: $0) } }
        guard let found = headers.firstIndex(where: { $0.path == path }) else {
            guard let fields else { return nil }
            return adding(path, fields, to: &lines, headers: headers, section: section.rawValue)
        }
        let start = headers[found].index
        let end = found + 1 < headers.count ? headers[found + 1].index : lines.count
        guard let fields else {
            removeTable(from: start, to: end, in: &lines)
            return lines.joined()
        }
        guard let body = rewrite(Array(lines[(start + 1)..<end]), with: fields) else { return nil }
        lines.replaceSubrange((start + 1)..<end, with: body)
        return lines.joined()
    }

    // MARK: Editing

    /// A new table after the last table of its section (or at the end), after a blank line.
    private static func adding(
        _ path: [String], _ fields: [ServiceDefinition.Field], to lines: inout [String],
        headers: [(index: Int, path: [String])], section: String
    ) -> String {
        var at = lines.count
        if let last = headers.lastIndex(where: { $0.path.first == section }), last + 1 < headers.count {
            at = headers[last + 1].index
            while at > headers[last].index + 1 && isBlank(lines[at - 1]) { at -= 1 }
        }
        if at > 0 && !lines[at - 1].hasSuffix("\n") { lines[at - 1] += "\n" }
        var table = ["[\(formatKeyPath(path))]\n"] + fields.map { "\(formatKeyPath([$0.key])) = \($0.value.tomlText)\n" }
        if at > 0 && !isBlank(lines[at - 1]) { table.insert("\n", at: 0) }
        if at < lines.count && !isBlank(lines[at]) { table.append("\n") }
        lines.insert(contentsOf: table, at: at)
        return lines.joined()
    }

    /// Removes a table with the comment lines right above its header, and one of the blank lines
    /// that separated it from its neighbours.
    private static func removeTable(from start: Int, to end: Int, in lines: inout [String]) {
        var first = start
        while first > 0 && isComment(lines[first - 1]) { first -= 1 }
        lines.removeSubrange(first..<end)
        if first > 0 && isBlank(lines[first - 1]) && (first == lines.count || isBlank(lines[first])) {
            lines.remove(at: first - 1)
        }
    }

    /// A table's body with the new values: keys kept in place (and their comments), keys no longer
    /// set removed, new keys after the last key. Nil when a line is not a one-line `key = value`.
    private static func rewrite(_ body: [String], with fields: [ServiceDefinition.Field]) -> [String]? {
        var out: [String] = []
        var written = Set<String>()
        var lastKey = -1
        for line in body {
            if isBlank(line) || isComment(line) {
                out.append(line)
                continue
            }
            guard let pair = keyValue(line) else { return nil }
            guard let field = fields.first(where: { $0.key == pair.key }), !written.contains(pair.key) else { continue }
            written.insert(pair.key)
            out.append(pair.prefix + field.value.tomlText + pair.suffix)
            lastKey = out.count - 1
        }
        let missing = fields.filter { !written.contains($0.key) }.map { "\(formatKeyPath([$0.key])) = \($0.value.tomlText)\n" }
        if lastKey < 0 {
            // No key was kept: new keys right under the header, before comments and blank lines that
            // separate this table from the next.
            var at = 0
            while at < out.count && !isBlank(out[at]) { at += 1 }
            out.insert(contentsOf: missing, at: at)
        } else {
            out.insert(contentsOf: missing, at: lastKey + 1)
        }
        return out
    }

    // MARK: Reading lines

    static func splitLines(_ text: String) -> [String] {
        var lines: [String] = []
        var current = ""
        for scalar in text.unicodeScalars {
            current.unicodeScalars.append(scalar)
            if scalar == "\n" {
                lines.append(current)
                current = ""
            }
        }
        if !current.isEmpty { lines.append(current) }
        return lines
    }

    private static func isBlank(_ line: String) -> Bool {
        line.utf8.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
    }

    private static func isComment(_ line: String) -> Bool {
        line.utf8.first(where: { $0 != 0x20 && $0 != 0x09 }) == UInt8(ascii: "#")
    }

    /// The key path of a `[table]` header line; nil for any other line (arrays of tables included).
    static func headerPath(_ line: String) -> [String]? {
        var s = Scanner(line)
        s.skipSpaces()
        guard s.take(UInt8(ascii: "[")), s.peek != UInt8(ascii: "[") else { return nil }
        var path: [String] = []
        while true {
            s.skipSpaces()
            guard let key = s.key() else { return nil }
            path.append(key)
            s.skipSpaces()
            if s.take(UInt8(ascii: ".")) { continue }
            guard s.take(UInt8(ascii: "]")) else { return nil }
            break
        }
        return s.restIsCommentOrEnd() ? path : nil
    }

    /// A one-line `key = value`: the key, the text before the value (`key = `, as written) and
    /// after it (spaces, a comment, the line end). Nil for dotted keys, multi-line values,
    /// arrays and inline tables.
    static func keyValue(_ line: String) -> (key: String, prefix: String, suffix: String)? {
        var s = Scanner(line)
        s.skipSpaces()
        guard let key = s.key() else { return nil }
        s.skipSpaces()
        guard s.take(UInt8(ascii: "=")) else { return nil }
        s.skipSpaces()
        let valueStart = s.position
        guard s.simpleValue() else { return nil }
        let valueEnd = s.position
        guard s.restIsCommentOrEnd() else { return nil }
        let bytes = Array(line.utf8)
        return (key, String(decoding: bytes[..<valueStart], as: UTF8.self), String(decoding: bytes[valueEnd...], as: UTF8.self))
    }
}

/// Reads TOML tokens off one line.
private struct Scanner {
    let bytes: [UInt8]
    var position = 0

    init(_ line: String) { bytes = Array(line.utf8) }

    var peek: UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func take(_ byte: UInt8) -> Bool {
        guard peek == byte else { return false }
        position += 1
        return true
    }

    mutating func skipSpaces() {
        while let b = peek, b == 0x20 || b == 0x09 { position += 1 }
    }

    /// Spaces, then a comment or nothing, then the line end.
    mutating func restIsCommentOrEnd() -> Bool {
        skipSpaces()
        guard let b = peek else { return true }
        return b == UInt8(ascii: "#") || b == 0x0A || (b == 0x0D && position + 1 < bytes.count && bytes[position + 1] == 0x0A)
    }

    /// A bare, basic ("...") or literal ('...') key.
    mutating func key() -> String? {
        switch peek {
        case UInt8(ascii: "\"")?: return basicString()
        case UInt8(ascii: "'")?: return literalString()
        default:
            let start = position
            while let b = peek, isHostNameByte(b) && b != UInt8(ascii: ".") { position += 1 }
            return position > start ? String(decoding: bytes[start..<position], as: UTF8.self) : nil
        }
    }

    /// A one-line string, number, boolean or date: anything but arrays, inline tables and
    /// multi-line strings.
    mutating func simpleValue() -> Bool {
        switch peek {
        case UInt8(ascii: "\"")?:
            if bytes[position...].starts(with: "\"\"\"".utf8) { return false }
            return basicString() != nil
        case UInt8(ascii: "'")?:
            if bytes[position...].starts(with: "'''".utf8) { return false }
            return literalString() != nil
        case UInt8(ascii: "[")?, UInt8(ascii: "{")?, nil:
            return false
        default:
            let start = position
            while let b = peek, b != 0x20 && b != 0x09 && b != 0x0A && b != 0x0D && b != UInt8(ascii: "#") { position += 1 }
            return position > start
        }
    }

    private mutating func literalString() -> String? {
        position += 1
        let start = position
        while let b = peek, b != UInt8(ascii: "'"), b != 0x0A { position += 1 }
        guard take(UInt8(ascii: "'")) else { return nil }
        return String(decoding: bytes[start..<(position - 1)], as: UTF8.self)
    }

    private mutating func basicString() -> String? {
        position += 1
        var out: [UInt8] = []
        while let b = peek, b != 0x0A {
            position += 1
            if b == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            guard b == UInt8(ascii: "\\") else {
                out.append(b)
                continue
            }
            guard let e = peek else { return nil }
            position += 1
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(e)
            case UInt8(ascii: "u"), UInt8(ascii: "U"):
                let count = e == UInt8(ascii: "u") ? 4 : 8
                guard position + count <= bytes.count,
                    let value = UInt32(String(decoding: bytes[position..<(position + count)], as: UTF8.self), radix: 16),
                    let scalar = Unicode.Scalar(value)
                else { return nil }
                position += count
                out.append(contentsOf: String(Character(scalar)).utf8)
            default:
                return nil
            }
        }
        return nil
    }
}

#endif
