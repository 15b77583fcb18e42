// The programs under test and beside it: rathole processes (server or client, a log file per
// start) and other programs (danted, tinyproxy) in their own process groups.
import Foundation
import Glibc

public enum Paths {
    /// <package root>, from this file's path: <root>/Tests/TestKit/Processes.swift.
    public static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The binary under test: $RATHOLE_BIN, else <root>/.build/debug/rathole.
    public static var binary: String {
        if let b = ProcessInfo.processInfo.environment["RATHOLE_BIN"], !b.isEmpty { return b }
        return packageRoot + "/.build/debug/rathole"
    }

    /// ../shared beside the package (the transcripts and vectors), as CI lays it out.
    public static let shared = URL(fileURLWithPath: packageRoot).deletingLastPathComponent().appendingPathComponent("shared").path

    /// A file in ../shared; a missing one is a failure (CI always has it), never a skip.
    public static func sharedFile(_ relative: String) throws -> String {
        let path = shared + "/" + relative
        guard FileManager.default.fileExists(atPath: path) else {
            throw TestFailure("shared file \(path) is missing (shared/ must sit beside the repository, as in CI)")
        }
        return path
    }
}

/// One rathole process (server or client); each start writes a new log file (stderr and stdout).
public final class RatholeProcess: @unchecked Sendable {  // driven by one test thread
    public let name: String
    public let configPath: String
    public let dir: String
    public let arguments: [String]
    public var environment: [String: String] = ["RUST_LOG": "debug"]
    /// A program that runs rathole in its own process (same pid), e.g. `prlimit --nofile=N:N`.
    public var launcher: [String] = []
    public private(set) var pid: pid_t = 0
    public private(set) var logPaths: [String] = []
    public private(set) var exitResult: ExitResult?

    public init(name: String, configPath: String, dir: String, arguments: [String] = []) {
        self.name = name
        self.configPath = configPath
        self.dir = dir
        self.arguments = arguments
    }

    public var logPath: String { logPaths.last ?? "\(dir)/\(name).log" }

    public func start() throws {
        precondition(pid == 0 || exitResult != nil, "\(name) already running")
        let path = "\(dir)/\(name)\(logPaths.isEmpty ? "" : ".\(logPaths.count + 1)").log"
        logPaths.append(path)
        exitResult = nil
        let binary = Paths.binary
        guard access(binary, X_OK) == 0 else {
            throw TestFailure("rathole binary not found at \(binary) (build it, or set RATHOLE_BIN)")
        }
        pid = try spawnChild(launcher + [binary] + arguments + [configPath], output: path, environment: environment)
    }

    /// Reaps the process if it has exited.
    @discardableResult
    public func poll() -> ExitResult? {
        if let exitResult { return exitResult }
        guard pid > 0 else { return nil }
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        exitResult = TestKit.exitResult(status: status)
        return exitResult
    }

    public var isRunning: Bool { pid > 0 && poll() == nil }

    public func waitForExit(timeout: Double) -> ExitResult? {
        var result: ExitResult?
        waitUntil(timeout: timeout, interval: 0.02) {
            result = poll()
            return result != nil
        }
        return result
    }

    public func signal(_ sig: Int32) {
        guard isRunning else { return }
        kill(pid, sig)
    }

    /// SIGKILL (after SIGCONT, in case it was stopped) and reap.
    public func killNow() {
        guard isRunning else { return }
        kill(pid, SIGKILL)
        kill(pid, SIGCONT)
        _ = waitForExit(timeout: 10)
    }

    /// The current log file's text.
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    public var allLogs: String {
        logPaths.map { p in "----- \(p)\n" + ((try? String(contentsOfFile: p, encoding: .utf8)) ?? "(unreadable)") }
            .joined(separator: "\n")
    }

    public func occurrences(of text: String) -> Int {
        log.components(separatedBy: text).count - 1
    }

    /// The lines of the current log that contain `text`.
    public func lines(containing text: String) -> [String] {
        log.split(separator: "\n").map(String.init).filter { $0.contains(text) }
    }

    /// Waits until `text` occurs at least `count` times in the current log.
    @discardableResult
    public func waitForLog(_ text: String, count: Int = 1, timeout: Double) -> Bool {
        waitUntil(timeout: timeout) { occurrences(of: text) >= count }
    }
}

/// A program other than rathole (danted, tinyproxy), in its own process group so that its children
/// are stopped with it.
public final class ExternalProgram: @unchecked Sendable {  // driven by one test thread
    public let name: String
    public let argv: [String]
    public let logPath: String
    public private(set) var pid: pid_t = 0
    private var reaped = false

    public init(name: String, argv: [String], logPath: String) {
        self.name = name
        self.argv = argv
        self.logPath = logPath
    }

    public func start() throws {
        pid = try spawnChild(argv, output: logPath, truncate: false, ownProcessGroup: true)
        reaped = false
    }

    public var isRunning: Bool {
        guard pid > 0, !reaped else { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            reaped = true
            return false
        }
        return true
    }

    /// SIGTERM to the process group, then SIGKILL if it lingers; reaps the leader.
    public func stop() {
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

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}
