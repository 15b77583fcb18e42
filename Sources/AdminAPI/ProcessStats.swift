// Built with the AdminAPI package trait only (the default).
#if AdminAPI

import DataPlane
import Glibc

/// The process's own numbers for Prometheus' standard `process_*` metrics, read from /proc at each
/// scrape.
struct ProcessStats {
    var openFDs: Int?
    var maxFDs: Int?
    var residentBytes: Int?
    var virtualBytes: Int?
    var cpuSeconds: Double?
    var startTimeSeconds: Double?

    static func read() -> ProcessStats {
        var stats = ProcessStats()
        stats.openFDs = countOpenFDs()
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { stats.maxFDs = Int(limit.rlim_cur) }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let page = sysconf(Int32(_SC_PAGESIZE))
        // /proc/self/stat: "pid (comm) state ..."; comm may hold spaces, so fields count from its ')'.
        if let bytes = try? Files.read("/proc/self/stat"), let close = bytes.lastIndex(of: UInt8(ascii: ")")) {
            let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
            // fields[0] is field 3 (state): field n is fields[n - 3].
            func field(_ n: Int) -> Double? { n - 3 < fields.count ? Double(fields[n - 3]) : nil }
            if let user = field(14), let system = field(15), ticks > 0 { stats.cpuSeconds = (user + system) / ticks }
            if let start = field(22), ticks > 0, let boot = bootTime() { stats.startTimeSeconds = boot + start / ticks }
            stats.virtualBytes = field(23).map { Int($0) }
            if let pages = field(24) { stats.residentBytes = Int(pages) * page }
        }
        return stats
    }

    /// Entries of /proc/self/fd, less the one the listing itself holds open.
    private static func countOpenFDs() -> Int? {
        guard let dir = opendir("/proc/self/fd") else { return nil }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            // Through a pointer: copying the entry would read past a short one (AddressSanitizer).
            let first = withUnsafePointer(to: &entry.pointee.d_name) { UnsafeRawPointer($0).load(as: UInt8.self) }
            if first != UInt8(ascii: ".") { count += 1 }
        }
        return count - 1
    }

    /// Seconds since the epoch at boot (`btime` in /proc/stat).
    private static func bootTime() -> Double? {
        guard let bytes = try? Files.read("/proc/stat") else { return nil }
        for line in bytes.split(separator: UInt8(ascii: "\n")) where line.starts(with: "btime ".utf8) {
            return Double(String(decoding: line.dropFirst(6), as: UTF8.self))
        }
        return nil
    }
}

#endif
