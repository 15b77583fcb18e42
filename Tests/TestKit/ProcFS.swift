// What a process holds, read from /proc: its fds and sockets (matched to the kernel's TCP and UDP
// tables by inode), its memory. The program's own state, not its log: readiness checks and leak
// checks are built on it.
import Glibc

/// One TCP socket of a process, from /proc/<pid>/net/tcp and tcp6.
public struct TCPSocketEntry: Hashable, Sendable {
    public var inode: UInt64
    public var localPort: UInt16
    public var remotePort: UInt16
    public var ipv6: Bool
    /// The kernel's state number: 0x01 established, 0x0A listening.
    public var state: UInt8

    public var isListening: Bool { state == 0x0A }
    public var isEstablished: Bool { state == 0x01 }
}

public enum ProcFS {
    /// A file read to its end with read(2) (files in /proc report a size of 0).
    public static func readWhole(_ path: String) -> String? {
        readBytes(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The open fds of `pid` and what each links to (`socket:[inode]`, `pipe:[...]`, a path).
    public static func fdTargets(pid: pid_t) -> [Int32: String] {
        var result: [Int32: String] = [:]
        guard let d = opendir("/proc/\(pid)/fd") else { return result }
        defer { closedir(d) }
        let own = pid == getpid() ? dirfd(d) : -1
        var target = [CChar](repeating: 0, count: 512)
        while let e = readdir(d) {
            let name = direntName(e)
            guard let fd = Int32(name), fd != own else { continue }
            let n = readlink("/proc/\(pid)/fd/\(name)", &target, target.count - 1)
            // "?": closed between readdir and readlink.
            result[fd] = n > 0 ? String(decoding: target[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        }
        return result
    }

    /// Socket inodes of the open fds of `pid`, with the fd that holds each.
    public static func socketFDs(pid: pid_t) -> [UInt64: Int32] {
        var out: [UInt64: Int32] = [:]
        for (fd, link) in fdTargets(pid: pid) where link.hasPrefix("socket:[") {
            if let inode = UInt64(link.dropFirst(8).dropLast()) { out[inode] = fd }
        }
        return out
    }

    /// The TCP sockets `pid` holds (IPv4 and IPv6).
    public static func tcpSockets(pid: pid_t) -> [TCPSocketEntry] {
        let mine = socketFDs(pid: pid)
        return table(pid: pid, ["tcp", "tcp6"]).filter { mine[$0.inode] != nil }
    }

    /// The UDP sockets `pid` holds, with their local ports.
    public static func udpSockets(pid: pid_t) -> [TCPSocketEntry] {
        let mine = socketFDs(pid: pid)
        return table(pid: pid, ["udp", "udp6"]).filter { mine[$0.inode] != nil }
    }

    /// Whether some socket (of any process) listens on TCP `port`: unlike a probe connection, this
    /// makes no visitor.
    public static func tcpListening(port: UInt16) -> Bool {
        table(pid: getpid(), ["tcp", "tcp6"]).contains { $0.isListening && $0.localPort == port }
    }

    /// Rows of /proc/<pid>/net/<name> (the network namespace's tables, which on a shared machine
    /// hold thousands of other sockets): ports, state and inode, parsed byte by byte.
    private static func table(pid: pid_t, _ names: [String]) -> [TCPSocketEntry] {
        var out: [TCPSocketEntry] = []
        for name in names {
            guard let bytes = readBytes("/proc/\(pid)/net/\(name)") else { continue }
            bytes.withUnsafeBufferPointer { parseTable($0, ipv6: name.hasSuffix("6"), into: &out) }
        }
        return out
    }

    /// Fields (space separated): sl local:port remote:port st queues timer retrnsmt uid timeout inode.
    private static func parseTable(_ b: UnsafeBufferPointer<UInt8>, ipv6: Bool, into out: inout [TCPSocketEntry]) {
        var i = 0
        let n = b.count
        while i < n && b[i] != 10 { i += 1 }  // the header line
        while i < n {
            i += 1
            while i < n && b[i] == 32 { i += 1 }
            var field = 1  // sl (right-aligned in 4 columns, so the leading spaces vary)
            var lp: UInt64 = 0, rp: UInt64 = 0, st: UInt64 = 0, inode: UInt64 = 0
            var afterColon = false
            while i < n && b[i] != 10 {
                let c = b[i]
                if c == 32 {
                    while i < n && b[i] == 32 { i += 1 }
                    field += 1
                    afterColon = false
                    continue
                }
                switch field {
                case 2, 3:  // local and remote address: the port is the hex after the colon
                    if c == 58 {
                        afterColon = true
                    } else if afterColon {
                        if field == 2 { lp = lp << 4 | hexValue(c) } else { rp = rp << 4 | hexValue(c) }
                    }
                case 4: st = st << 4 | hexValue(c)
                case 10: inode = inode * 10 + UInt64(c &- 48)
                default: break
                }
                i += 1
            }
            if field >= 10 && inode != 0 {
                out.append(
                    TCPSocketEntry(
                        inode: inode, localPort: UInt16(truncatingIfNeeded: lp), remotePort: UInt16(truncatingIfNeeded: rp),
                        ipv6: ipv6, state: UInt8(truncatingIfNeeded: st)))
            }
        }
    }

    private static func hexValue(_ c: UInt8) -> UInt64 {
        c <= 57 ? UInt64(c &- 48) : UInt64((c | 0x20) &- 87)
    }

    private static func readBytes(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }

    /// A field of /proc/<pid>/status in KiB (VmRSS, VmData).
    public static func statusKiB(pid: pid_t, _ field: String) -> Int? {
        guard let text = readWhole("/proc/\(pid)/status") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "")
        }
        return nil
    }
}

extension RatholeProcess {
    /// Open file descriptors.
    public var fdCount: Int? {
        guard isRunning else { return nil }
        return ProcFS.fdTargets(pid: pid).count
    }

    /// Open sockets only: unlike the fd count, it ignores pooled pipes, the rings and eventfds.
    public var socketCount: Int? {
        guard isRunning else { return nil }
        return ProcFS.socketFDs(pid: pid).count
    }

    /// UDP sockets (IPv4 and IPv6).
    public var udpSocketCount: Int? {
        guard isRunning else { return nil }
        return ProcFS.udpSockets(pid: pid).count
    }

    public var tcpSockets: [TCPSocketEntry] { isRunning ? ProcFS.tcpSockets(pid: pid) : [] }

    /// Established TCP connections whose local port is `port` (accepted on it).
    public func connections(acceptedOn port: UInt16) -> Set<UInt64> {
        Set(tcpSockets.filter { $0.isEstablished && $0.localPort == port }.map(\.inode))
    }

    /// Established TCP connections to `port` (made by this process).
    public func connections(to port: UInt16) -> Set<UInt64> {
        Set(tcpSockets.filter { $0.isEstablished && $0.remotePort == port }.map(\.inode))
    }

    /// Whether this process has a socket listening on TCP `port`.
    public func listens(onTCP port: UInt16) -> Bool {
        tcpSockets.contains { $0.isListening && $0.localPort == port }
    }

    /// Whether this process has a UDP socket bound to `port`.
    public func bound(toUDP port: UInt16) -> Bool {
        isRunning && ProcFS.udpSockets(pid: pid).contains { $0.localPort == port }
    }

    /// Resident set size in KiB.
    public var rssKiB: Int? { isRunning ? ProcFS.statusKiB(pid: pid, "VmRSS") : nil }
    /// Data and heap the process has claimed, resident or not, in KiB: what a leak of untouched
    /// buffers grows.
    public var dataKiB: Int? { isRunning ? ProcFS.statusKiB(pid: pid, "VmData") : nil }
}

/// A directory entry's name, read in place: copying the entry (`d_name` is a 256-byte tuple) would
/// read past the end of a short entry, which AddressSanitizer reports.
func direntName(_ entry: UnsafeMutablePointer<dirent>) -> String {
    withUnsafePointer(to: &entry.pointee.d_name) { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
}
