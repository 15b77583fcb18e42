// Fixtures for the DataPlane tests: a ring group with a loopback listener (shut down at the end,
// and never hanging the suite), this process's fd table before and after, and checks that
// continuations resume on their ring.
import DataPlane
import Glibc
import Synchronization
import XCTest

/// The process's open file descriptors and what each points at. Comparing (fd, target) pairs
/// catches an fd that was closed and reused for something else.
public struct FDTable: Sendable {
    public var entries: [Int32: String]

    public static func current() -> FDTable { FDTable(entries: ProcFS.fdTargets(pid: getpid())) }

    /// The table to compare against later. First makes the Swift runtime open what it opens lazily
    /// and keeps for the life of the process (the global executor's timerfd, for one), so that
    /// only what the test itself opens shows up in a diff.
    public static func baseline() async -> FDTable {
        try? await Task.sleep(for: .milliseconds(1))
        _ = try? await withDeadline(1, "warm-up") { 0 }
        return current()
    }

    /// What was opened since `baseline` and what of `baseline` is gone (or now points elsewhere).
    /// Timerfds opened since are left out: the runtime's executor makes them lazily (one per clock
    /// and timer class) and keeps them, and DataPlane never opens one (its timeouts are ring ops).
    public func diff(from baseline: FDTable) -> (opened: [Int32: String], closed: [Int32: String]) {
        var opened: [Int32: String] = [:]
        var closed: [Int32: String] = [:]
        for (fd, what) in entries where baseline.entries[fd] != what && what != "anon_inode:[timerfd]" { opened[fd] = what }
        for (fd, what) in baseline.entries where entries[fd] != what { closed[fd] = what }
        return (opened, closed)
    }
}

/// Checks that the fds are back to `baseline`, exactly, except for the pipes the rings keep pooled
/// (2 fds each, as their counters report; the baseline was taken when the pools were empty).
public func assertFDsRestored(
    _ baseline: FDTable, pooledPipes: UInt64 = 0, _ what: String,
    file: StaticString = #filePath, line: UInt = #line
) {
    let (opened, closed) = FDTable.current().diff(from: baseline)
    let nonPipes = opened.filter { !$0.value.hasPrefix("pipe:") }
    let pipeFDs = opened.count - nonPipes.count
    XCTAssertTrue(
        nonPipes.isEmpty, "\(what): fds left open: \(nonPipes.sorted { $0.key < $1.key }.prefix(20))",
        file: file, line: line)
    XCTAssertEqual(
        UInt64(pipeFDs), 2 * pooledPipes,
        "\(what): open pipe fds should be exactly the \(pooledPipes) pooled pipes", file: file, line: line)
    XCTAssertTrue(
        closed.isEmpty, "\(what): fds closed that the test did not own: \(closed.prefix(20))",
        file: file, line: line)
}

/// Shuts `group` down from another thread and fails the test, instead of hanging the whole suite,
/// when that does not return within `seconds`. Usable in `defer`.
public func shutdownOrFail(_ group: RingGroup, within seconds: Double = 10, file: StaticString = #filePath, line: UInt = #line) {
    let done = Latch()
    spawnThread {
        group.shutdown()
        done.open()
    }
    if !done.wait(seconds: seconds) {
        XCTFail("RingGroup.shutdown() did not return within \(seconds) s", file: file, line: line)
    }
}

/// The group's counters once every ring has gone once more through its loop. Counters are a
/// snapshot taken at the end of each loop iteration, and an `onEnd` callback runs before the
/// snapshot of its iteration; a job on each ring runs only after that snapshot.
public func settledCounters(_ group: RingGroup) async -> RelayCounters {
    for ring in group.executors {
        await Task(executorPreference: ring) {}.value
    }
    return group.counters
}

/// Counts continuations that resumed anywhere but on their ring's thread.
public final class RingThreadCheck: Sendable {
    private let misses = Atomic<Int>(0)
    private let checks = Atomic<Int>(0)

    public init() {}

    public func check(_ ring: RingExecutor) {
        checks.add(1, ordering: .relaxed)
        if !ring.isCurrent || RingExecutor.current !== ring { misses.add(1, ordering: .relaxed) }
    }

    public var missCount: Int { misses.load(ordering: .relaxed) }
    public var checkCount: Int { checks.load(ordering: .relaxed) }
}

/// A ring group and a loopback listener for one test, with connected pairs made on demand; `close()`
/// closes every fd it made and shuts the group down (failing the test if that hangs).
public final class RingFixture: @unchecked Sendable {  // used from the test's own task only
    public let group: RingGroup
    public let listener: Listener
    private var owned: [Int32] = []

    public init(threads: Int = 1, maxLentPipesPerWorker: UInt32 = 512) throws {
        signal(SIGPIPE, SIG_IGN)
        group = try RingGroup(threads: threads, maxLentPipesPerWorker: maxLentPipesPerWorker)
        listener = try Listener()
    }

    public var ring: RingExecutor { group.executors[0] }

    /// A connected pair (see `Listener.pair`), closed by `close()` except the ends the test closes
    /// itself (or hands to a relay, which closes them).
    public func pair(closingOuter: Bool = true, closingInner: Bool = true) throws -> (outer: Int32, inner: Int32) {
        let p = try listener.pair()
        if closingOuter { owned.append(p.outer) }
        if closingInner { owned.append(p.inner) }
        return p
    }

    public func close(file: StaticString = #filePath, line: UInt = #line) {
        for fd in owned { Glibc.close(fd) }
        owned = []
        listener.close()
        shutdownOrFail(group, file: file, line: line)
    }
}
