// A config file that cannot be used, said in one line naming the file and the key.

/// A configuration problem; `description` is the one line to print:
/// `<file>: <full.key.path>: <what is wrong>` (or `<file>: <what is wrong>` when no single key is at fault).
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    /// The full dotted key path, e.g. `client.services.ssh.token`; nil for file-level problems.
    public var key: String?
    public var message: String

    public init(file: String, key: String?, message: String) {
        self.file = file
        self.key = key
        self.message = message
    }

    public var description: String {
        if let key { return "\(file): \(key): \(message)" }
        return "\(file): \(message)"
    }
}
