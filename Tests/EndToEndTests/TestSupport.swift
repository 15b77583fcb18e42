// Support for the end-to-end tests: real `rathole` processes on loopback (spawned with posix_spawn,
// stderr to a log file per start), generated configs in a temp dir, free ports, blocking sockets
// with bounded waits, small local services (echo, sink, source, half-close) on threads, and /proc
// accounting (open fds, RSS) of a child process. No mocks: every byte goes through real sockets.
import ControlPlane
import Foundation
import Glibc
import XCTest

struct E2EError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Paths and time

enum E2EPaths {
    /// <package root>, from this file's path: <root>/Tests/EndToEndTests/TestSupport.swift.
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The binary under test: $RATHOLE_BIN, else <root>/.build/debug/rathole.
    static var binary: String {
        if let b = ProcessInfo.processInfo.environment["RATHOLE_BIN"], !b.isEmpty { return b }
        return packageRoot + "/.build/debug/rathole"
    }
}

/// Monotonic seconds.
func monoNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func sleepSeconds(_ s: Double) {
    guard s > 0 else { return }
    usleep(UInt32(min(s, 4000) * 1_000_000))
}

/// Polls `condition` until it holds or `timeout` seconds pass; returns whether it held.
@discardableResult
func waitUntil(timeout: Double, interval: Double = 0.05, _ condition: () -> Bool) -> Bool {
    let deadline = monoNow() + timeout
    while true {
        if condition() { return true }
        if monoNow() >= deadline { return false }
        sleepSeconds(interval)
    }
}

// MARK: - Bytes

func hexBytes(_ text: String) -> [UInt8] {
    let digits = Array(text.utf8).filter { !($0 == 32 || $0 == 10) }
    precondition(digits.count % 2 == 0, "odd hex string")
    func v(_ c: UInt8) -> UInt8 {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: preconditionFailure("bad hex digit")
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(digits.count / 2)
    var i = 0
    while i < digits.count {
        out.append(v(digits[i]) << 4 | v(digits[i + 1]))
        i += 2
    }
    return out
}

func hexString(_ bytes: some Collection<UInt8>) -> String {
    let d = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for b in bytes {
        out.append(d[Int(b >> 4)])
        out.append(d[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Deterministic pseudo-random bytes (xorshift64*), so both ends can agree without sharing state.
func patternBytes(count: Int, seed: UInt64) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var x = seed | 1
    out.withUnsafeMutableBytes { raw in
        let words = count / 8
        let p = raw.baseAddress!
        for i in 0..<words {
            x ^= x >> 12
            x ^= x << 25
            x ^= x >> 27
            p.storeBytes(of: x &* 0x2545_F491_4F6C_DD1D, toByteOffset: i * 8, as: UInt64.self)
        }
        for i in (words * 8)..<count {
            x ^= x >> 12
            x ^= x << 25
            x ^= x >> 27
            raw[i] = UInt8(truncatingIfNeeded: x)
        }
    }
    return out
}

func sha256Hex(_ bytes: [UInt8]) -> String { Digest.sha256(bytes).description }

// MARK: - Ports

enum Ports {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var handedOut = Set<UInt16>()

    /// A port that was free a moment ago (bound with port 0 and read back), never handed out twice
    /// by this process.
    static func free() -> UInt16 {
        while true {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
            precondition(fd >= 0, "socket: \(errno)")
            defer { close(fd) }
            var addr = loopbackAddress(port: 0)
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            precondition(rc == 0, "bind: \(errno)")
            let port = localPort(fd)
            let fresh = lock.withLock { handedOut.insert(port).inserted }
            if fresh { return port }
        }
    }
}

func loopbackAddress(port: UInt16) -> sockaddr_in {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return addr
}

func localPort(_ fd: Int32) -> UInt16 {
    var addr = sockaddr_in()
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return UInt16(bigEndian: addr.sin_port)
}

// MARK: - Blocking sockets with bounded waits

enum ReadResult: Equatable {
    case data([UInt8])
    case eof
    case timeout
    case error(Int32)
}

/// A connected TCP socket (blocking, close-on-exec). Every read takes a timeout.
final class Conn: @unchecked Sendable {
    let fd: Int32
    private let lock = NSLock()
    private var isClosed = false

    init(fd: Int32) {
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        // Writes must never hang a test forever.
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close() }

    /// Connects to 127.0.0.1:port; throws on refusal.
    static func connect(port: UInt16) throws -> Conn {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw E2EError("socket: errno \(errno)") }
        var addr = loopbackAddress(port: port)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            let e = errno
            Glibc.close(fd)
            throw E2EError("connect 127.0.0.1:\(port): \(String(cString: strerror(e)))")
        }
        return Conn(fd: fd)
    }

    /// Connects, retrying while refused, for up to `timeout` seconds.
    static func connect(port: UInt16, retryFor timeout: Double) throws -> Conn {
        let deadline = monoNow() + timeout
        while true {
            do { return try connect(port: port) } catch {
                if monoNow() >= deadline { throw error }
                sleepSeconds(0.05)
            }
        }
    }

    func send(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try send(raw: $0) }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(raw: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < raw.count {
            let n = Glibc.send(fd, raw.baseAddress! + done, raw.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                throw E2EError("send: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    /// Waits up to `timeout` seconds for the socket to become readable.
    func waitReadable(timeout: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = monoNow() + timeout
        while true {
            let left = max(0, deadline - monoNow())
            let rc = poll(&p, 1, Int32(left * 1000))
            if rc > 0 { return true }
            if rc == 0 { return false }
            if errno != EINTR { return true }
        }
    }

    /// One recv of up to `max` bytes, waiting at most `timeout` seconds.
    func readSome(max: Int = 65536, timeout: Double) -> ReadResult {
        guard waitReadable(timeout: timeout) else { return .timeout }
        var buf = [UInt8](repeating: 0, count: max)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, max, Int32(MSG_DONTWAIT)) }
            if n > 0 { return .data(Array(buf[0..<n])) }
            if n == 0 { return .eof }
            if errno == EINTR { continue }
            if errno == EAGAIN { return .timeout }
            return .error(errno)
        }
    }

    /// Exactly `count` bytes within `timeout` seconds overall.
    func readExact(_ count: Int, timeout: Double) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        let deadline = monoNow() + timeout
        while out.count < count {
            switch readSome(max: min(count - out.count, 1 << 20), timeout: max(0, deadline - monoNow())) {
            case .data(let d): out += d
            case .eof: throw E2EError("EOF after \(out.count) of \(count) bytes (got \(hexString(out.prefix(64))))")
            case .timeout: throw E2EError("timed out after \(out.count) of \(count) bytes (got \(hexString(out.prefix(64))))")
            case .error(let e): throw E2EError("recv error \(String(cString: strerror(e))) after \(out.count) of \(count) bytes")
            }
        }
        return out
    }

    /// Everything until EOF (or a reset), within `timeout` seconds overall.
    func readToEOF(timeout: Double, limit: Int = 256 << 20) throws -> [UInt8] {
        var out: [UInt8] = []
        let deadline = monoNow() + timeout
        while true {
            switch readSome(max: 1 << 20, timeout: max(0, deadline - monoNow())) {
            case .data(let d):
                out += d
                if out.count > limit { throw E2EError("more than \(limit) bytes") }
            case .eof: return out
            case .timeout: throw E2EError("no EOF within \(timeout)s (got \(out.count) bytes)")
            case .error(let e): throw E2EError("recv error \(String(cString: strerror(e))) after \(out.count) bytes")
            }
        }
    }

    /// Waits for the peer to close (EOF or reset) within `timeout`; returns what arrived before, or
    /// nil if the connection was still open at the deadline.
    func waitClosed(timeout: Double) -> [UInt8]? {
        var got: [UInt8] = []
        let deadline = monoNow() + timeout
        while true {
            switch readSome(timeout: max(0, deadline - monoNow())) {
            case .data(let d): got += d
            case .eof, .error: return got
            case .timeout: return nil
            }
        }
    }

    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Closes with a reset (RST) instead of a FIN.
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close()
    }

    func close() {
        let first = lock.withLock { () -> Bool in
            if isClosed { return false }
            isClosed = true
            return true
        }
        if first { Glibc.close(fd) }
    }
}

/// accept4(SOCK_CLOEXEC) is not imported into Swift; accept + FD_CLOEXEC under `spawnGuard` (read
/// side) so that no child is spawned in between and inherits the connection.
func acceptCloexec(_ listener: Int32) -> Int32 {
    spawnGuard.shared {
        let c = accept(listener, nil, nil)
        if c >= 0 { _ = fcntl(c, F_SETFD, FD_CLOEXEC) }
        return c
    }
}

/// Children are spawned under the exclusive side; fds without close-on-exec are made under the
/// shared side.
final class SpawnGuard: @unchecked Sendable {
    private var lock = pthread_rwlock_t()
    init() { pthread_rwlock_init(&lock, nil) }
    func shared<R>(_ body: () -> R) -> R {
        pthread_rwlock_rdlock(&lock)
        defer { pthread_rwlock_unlock(&lock) }
        return body()
    }
    func exclusive<R>(_ body: () -> R) -> R {
        pthread_rwlock_wrlock(&lock)
        defer { pthread_rwlock_unlock(&lock) }
        return body()
    }
}

let spawnGuard = SpawnGuard()

/// Starts a program with stdin from /dev/null, stdout and stderr into `output`, default signal
/// handling, and no other fd of this process: a socket another test left open must not live on
/// in a child (the UDP tests count a child's sockets). `posix_spawn_file_actions_addclosefrom_np`
/// is not imported into Swift, so every fd above 2 is marked close-on-exec first.
func spawnChild(
    _ argv: [String], output: String, truncate: Bool = true, environment: [String: String]? = nil,
    ownProcessGroup: Bool = false
) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND | (truncate ? O_TRUNC : 0), 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)

    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigmask(&attr, &noSignals)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for s in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&defaults, s) }
    posix_spawnattr_setsigdefault(&attr, &defaults)
    var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
    if ownProcessGroup {
        posix_spawnattr_setpgroup(&attr, 0)
        flags |= POSIX_SPAWN_SETPGROUP
    }
    posix_spawnattr_setflags(&attr, Int16(flags))

    let cargv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { cargv.forEach { free($0) } }
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment ?? [:] { env[k] = v }
    let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { envp.forEach { free($0) } }

    var child: pid_t = 0
    let rc = spawnGuard.exclusive { () -> Int32 in
        markOpenFilesCloseOnExec()
        return posix_spawnp(&child, argv[0], &actions, &attr, cargv, envp)
    }
    guard rc == 0 else { throw E2EError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
    return child
}

private func markOpenFilesCloseOnExec() {
    guard let dir = opendir("/proc/self/fd") else { return }
    defer { closedir(dir) }
    let own = dirfd(dir)
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let fd = Int32(name), fd > 2, fd != own {
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 && flags & FD_CLOEXEC == 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }
}

/// A listening socket on 127.0.0.1 (port 0 = kernel's choice).
final class Listener: @unchecked Sendable {
    let fd: Int32
    let port: UInt16

    init(port: UInt16 = 0, backlog: Int32 = 1024) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw E2EError("socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = loopbackAddress(port: port)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        // Non-blocking, so that accept never blocks while holding `spawnGuard` (accepted sockets
        // do not inherit O_NONBLOCK on Linux).
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        guard rc == 0, listen(fd, backlog) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw E2EError("bind/listen 127.0.0.1:\(port): \(String(cString: strerror(e)))")
        }
        self.fd = fd
        self.port = localPort(fd)
    }

    /// The next connection within `timeout` seconds, or nil.
    func accept(timeout: Double) -> Conn? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = monoNow() + timeout
        while true {
            let rc = poll(&p, 1, Int32(max(0, deadline - monoNow()) * 1000))
            if rc == 0 { return nil }
            if rc < 0 { if errno == EINTR { continue }; return nil }
            let c = acceptCloexec(fd)
            if c >= 0 { return Conn(fd: c) }
            if errno == EINTR || errno == ECONNABORTED || errno == EAGAIN { continue }
            return nil
        }
    }

    /// Waits for the next connection; nil once the listener is shut down.
    func acceptBlocking() -> Int32? {
        while true {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let rc = poll(&p, 1, 200)
            if stopped.get { return nil }
            if rc < 0 && errno != EINTR { return nil }
            if rc <= 0 { continue }
            let c = acceptCloexec(fd)
            if c >= 0 { return c }
            if errno == EINTR || errno == ECONNABORTED || errno == EAGAIN { continue }
            return nil
        }
    }

    private let stopped = Locked(false)

    func shutdown() {
        stopped.withLock { $0 = true }
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    deinit { Glibc.close(fd) }
}

/// Waits until something accepts connections on 127.0.0.1:port. Only for ports where a probe
/// connection is harmless (never a rathole service port: a probe there is a visitor).
func waitForPortOpen(_ port: UInt16, timeout: Double) -> Bool {
    waitUntil(timeout: timeout) { (try? Conn.connect(port: port)) != nil }
}

/// Runs `body(i)` for i in 0..<count on `count` threads at once; waits at most `timeout` seconds.
func runConcurrently(_ count: Int, timeout: Double, _ body: @escaping @Sendable (Int) -> Void) -> Bool {
    let group = DispatchGroup()
    for i in 0..<count {
        group.enter()
        let t = Thread {
            body(i)
            group.leave()
        }
        t.stackSize = 1 << 20
        t.start()
    }
    return group.wait(timeout: .now() + timeout) == .success
}

/// A value several threads write to.
final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func withLock<R>(_ body: (inout T) -> R) -> R { lock.withLock { body(&value) } }
    var get: T { lock.withLock { value } }
}

// MARK: - Local services behind the client

/// A TCP service on 127.0.0.1 with a kernel-chosen port, one thread per connection.
final class LocalService: @unchecked Sendable {
    let name: String
    let listener: Listener
    var port: UInt16 { listener.port }
    private let state = Locked<(accepted: Int, open: Set<Int32>, stopped: Bool)>((0, [], false))
    private let handler: @Sendable (Conn) -> Void

    init(name: String, handler: @escaping @Sendable (Conn) -> Void) throws {
        self.name = name
        self.listener = try Listener()
        self.handler = handler
        let t = Thread { [self] in acceptLoop() }
        t.start()
    }

    /// Connections accepted so far.
    var accepted: Int { state.get.accepted }

    private func acceptLoop() {
        while let fd = listener.acceptBlocking() {
            let keep = state.withLock { s -> Bool in
                if s.stopped { return false }
                s.accepted += 1
                s.open.insert(fd)
                return true
            }
            if !keep { Glibc.close(fd); return }
            let conn = Conn(fd: fd)
            let t = Thread { [self] in
                handler(conn)
                state.withLock { _ = $0.open.remove(fd) }
                conn.close()
            }
            t.stackSize = 1 << 20
            t.start()
        }
    }

    /// Stops accepting and wakes every connection's thread.
    func stop() {
        let fds = state.withLock { s -> Set<Int32> in
            s.stopped = true
            return s.open
        }
        listener.shutdown()
        for fd in fds { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Echoes every byte; on EOF shuts its writing side down.
    static func echo() throws -> LocalService {
        try LocalService(name: "echo") { conn in
            while true {
                switch conn.readSome(max: 1 << 18, timeout: 60) {
                case .data(let d): if (try? conn.send(d)) == nil { return }
                case .eof: conn.shutdownWrite(); return
                case .timeout, .error: return
                }
            }
        }
    }

    /// Reads everything until EOF, then answers with the byte count (u64 LE) and the SHA-256 of
    /// what it received.
    static func sink() throws -> LocalService {
        try LocalService(name: "sink") { conn in
            guard let all = try? conn.readToEOF(timeout: 120) else { return }
            var reply: [UInt8] = []
            withUnsafeBytes(of: UInt64(all.count).littleEndian) { reply += $0 }
            reply += Digest.sha256(all).bytes
            try? conn.send(reply)
        }
    }

    /// Sends `bytes` and closes.
    static func source(_ bytes: [UInt8]) throws -> LocalService {
        try LocalService(name: "source") { conn in
            try? conn.send(bytes)
            conn.shutdownWrite()
            _ = conn.waitClosed(timeout: 30)
        }
    }

    /// Greets, reads until EOF, and only then (its reading side done, its writing side still open)
    /// reports what it got, in two writes some time apart, and closes.
    static func halfClose() throws -> LocalService {
        try LocalService(name: "half-close") { conn in
            try? conn.send("greeting;")
            guard let got = try? conn.readToEOF(timeout: 30) else { return }
            let text = String(decoding: got, as: UTF8.self)
            try? conn.send("saw EOF after \(got.count) bytes;")
            sleepSeconds(0.2)
            try? conn.send("you said <\(text)>")
        }
    }
}

// MARK: - rathole processes

enum ExitResult: Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    var description: String {
        switch self {
        case .exited(let c): return "exit code \(c)"
        case .signaled(let s): return "killed by signal \(s)"
        }
    }
}

/// One rathole process (server or client); each start writes a new log file (stderr and stdout).
final class RatholeProcess: @unchecked Sendable {
    let name: String
    let configPath: String
    let dir: String
    let arguments: [String]
    var environment: [String: String] = ["RUST_LOG": "debug"]
    /// A program that runs rathole in its own process (same pid), e.g. `prlimit --nofile=N:N`.
    var launcher: [String] = []
    private(set) var pid: pid_t = 0
    private(set) var logPaths: [String] = []
    private(set) var exitResult: ExitResult?

    init(name: String, configPath: String, dir: String, arguments: [String] = []) {
        self.name = name
        self.configPath = configPath
        self.dir = dir
        self.arguments = arguments
    }

    var logPath: String { logPaths.last ?? "\(dir)/\(name).log" }

    func start() throws {
        precondition(pid == 0 || exitResult != nil, "\(name) already running")
        let path = "\(dir)/\(name)\(logPaths.isEmpty ? "" : ".\(logPaths.count + 1)").log"
        logPaths.append(path)
        exitResult = nil

        let binary = E2EPaths.binary
        guard access(binary, X_OK) == 0 else {
            throw E2EError("rathole binary not found at \(binary) (build it, or set RATHOLE_BIN)")
        }
        pid = try spawnChild(launcher + [binary] + arguments + [configPath], output: path, environment: environment)
    }

    /// Reaps the process if it has exited.
    @discardableResult
    func poll() -> ExitResult? {
        if let exitResult { return exitResult }
        guard pid > 0 else { return nil }
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        guard rc == pid else { return nil }
        // WIFEXITED / WTERMSIG, spelled out (the C macros are not imported).
        let sig = status & 0x7f
        exitResult = sig == 0 ? .exited((status >> 8) & 0xff) : .signaled(sig)
        return exitResult
    }

    var isRunning: Bool { pid > 0 && poll() == nil }

    func waitForExit(timeout: Double) -> ExitResult? {
        var result: ExitResult?
        waitUntil(timeout: timeout, interval: 0.02) {
            result = poll()
            return result != nil
        }
        return result
    }

    func signal(_ sig: Int32) {
        guard isRunning else { return }
        kill(pid, sig)
    }

    /// SIGKILL (after SIGCONT, in case it was stopped) and reap.
    func killNow() {
        guard isRunning else { return }
        kill(pid, SIGKILL)
        kill(pid, SIGCONT)
        _ = waitForExit(timeout: 10)
    }

    /// The current log file's text.
    var log: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    var allLogs: String {
        logPaths.map { p in "----- \(p)\n" + ((try? String(contentsOfFile: p, encoding: .utf8)) ?? "(unreadable)") }
            .joined(separator: "\n")
    }

    func occurrences(of text: String) -> Int {
        log.components(separatedBy: text).count - 1
    }

    /// Waits until `text` occurs at least `count` times in the current log.
    @discardableResult
    func waitForLog(_ text: String, count: Int = 1, timeout: Double) -> Bool {
        waitUntil(timeout: timeout) { occurrences(of: text) >= count }
    }

    /// Open file descriptors, from /proc/<pid>/fd.
    var fdCount: Int? {
        guard isRunning, let d = opendir("/proc/\(pid)/fd") else { return nil }
        defer { closedir(d) }
        var n = 0
        while let e = readdir(d) {
            let first = withUnsafeBytes(of: e.pointee.d_name) { $0[0] }
            if first != UInt8(ascii: ".") { n += 1 }
        }
        return n
    }

    /// Open sockets only (what /proc/<pid>/fd links to `socket:[...]`): unlike the fd count, it
    /// ignores pooled pipes, the rings and eventfds.
    var socketCount: Int? {
        guard isRunning, let d = opendir("/proc/\(pid)/fd") else { return nil }
        defer { closedir(d) }
        var n = 0
        var target = [CChar](repeating: 0, count: 256)
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard !name.hasPrefix(".") else { continue }
            let len = readlink("/proc/\(pid)/fd/\(name)", &target, target.count - 1)
            guard len > 0 else { continue }
            if String(decoding: target[0..<len].map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("socket:") { n += 1 }
        }
        return n
    }

    /// `value` once it has stayed the same for a few samples in a row (or the last sample after
    /// `timeout` seconds).
    func settled(_ value: () -> Int?, timeout: Double = 10) -> Int? {
        var last: Int? = nil
        var same = 0
        let deadline = monoNow() + timeout
        while monoNow() < deadline {
            let v = value()
            if v == last { same += 1 } else { same = 0 }
            last = v
            if same >= 4 { return v }
            sleepSeconds(0.1)
        }
        return last
    }

    /// Resident set size in KiB, from /proc/<pid>/status.
    var rssKiB: Int? { statusKiB("VmRSS") }
    /// Data and heap the process has claimed, resident or not, in KiB: what a leak of untouched
    /// buffers grows.
    var dataKiB: Int? { statusKiB("VmData") }

    private func statusKiB(_ field: String) -> Int? {
        guard isRunning, let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }
}

// MARK: - Test case base: temp dir, processes, services, logs on failure

class E2ETestCase: XCTestCase {
    private(set) var dir = ""
    private var processes: [RatholeProcess] = []
    private var services: [LocalService] = []

    override func setUp() {
        super.setUp()
        signal(SIGPIPE, SIG_IGN)
        let base = NSTemporaryDirectory().hasSuffix("/") ? NSTemporaryDirectory() : NSTemporaryDirectory() + "/"
        var template = Array("\(base)rathole-e2e-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        dir = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        processes = []
        services = []
    }

    override func tearDown() {
        for p in processes { p.killNow() }
        for s in services { s.stop() }
        let failed = (testRun?.totalFailureCount ?? 0) > 0
        if failed {
            for p in processes {
                print("===== log of \(p.name) (\(p.configPath)):\n\(p.allLogs)")
            }
            print("===== test files kept in \(dir)")
        } else if ProcessInfo.processInfo.environment["E2E_KEEP_LOGS"] != nil {
            print("===== test files kept in \(dir)")
        } else {
            try? FileManager.default.removeItem(atPath: dir)
        }
        processes = []
        services = []
        super.tearDown()
    }

    /// Writes `text` to <dir>/<name> and returns the path.
    func writeFile(_ name: String, _ text: String) -> String {
        let path = "\(dir)/\(name)"
        precondition(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)), "cannot write \(path)")
        return path
    }

    func rathole(_ name: String, config: String, arguments: [String] = []) -> RatholeProcess {
        let path = writeFile("\(name).toml", config)
        let p = RatholeProcess(name: name, configPath: path, dir: dir, arguments: arguments)
        processes.append(p)
        return p
    }

    func keep(_ service: LocalService) -> LocalService {
        services.append(service)
        return service
    }

    // MARK: Configs

    func serverConfig(controlPort: UInt16, token: String = "e2e-secret", services: [(name: String, port: UInt16)],
                      heartbeatInterval: Int? = nil) -> String {
        var t = """
            [server]
            bind_addr = "127.0.0.1:\(controlPort)"
            default_token = "\(token)"

            """
        if let heartbeatInterval { t += "heartbeat_interval = \(heartbeatInterval)\n" }
        for s in services {
            t += """

                [server.services.\(s.name)]
                bind_addr = "127.0.0.1:\(s.port)"

                """
        }
        return t
    }

    func clientConfig(controlPort: UInt16, token: String = "e2e-secret", services: [(name: String, port: UInt16)],
                      heartbeatTimeout: Int? = nil) -> String {
        var t = """
            [client]
            remote_addr = "127.0.0.1:\(controlPort)"
            default_token = "\(token)"

            """
        if let heartbeatTimeout { t += "heartbeat_timeout = \(heartbeatTimeout)\n" }
        for s in services {
            t += """

                [client.services.\(s.name)]
                local_addr = "127.0.0.1:\(s.port)"

                """
        }
        return t
    }

    // MARK: A running tunnel

    struct Tunnel {
        let server: RatholeProcess
        let client: RatholeProcess
        let controlPort: UInt16
        /// The service's public port on the server (where visitors connect).
        let publicPort: UInt16
        let local: LocalService
        let name: String
    }

    /// Starts a server and a client for one service `name` backed by `local`, and waits until the
    /// server listens and the client's control channel is up.
    func startTunnel(name: String = "svc", local: LocalService, serverHeartbeat: Int? = nil,
                     clientHeartbeatTimeout: Int? = nil, environment: [String: String] = [:],
                     file: StaticString = #filePath, line: UInt = #line) throws -> Tunnel {
        let controlPort = Ports.free()
        let publicPort = Ports.free()
        let server = rathole("server", config: serverConfig(controlPort: controlPort, services: [(name, publicPort)],
                                                            heartbeatInterval: serverHeartbeat))
        let client = rathole("client", config: clientConfig(controlPort: controlPort, services: [(name, local.port)],
                                                            heartbeatTimeout: clientHeartbeatTimeout))
        for p in [server, client] { p.environment.merge(environment) { $1 } }
        try server.start()
        try waitServerReady(server, service: name)
        try client.start()
        try waitClientReady(client, service: name)
        return Tunnel(server: server, client: client, controlPort: controlPort, publicPort: publicPort, local: local, name: name)
    }

    func waitServerReady(_ server: RatholeProcess, service: String, timeout: Double = 15) throws {
        guard server.waitForLog("service \(service): listening at", timeout: timeout) else {
            throw E2EError("server did not report listening for \(service) within \(timeout)s (\(server.poll()?.description ?? "running"))")
        }
    }

    func waitClientReady(_ client: RatholeProcess, service: String, count: Int = 1, timeout: Double = 15) throws {
        guard client.waitForLog("service \(service): control channel established", count: count, timeout: timeout) else {
            throw E2EError("client did not establish the control channel for \(service) within \(timeout)s (\(client.poll()?.description ?? "running"))")
        }
    }

    /// One visitor through the tunnel to an echo service: sends `payload`, expects it back.
    func echoOnce(port: UInt16, payload: [UInt8], timeout: Double = 15) throws {
        let c = try Conn.connect(port: port)
        defer { c.close() }
        try c.send(payload)
        let back = try c.readExact(payload.count, timeout: timeout)
        guard back == payload else { throw E2EError("echo returned different bytes") }
    }

    /// Retries `echoOnce` until it works or `timeout` passes (for recovery after restarts).
    func waitUntilForwarding(port: UInt16, timeout: Double) -> Bool {
        let deadline = monoNow() + timeout
        var attempt = 0
        while monoNow() < deadline {
            attempt += 1
            let payload = Array("probe \(attempt) through the tunnel".utf8)
            do {
                try echoOnce(port: port, payload: payload, timeout: max(0.5, min(12, deadline - monoNow())))
                return true
            } catch {
                sleepSeconds(0.1)
            }
        }
        return false
    }
}
