// A config file that cannot be used, said in one line naming the file and the key.

/// A configuration problem; `description` is the one line to print:
/// `<file>: <full.key.path>: <what is wrong>` (or `<file>: <what is wrong>` when no single key is at fault).
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    /// The full dotted key path, e.g. `client.services.ssh.token`; nil for file-level problems.
    public var key: String?
    public var message: String

    /// Control characters in the key or message (a value quoted from the file or from an API body
    /// may hold a newline) are escaped, so that the error stays one line.
    public init(file: String, key: String?, message: String) {
        self.file = file
        self.key = key.map(Self.oneLine)
        self.message = Self.oneLine(message)
    }

    static func oneLine(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return text }
        var out = ""
        for u in text.unicodeScalars {
            switch u {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20 || u.value == 0x7F: out += "\\u{\(String(u.value, radix: 16))}"
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }

    public var description: String {
        if let key { return "\(file): \(key): \(message)" }
        return "\(file): \(message)"
    }
}
