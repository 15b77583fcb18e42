// Starting other programs from a multi-threaded test process without leaking its fds into them:
// children are spawned under the exclusive side of a lock, fds without close-on-exec are made only
// under its shared side, and every fd above 2 is marked close-on-exec before each spawn.
import Foundation
import Glibc

/// Children are spawned under the exclusive side; fds without close-on-exec are made under the
/// shared side.
public final class SpawnGuard: @unchecked Sendable {  // a pthread rwlock, safe from any thread
    private var lock = pthread_rwlock_t()
    init() { pthread_rwlock_init(&lock, nil) }
    public func shared<R>(_ body: () -> R) -> R {
        pthread_rwlock_rdlock(&lock)
        defer { pthread_rwlock_unlock(&lock) }
        return body()
    }
    public func exclusive<R>(_ body: () -> R) -> R {
        pthread_rwlock_wrlock(&lock)
        defer { pthread_rwlock_unlock(&lock) }
        return body()
    }
}

public let spawnGuard = SpawnGuard()

/// accept4(SOCK_CLOEXEC) is not imported into Swift: accept + FD_CLOEXEC under `spawnGuard` (shared
/// side) so that no child is spawned in between and inherits the connection.
public func acceptCloexec(_ listener: Int32) -> Int32 {
    spawnGuard.shared {
        let c = accept(listener, nil, nil)
        if c >= 0 { _ = fcntl(c, F_SETFD, FD_CLOEXEC) }
        return c
    }
}

/// Starts a program with stdin from /dev/null, stdout and stderr into `output`, default signal
/// handling, and no other fd of this process: a socket another test left open must not live on
/// in a child (the UDP tests count a child's sockets). `posix_spawn_file_actions_addclosefrom_np`
/// is not imported into Swift, so every fd above 2 is marked close-on-exec first.
public func spawnChild(
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
    guard rc == 0 else { throw TestFailure("cannot start \(argv[0]): \(errnoText(rc))") }
    return child
}

private func markOpenFilesCloseOnExec() {
    guard let dir = opendir("/proc/self/fd") else { return }
    defer { closedir(dir) }
    let own = dirfd(dir)
    while let entry = readdir(dir) {
        let name = direntName(entry)
        if let fd = Int32(name), fd > 2, fd != own {
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 && flags & FD_CLOEXEC == 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }
}

/// Decodes a waitpid status (the C macros are not imported).
func exitResult(status: Int32) -> ExitResult {
    let sig = status & 0x7f
    return sig == 0 ? .exited((status >> 8) & 0xff) : .signaled(sig)
}

public enum ExitResult: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public var description: String {
        switch self {
        case .exited(let c): return "exit code \(c)"
        case .signaled(let s): return "killed by signal \(s)"
        }
    }
}

public enum Programs {
    /// Runs a program to completion; stdout and stderr together.
    public static func run(_ argv: [String], timeout: Double = 60) throws -> (status: Int32, output: String) {
        let out = "\(NSTemporaryDirectory())/testkit-run-\(getpid())-\(UInt64(monoNow() * 1e6)).out"
        defer { unlink(out) }
        let pid = try spawnChild(argv, output: out)
        var status: Int32 = 0
        let finished = waitUntil(timeout: timeout, interval: 0.01) { waitpid(pid, &status, WNOHANG) == pid }
        if !finished {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
            throw TestFailure("\(argv.joined(separator: " ")) did not finish within \(timeout)s")
        }
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let code: Int32
        switch exitResult(status: status) {
        case .exited(let c): code = c
        case .signaled(let s): code = 128 + s
        }
        return (code, text)
    }

    /// The path of a program, or a failure that says how to get it.
    public static func require(_ name: String, package: String) throws -> String {
        for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
            let p = "\(d)/\(name)"
            if access(p, X_OK) == 0 { return p }
        }
        throw TestFailure("\(name) is not installed: install the Debian package \(package) (scripts/install-deps does)")
    }

    /// A Noise key pair from `rathole --genkey`.
    public static func genkey() throws -> (privateKey: String, publicKey: String) {
        let (status, out) = try run([Paths.binary, "--genkey"])
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard status == 0, lines.count >= 5, lines[0] == "Private Key:", lines[3] == "Public Key:",
            lines[1].count == 44, lines[4].count == 44
        else { throw TestFailure("rathole --genkey printed an unexpected text (status \(status)):\n\(out)") }
        return (lines[1], lines[4])
    }

    /// ca.pem, server.p12 (password), other-ca.pem in `dir`, from the fixture script.
    public static func makeCerts(in dir: String, password: String) throws {
        let script = Paths.packageRoot + "/Tests/ControlPlaneTests/Fixtures/make-test-certs.sh"
        let (status, out) = try run(["/bin/sh", script, dir, password], timeout: 120)
        guard status == 0, FileManager.default.fileExists(atPath: dir + "/server.p12") else {
            throw TestFailure("make-test-certs.sh failed (status \(status)):\n\(out)")
        }
    }
}
