// Support for the feature suites (UDP, encrypted transports, hot reload, proxies), on top of
// TestSupport.swift: config text with service types and transports, config rewrites (in place and
// by rename), other programs (rathole --genkey, the cert script, danted, tinyproxy), UDP sockets and
// a UDP echo service, a raw rathole client speaking the protocol by hand, a TCP relay that can flip
// one byte, and /proc accounting of a process's UDP sockets. Every name starts with `Feature`.
import ControlPlane
import Foundation
import Glibc
import XCTest

// MARK: - Configs

/// One service as both config files see it.
struct FeatureService {
    var name: String
    var type = "tcp"
    /// The server's public port for the service (its bind_addr).
    var port: UInt16
    var bindHost = "127.0.0.1"
    /// Where the client forwards to.
    var localPort: UInt16
    var localHost = "127.0.0.1"
    /// The service's own token; nil: the default_token.
    var token: String?

    init(_ name: String, type: String = "tcp", port: UInt16, localPort: UInt16, bindHost: String = "127.0.0.1",
         localHost: String = "127.0.0.1", token: String? = nil) {
        self.name = name
        self.type = type
        self.port = port
        self.localPort = localPort
        self.bindHost = bindHost
        self.localHost = localHost
        self.token = token
    }
}

enum FeatureConfig {
    static let token = "feature-secret"

    static func hostPort(_ host: String, _ port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// `[server]` with its services; `keys` are extra lines in `[server]`, `tables` extra tables
    /// (e.g. `[server.transport]`) at the end.
    static func server(controlPort: UInt16, services: [FeatureService], keys: String = "", tables: String = "",
                       token: String? = FeatureConfig.token) -> String {
        var t = "[server]\nbind_addr = \"127.0.0.1:\(controlPort)\"\n"
        if let token { t += "default_token = \"\(token)\"\n" }
        t += keys.isEmpty ? "" : keys + "\n"
        for s in services {
            t += "\n[server.services.\(s.name)]\ntype = \"\(s.type)\"\nbind_addr = \"\(hostPort(s.bindHost, s.port))\"\n"
            if let tok = s.token { t += "token = \"\(tok)\"\n" }
        }
        return t + (tables.isEmpty ? "" : "\n" + tables + "\n")
    }

    /// `[client]` with its services, connecting to 127.0.0.1:remotePort.
    static func client(remotePort: UInt16, services: [FeatureService], keys: String = "", tables: String = "",
                       token: String? = FeatureConfig.token) -> String {
        var t = "[client]\nremote_addr = \"127.0.0.1:\(remotePort)\"\n"
        if let token { t += "default_token = \"\(token)\"\n" }
        t += keys.isEmpty ? "" : keys + "\n"
        for s in services {
            t += "\n[client.services.\(s.name)]\ntype = \"\(s.type)\"\nlocal_addr = \"\(hostPort(s.localHost, s.localPort))\"\n"
            if let tok = s.token { t += "token = \"\(tok)\"\n" }
        }
        return t + (tables.isEmpty ? "" : "\n" + tables + "\n")
    }
}

// MARK: - Files, commands, keys, certificates, /proc

enum FeatureSupport {
    /// 64 MiB of pattern bytes, made once per test process.
    static let big = patternBytes(count: 64 << 20, seed: 0xB16_DA7A)

    /// Rewrites the file in place: same inode, truncated and written (what `>` in a shell does).
    static func rewriteInPlace(_ path: String, _ text: String) throws {
        let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { throw E2EError("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw E2EError("write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    /// Writes a temporary file next to `path` and renames it over `path` (what most editors do).
    static func replaceByRename(_ path: String, _ text: String) throws {
        let tmp = path + ".tmp-\(getpid())-\(Int(monoNow() * 1000))"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8)) else {
            throw E2EError("cannot write \(tmp)")
        }
        guard rename(tmp, path) == 0 else { throw E2EError("rename \(tmp) -> \(path): \(String(cString: strerror(errno)))") }
    }

    /// Runs a program to completion; stdout and stderr together.
    static func run(_ argv: [String], timeout: Double = 60) throws -> (status: Int32, output: String) {
        let out = "\(NSTemporaryDirectory())/feature-run-\(getpid())-\(UInt64(monoNow() * 1e6)).out"
        defer { unlink(out) }
        let pid = try spawnChild(argv, output: out)
        var status: Int32 = 0
        let finished = waitUntil(timeout: timeout, interval: 0.01) { waitpid(pid, &status, WNOHANG) == pid }
        if !finished {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
            throw E2EError("\(argv.joined(separator: " ")) did not finish within \(timeout)s")
        }
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, text)
    }

    /// A Noise key pair from `rathole --genkey`.
    static func genkey() throws -> (privateKey: String, publicKey: String) {
        let (status, out) = try run([E2EPaths.binary, "--genkey"])
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard status == 0, lines.count >= 5, lines[0] == "Private Key:", lines[3] == "Public Key:",
              lines[1].count == 44, lines[4].count == 44
        else { throw E2EError("rathole --genkey printed an unexpected text (status \(status)):\n\(out)") }
        return (lines[1], lines[4])
    }

    /// ca.pem, server.p12 (password), other-ca.pem in `dir`, from the fixture script.
    static func makeCerts(in dir: String, password: String) throws {
        let script = E2EPaths.packageRoot + "/Tests/ControlPlaneTests/Fixtures/make-test-certs.sh"
        let (status, out) = try run(["/bin/sh", script, dir, password], timeout: 120)
        guard status == 0, FileManager.default.fileExists(atPath: dir + "/server.p12") else {
            throw E2EError("make-test-certs.sh failed (status \(status)):\n\(out)")
        }
    }

    /// The path of a program, or a failure that says how to get it.
    static func requireProgram(_ name: String, package: String) throws -> String {
        for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
            let p = "\(d)/\(name)"
            if access(p, X_OK) == 0 { return p }
        }
        throw E2EError("\(name) is not installed: install the Debian package \(package) (scripts/install-deps does)")
    }

    /// Socket inodes of the open fds of `pid`.
    static func socketInodes(pid: pid_t) -> Set<UInt64> {
        var inodes = Set<UInt64>()
        guard let d = opendir("/proc/\(pid)/fd") else { return inodes }
        defer { closedir(d) }
        var target = [CChar](repeating: 0, count: 256)
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix(".") { continue }
            let n = readlink("/proc/\(pid)/fd/\(name)", &target, target.count - 1)
            guard n > 0 else { continue }
            let link = String(decoding: target[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if link.hasPrefix("socket:["), let inode = UInt64(link.dropFirst(8).dropLast()) { inodes.insert(inode) }
        }
        return inodes
    }

    /// How many UDP sockets (IPv4 and IPv6) the process has open: its socket fds whose inode is in
    /// /proc/<pid>/net/udp or udp6.
    static func udpSocketCount(pid: pid_t) -> Int? {
        guard pid > 0, kill(pid, 0) == 0 else { return nil }
        let mine = socketInodes(pid: pid)
        var udp = Set<UInt64>()
        for table in ["udp", "udp6"] {
            guard let text = readWhole("/proc/\(pid)/net/\(table)") else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                if fields.count > 9, let inode = UInt64(fields[9]) { udp.insert(inode) }
            }
        }
        return mine.intersection(udp).count
    }

    /// A file read to its end with read(2) (files in /proc report a size of 0).
    static func readWhole(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// nil when `got` is a prefix of `sent`, else the offset of the first byte that differs (or
    /// `sent.count` when `got` is longer).
    static func firstMismatch(_ got: [UInt8], prefixOf sent: [UInt8]) -> Int? {
        if got.count > sent.count { return sent.count }
        return got.withUnsafeBufferPointer { g in
            sent.withUnsafeBufferPointer { s in
                if g.isEmpty || memcmp(g.baseAddress!, s.baseAddress!, g.count) == 0 { return nil }
                for i in 0..<g.count where g[i] != s[i] { return i }
                return nil
            }
        }
    }

    /// Sends `data` to an echo service through `port` (on another thread) while reading the echo;
    /// throws unless every byte comes back in order (compared by SHA-256, then located).
    static func echoTransfer(port: UInt16, data: [UInt8], timeout: Double = 120) throws {
        let c = try Conn.connect(port: port)
        defer { c.close() }
        let sendError = Locked<String?>(nil)
        let sent = DispatchSemaphore(value: 0)
        let sender = Thread {
            data.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let end = min(raw.count, offset + (1 << 20))
                    do { try c.send(raw: UnsafeRawBufferPointer(rebasing: raw[offset..<end])) } catch {
                        sendError.withLock { $0 = "send failed at \(offset): \(error)" }
                        break
                    }
                    offset = end
                }
            }
            sent.signal()
        }
        sender.stackSize = 1 << 20
        sender.start()
        let back: [UInt8]
        do {
            back = try c.readExact(data.count, timeout: timeout)
        } catch {
            c.close()
            sent.wait()
            throw E2EError("echo of \(data.count) bytes: \(error)\(sendError.get.map { " (\($0))" } ?? "")")
        }
        sent.wait()
        if let e = sendError.get { throw E2EError(e) }
        if Digest.sha256(back) != Digest.sha256(data) {
            throw E2EError("echo of \(data.count) bytes differs from what was sent, first at offset \(firstMismatch(back, prefixOf: data) ?? -1)")
        }
    }

    /// `count` connections at once through `port` to an echo service, each with its own bytes,
    /// written and read back in turns, then half-closing and waiting for the EOF (or with
    /// `resetting`, closing with a reset); returns the failures.
    static func concurrentEchoes(port: UInt16, count: Int, bytesEach: Int = 48 << 10, resetting: Bool = false,
                                 timeout: Double = 90) -> [String] {
        let failures = Locked<[String]>([])
        let finished = runConcurrently(count, timeout: timeout) { i in
            do {
                let c = try Conn.connect(port: port)
                defer { c.close() }
                let payload = patternBytes(count: bytesEach + i * 31, seed: UInt64(7000 + i))
                var offset = 0
                while offset < payload.count {
                    let chunk = Array(payload[offset..<min(payload.count, offset + 16384)])
                    try c.send(chunk)
                    let back = try c.readExact(chunk.count, timeout: 30)
                    if back != chunk { throw E2EError("wrong bytes at offset \(offset)") }
                    offset += chunk.count
                }
                if resetting {
                    c.reset()
                    return
                }
                c.shutdownWrite()
                if c.readSome(timeout: 30) != .eof { throw E2EError("no EOF after half-close") }
            } catch {
                failures.withLock { $0.append("connection \(i): \(error)") }
            }
        }
        if !finished { failures.withLock { $0.append("not all \(count) connections finished within \(timeout)s") } }
        return failures.get
    }

    /// Tries an echo through `port` until it works or `timeout` passes; returns the seconds it took,
    /// or nil. Each attempt is a fresh visitor.
    static func secondsUntilForwarding(port: UInt16, timeout: Double) -> Double? {
        let start = monoNow()
        var attempt = 0
        while monoNow() - start < timeout {
            attempt += 1
            let payload = Array("feature probe \(attempt)".utf8)
            if let c = try? Conn.connect(port: port) {
                defer { c.close() }
                if (try? c.send(payload)) != nil,
                   let back = try? c.readExact(payload.count, timeout: max(0.2, timeout - (monoNow() - start))),
                   back == payload
                {
                    return monoNow() - start
                }
            }
            sleepSeconds(0.05)
        }
        return nil
    }

    /// True once connecting to 127.0.0.1:port is refused (nothing listens), within `timeout`.
    static func waitRefused(port: UInt16, timeout: Double) -> Bool {
        waitUntil(timeout: timeout, interval: 0.1) {
            guard let c = try? Conn.connect(port: port) else { return true }
            c.close()
            return false
        }
    }

    /// Whether some socket listens on TCP `port` (any address), from /proc/net/tcp and tcp6: a
    /// check that, unlike a probe connection, does not make a visitor.
    static func tcpListening(port: UInt16) -> Bool {
        let hexPort = String(format: "%04X", Int(port))
        for table in ["tcp", "tcp6"] {
            guard let text = readWhole("/proc/self/net/\(table)") else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                if fields.count > 3, fields[3] == "0A", fields[1].hasSuffix(":" + hexPort) { return true }
            }
        }
        return false
    }

    /// The log lines that contain `text`.
    static func lines(of log: String, containing text: String) -> [String] {
        log.split(separator: "\n").map(String.init).filter { $0.contains(text) }
    }
}

// MARK: - A test case that also owns other programs and helpers

class FeatureTestCase: E2ETestCase {
    private var cleanups: [() -> Void] = []
    private var externals: [FeatureProcess] = []

    /// Runs at tearDown (in reverse order), failed or not.
    func featureCleanup(_ body: @escaping () -> Void) { cleanups.append(body) }

    /// Another program, stopped (with its process group) at tearDown; its output goes to <dir>/<name>.log.
    func featureProgram(_ name: String, _ argv: [String]) -> FeatureProcess {
        let p = FeatureProcess(name: name, argv: argv, logPath: "\(dir)/\(name).log")
        externals.append(p)
        return p
    }

    override func tearDown() {
        for c in cleanups.reversed() { c() }
        for p in externals { p.stop() }
        if (testRun?.totalFailureCount ?? 0) > 0 {
            for p in externals { print("===== log of \(p.name) (\(p.argv.joined(separator: " "))):\n\(p.log)") }
        }
        cleanups = []
        externals = []
        super.tearDown()
    }

    /// A rathole process whose config file is a symlink into <dir>/real/: edits of the real file
    /// are invisible to the config watcher (it watches the symlink's directory), so only SIGHUP
    /// picks them up. Returns the process and the real file's path.
    func ratholeBehindSymlink(_ name: String, config: String) throws -> (RatholeProcess, String) {
        let p = rathole(name, config: config)
        let realDir = "\(dir)/real"
        try FileManager.default.createDirectory(atPath: realDir, withIntermediateDirectories: true)
        let real = "\(realDir)/\(name).toml"
        guard rename(p.configPath, real) == 0, symlink(real, p.configPath) == 0 else {
            throw E2EError("cannot move \(p.configPath) behind a symlink: \(String(cString: strerror(errno)))")
        }
        return (p, real)
    }

    /// A visitor through `publicPort` gets no bytes within `seconds`, and `local` sees no connection.
    func featureAssertNothingForwarded(publicPort: UInt16, local: LocalService, seconds: Double = 3,
                                       file: StaticString = #filePath, line: UInt = #line) throws {
        let v = try Conn.connect(port: publicPort)
        defer { v.close() }
        try? v.send("is anybody there?")
        if case .data(let d) = v.readSome(timeout: seconds) {
            XCTFail("the visitor got bytes: \(hexString(d.prefix(64)))", file: file, line: line)
        }
        XCTAssertEqual(local.accepted, 0, "the local service must see no connection", file: file, line: line)
    }
}

// MARK: - Other programs

/// A program other than rathole (danted, tinyproxy), in its own process group so that its children
/// are stopped with it.
final class FeatureProcess: @unchecked Sendable {
    let name: String
    let argv: [String]
    let logPath: String
    private(set) var pid: pid_t = 0
    private var reaped = false

    init(name: String, argv: [String], logPath: String) {
        self.name = name
        self.argv = argv
        self.logPath = logPath
    }

    func start() throws {
        pid = try spawnChild(argv, output: logPath, truncate: false, ownProcessGroup: true)
        reaped = false
    }

    var isRunning: Bool {
        guard pid > 0, !reaped else { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            reaped = true
            return false
        }
        return true
    }

    /// SIGTERM to the process group, then SIGKILL if it lingers; reaps the leader.
    func stop() {
        guard pid > 0 else { return }
        if isRunning {
            kill(-pid, SIGTERM)
            if !waitUntil(timeout: 3, interval: 0.02, { !isRunning }) {
                kill(-pid, SIGKILL)
                _ = waitUntil(timeout: 5, interval: 0.02) { !isRunning }
            }
        }
        // Children that outlived the leader.
        kill(-pid, SIGKILL)
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}

// MARK: - UDP

/// A UDP socket bound to 127.0.0.1 or [::1] (kernel-chosen port); every receive has a timeout.
final class FeatureUDPSocket: @unchecked Sendable {
    let fd: Int32
    let ipv6: Bool
    let port: UInt16
    private let closed = Locked(false)

    init(ipv6: Bool = false, port: UInt16 = 0) throws {
        self.ipv6 = ipv6
        let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw E2EError("udp socket: \(String(cString: strerror(errno)))") }
        var size: Int32 = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var storage = FeatureUDPSocket.loopback(ipv6: ipv6, port: port)
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, FeatureUDPSocket.length(ipv6)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw E2EError("udp bind \(ipv6 ? "[::1]" : "127.0.0.1"):\(port): \(String(cString: strerror(e)))")
        }
        var bound = sockaddr_in6()
        var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        self.fd = fd
        // sin_port and sin6_port sit at the same offset.
        self.port = UInt16(bigEndian: bound.sin6_port)
    }

    deinit { close() }

    static func length(_ ipv6: Bool) -> socklen_t {
        socklen_t(ipv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    }

    /// 127.0.0.1:port or [::1]:port, in a sockaddr_in6-sized storage.
    static func loopback(ipv6: Bool, port: UInt16) -> sockaddr_in6 {
        var s = sockaddr_in6()
        if ipv6 {
            s.sin6_family = sa_family_t(AF_INET6)
            s.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &s.sin6_addr) { $0[15] = 1 }
        } else {
            var v4 = loopbackAddress(port: port)
            withUnsafeMutableBytes(of: &s) { dst in withUnsafeBytes(of: &v4) { dst.copyMemory(from: $0) } }
        }
        return s
    }

    /// Sends one datagram to the loopback address of this socket's family, port `port`.
    func send(_ bytes: [UInt8], toPort port: UInt16) throws {
        var to = FeatureUDPSocket.loopback(ipv6: ipv6, port: port)
        try send(bytes, to: &to, length: FeatureUDPSocket.length(ipv6))
    }

    func send(_ bytes: [UInt8], to address: inout sockaddr_in6, length: socklen_t) throws {
        let n = bytes.withUnsafeBytes { raw in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, raw.baseAddress, raw.count, 0, $0, length) }
            }
        }
        guard n == bytes.count else { throw E2EError("sendto (\(bytes.count) bytes): \(String(cString: strerror(errno)))") }
    }

    /// One datagram and its sender, or nil after `timeout` seconds.
    func receiveFrom(timeout: Double) -> (bytes: [UInt8], from: sockaddr_in6, length: socklen_t)? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = monoNow() + timeout
        while true {
            let rc = poll(&p, 1, Int32(max(0, deadline - monoNow()) * 1000))
            if rc == 0 { return nil }
            if rc < 0 { if errno == EINTR { continue }; return nil }
            var buf = [UInt8](repeating: 0, count: 65536)
            var from = sockaddr_in6()
            var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
            let n = buf.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT), $0, &len)
                    }
                }
            }
            if n >= 0 { return (Array(buf[0..<n]), from, len) }
            if errno == EAGAIN || errno == EINTR { continue }
            return nil
        }
    }

    func receive(timeout: Double) -> [UInt8]? { receiveFrom(timeout: timeout)?.bytes }

    /// Sends `payload` to `port` and waits for a datagram back, up to `attempts` times (UDP may
    /// drop, and the tunnel may not be ready yet); returns the first datagram that came back.
    func roundTrip(_ payload: [UInt8], toPort port: UInt16, attempts: Int = 3, timeout: Double = 3) -> [UInt8]? {
        for _ in 0..<attempts {
            guard (try? send(payload, toPort: port)) != nil else { return nil }
            if let back = receive(timeout: timeout) { return back }
        }
        return nil
    }

    func close() {
        let first = closed.withLock { c -> Bool in
            if c { return false }
            c = true
            return true
        }
        if first { Glibc.close(fd) }
    }
}

/// A UDP echo service on 127.0.0.1 or [::1]: every datagram goes back to its sender. Counts the
/// datagrams and the distinct senders (the client's per-visitor sockets).
final class FeatureUDPEcho: @unchecked Sendable {
    let socket: FeatureUDPSocket
    var port: UInt16 { socket.port }
    private let state = Locked<(datagrams: Int, senders: Set<UInt16>, stopped: Bool)>((0, [], false))
    private let done = DispatchSemaphore(value: 0)

    init(ipv6: Bool = false) throws {
        socket = try FeatureUDPSocket(ipv6: ipv6)
        let t = Thread { [self] in loop() }
        t.start()
    }

    var datagrams: Int { state.get.datagrams }
    var senders: Set<UInt16> { state.get.senders }

    private func loop() {
        defer { done.signal() }
        while !state.get.stopped {
            guard let received = socket.receiveFrom(timeout: 0.2) else { continue }
            var from = received.from
            state.withLock {
                $0.datagrams += 1
                $0.senders.insert(UInt16(bigEndian: from.sin6_port))
            }
            try? socket.send(received.bytes, to: &from, length: received.length)
        }
    }

    func stop() {
        let first = state.withLock { s -> Bool in
            if s.stopped { return false }
            s.stopped = true
            return true
        }
        if first {
            done.wait()
            socket.close()
        }
    }
}

// MARK: - A rathole client by hand

/// The client side of the rathole protocol written out byte by byte, to act as a (misbehaving)
/// client.
enum FeatureRawClient {
    static func hello(tag: UInt32, digest: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: tag.littleEndian) { Array($0) } + [1] + digest
    }

    /// Control channel handshake for `service`; returns the connection, the Ack and the session key.
    static func handshake(port: UInt16, service: String, token: String) throws -> (conn: Conn, ack: UInt32, sessionKey: [UInt8]) {
        let c = try Conn.connect(port: port)
        try c.send(hello(tag: 0, digest: Digest.sha256(Array(service.utf8)).bytes))
        let reply = try c.readExact(37, timeout: 10)
        guard reply[0..<5] == [0, 0, 0, 0, 1] else { throw E2EError("unexpected server Hello \(hexString(reply))") }
        let key = Digest.sha256(Array(token.utf8) + Array(reply[5...])).bytes
        try c.send(key)
        let ack = try c.readExact(4, timeout: 10)
        return (c, ack.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }, key)
    }

    /// A data channel: the Hello with the session key.
    static func dataChannel(port: UInt16, sessionKey: [UInt8]) throws -> Conn {
        let c = try Conn.connect(port: port)
        try c.send(hello(tag: 1, digest: sessionKey))
        return c
    }

    /// A UDP frame as the protocol lays it out: u8 12, u32 tag 0, IPv4 address bytes, u16 LE port,
    /// u16 LE length, payload.
    static func ipv4Frame(port: UInt16, length: UInt16? = nil, payload: [UInt8]) -> [UInt8] {
        let len = length ?? UInt16(payload.count)
        return [12, 0, 0, 0, 0, 127, 0, 0, 1, UInt8(port & 0xff), UInt8(port >> 8), UInt8(len & 0xff), UInt8(len >> 8)] + payload
    }
}

// MARK: - A TCP relay that can flip one byte

/// Forwards connections from its port to 127.0.0.1:targetPort. With `flipAt`, flips (xor 0x20) the
/// byte at that offset of one direction of every connection that gets that far.
final class FeatureRelay: @unchecked Sendable {
    enum Direction: Sendable {
        /// From whoever connects to the relay (the client) to the target (the server).
        case toTarget
        case fromTarget
    }

    let listener: Listener
    let targetPort: UInt16
    let flipAt: (direction: Direction, offset: Int)?
    var port: UInt16 { listener.port }
    private let state = Locked<(flips: [String], fds: [Int32], stopped: Bool)>(([], [], false))

    init(targetPort: UInt16, flipAt: (direction: Direction, offset: Int)? = nil) throws {
        self.listener = try Listener()
        self.targetPort = targetPort
        self.flipAt = flipAt
        let t = Thread { [self] in acceptLoop() }
        t.start()
    }

    /// One line per flipped byte: which connection, which direction, the byte before and after.
    var flips: [String] { state.get.flips }

    private func acceptLoop() {
        var index = 0
        while let fd = listener.acceptBlocking() {
            index += 1
            let inbound = Conn(fd: fd)
            guard let outbound = try? Conn.connect(port: targetPort) else {
                inbound.close()
                continue
            }
            let keep = state.withLock { s -> Bool in
                if s.stopped { return false }
                s.fds += [inbound.fd, outbound.fd]
                return true
            }
            if !keep {
                inbound.close()
                outbound.close()
                return
            }
            let n = index
            for (from, to, direction) in [(inbound, outbound, Direction.toTarget), (outbound, inbound, Direction.fromTarget)] {
                let t = Thread { [self] in pump(from, to, direction, connection: n) }
                t.stackSize = 1 << 20
                t.start()
            }
        }
    }

    private func pump(_ from: Conn, _ to: Conn, _ direction: Direction, connection: Int) {
        var offset = 0
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(from.fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                if n == 0 { to.shutdownWrite() } else { Glibc.shutdown(to.fd, Int32(SHUT_RDWR)) }
                break
            }
            if let flip = flipAt, flip.direction == direction, flip.offset >= offset, flip.offset < offset + n {
                let i = flip.offset - offset
                let before = buf[i]
                buf[i] ^= 0x20
                let line = "connection \(connection) \(direction) offset \(flip.offset): \(before) -> \(buf[i])"
                state.withLock { $0.flips.append(line) }
            }
            offset += n
            let sent = buf.withUnsafeBytes { raw in (try? to.send(raw: UnsafeRawBufferPointer(rebasing: raw[0..<n]))) != nil }
            if !sent {
                Glibc.shutdown(from.fd, Int32(SHUT_RDWR))
                break
            }
        }
    }

    func stop() {
        let fds = state.withLock { s -> [Int32] in
            s.stopped = true
            return s.fds
        }
        listener.shutdown()
        for fd in fds { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }
}

// MARK: - A TCP service that records what it receives

/// Records every byte each connection receives until EOF or an error; `finished` counts the
/// connections that ended.
final class FeatureRecorder: @unchecked Sendable {
    let received = Locked<[[UInt8]]>([])
    let finished = Locked(0)
    private(set) var service: LocalService!

    init() throws {
        service = try LocalService(name: "recorder") { [received, finished] conn in
            let index = received.withLock { r -> Int in
                r.append([])
                return r.count - 1
            }
            loop: while true {
                switch conn.readSome(max: 1 << 18, timeout: 60) {
                case .data(let d): received.withLock { $0[index] += d }
                case .eof, .error, .timeout: break loop
                }
            }
            finished.withLock { $0 += 1 }
        }
    }
}

// MARK: - A connection kept busy across a reload

/// Streams chunks to an echo service through one visitor connection, checking every echo, with a
/// pause between chunks, until stopped.
final class FeatureStreamer: @unchecked Sendable {
    let conn: Conn
    private let state = Locked<(bytes: Int, chunks: Int, error: String?, stop: Bool)>((0, 0, nil, false))
    private let done = DispatchSemaphore(value: 0)

    init(port: UInt16, chunkSize: Int = 256 << 10, pause: Double = 0.01) throws {
        conn = try Conn.connect(port: port)
        let t = Thread { [self] in
            defer { done.signal() }
            var seed: UInt64 = 77
            while !state.get.stop {
                seed += 1
                let chunk = patternBytes(count: chunkSize, seed: seed)
                do {
                    try conn.send(chunk)
                    let back = try conn.readExact(chunk.count, timeout: 20)
                    if back != chunk {
                        let at = FeatureSupport.firstMismatch(back, prefixOf: chunk) ?? -1
                        throw E2EError("chunk \(seed): echo differs at offset \(at)")
                    }
                } catch {
                    state.withLock { $0.error = "after \($0.bytes) bytes: \(error)" }
                    return
                }
                state.withLock {
                    $0.bytes += chunk.count
                    $0.chunks += 1
                }
                sleepSeconds(pause)
            }
        }
        t.stackSize = 1 << 20
        t.start()
    }

    var bytes: Int { state.get.bytes }
    var error: String? { state.get.error }

    /// Stops after the chunk in flight; returns the bytes that went through intact and the error, if any.
    func stop() -> (bytes: Int, error: String?) {
        let first = state.withLock { s -> Bool in
            defer { s.stop = true }
            return !s.stop
        }
        if first {
            done.wait()
            conn.close()
        }
        let s = state.get
        return (s.bytes, s.error)
    }
}
