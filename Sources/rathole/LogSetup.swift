import Glibc
import Logging

/// Log lines in the shape of upstream rathole's (tracing):
/// `2026-11-25T19:30:36.123456Z  INFO rathole::server: Listening at 0.0.0.0:2333`.
struct RatholeLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = "\(Self.timestamp()) \(Self.levelText(event.level)) \(label): \(event.message)"
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        if !all.isEmpty {
            line += " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
        line += "\n"
        writeStderr(line)
    }

    private static func levelText(_ level: Logger.Level) -> String {
        switch level {
        case .trace: return "TRACE"
        case .debug: return "DEBUG"
        case .info: return " INFO"
        case .notice: return " INFO"
        case .warning: return " WARN"
        case .error: return "ERROR"
        case .critical: return "ERROR"
        }
    }

    private static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(tm.tm_year + 1900)-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T"
            + "\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(pad(Int32(ts.tv_nsec / 1000), 6))Z"
    }
}

/// The log level from RUST_LOG, as rathole reads it: a bare level (`debug`), or directives such as
/// `warn,rathole=trace` where the `rathole` one wins. Default info.
func logLevel(fromRustLog value: String?) -> Logger.Level {
    guard let value, !value.isEmpty else { return .info }
    var global: Logger.Level?
    var ours: Logger.Level?
    for directive in value.split(separator: ",") {
        let parts = directive.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: " ") }
        if parts.count == 1 {
            global = level(named: parts[0]) ?? global
        } else if parts[0] == "rathole" || parts[0].hasPrefix("rathole::") {
            ours = level(named: parts[1]) ?? ours
        }
    }
    return ours ?? global ?? .info
}

private func level(named name: String) -> Logger.Level? {
    switch name.lowercased() {
    case "trace": return .trace
    case "debug": return .debug
    case "info": return .info
    case "warn", "warning": return .warning
    case "error": return .error
    case "off": return .critical
    default: return nil
    }
}

private extension Substring {
    func trimmingCharacters(in set: Character) -> String {
        String(self.drop { $0 == set }.reversed().drop { $0 == set }.reversed())
    }
}

/// Writes to stderr in one write(2), so lines from different threads never interleave.
func writeStderr(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = Glibc.write(2, bytes.baseAddress, bytes.count) }
}
