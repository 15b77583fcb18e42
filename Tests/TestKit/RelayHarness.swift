// Relays under test: the flavours the shared relay scenarios run against, started and stopped the
// same way, and a one-ring harness that checks every fd, pipe and relay is released afterwards.
import DataPlane
import Glibc
import XCTest

/// The relay flavours the shared scenarios run against.
public enum RelayKind: Sendable, CustomStringConvertible {
    /// `RingExecutor.relay(_:_:)` awaited in a task; stopping cancels the task.
    case spliceAsync
    /// `RingExecutor.startRelay(_:_:onEnd:)`; stopping calls `OperationHandle.stop()`.
    case spliceHandle
    /// `CopyRelay.run` over two `SocketStream`s; stopping cancels the task.
    case copy

    public var description: String {
        switch self {
        case .spliceAsync: return "relay()"
        case .spliceHandle: return "startRelay()"
        case .copy: return "CopyRelay"
        }
    }
}

/// A running relay under test: its eventual result and a way to stop it from Swift.
public struct RunningRelay: Sendable {
    public let result: Promise<RelayResult>
    public let stop: @Sendable () -> Void
}

/// Starts a relay of `kind` between `a` and `b` (which it owns from now on) on `ring`.
public func startRelay(_ kind: RelayKind, on ring: RingExecutor, _ a: Int32, _ b: Int32) async -> RunningRelay {
    let promise = Promise<RelayResult>()
    switch kind {
    case .spliceAsync:
        let task = Task(executorPreference: ring) {
            let r = await ring.relay(FileDescriptor(adopting: a), FileDescriptor(adopting: b))
            promise.fulfill(r)
        }
        return RunningRelay(result: promise, stop: { task.cancel() })
    case .spliceHandle:
        let handle = await Task(executorPreference: ring) { () -> OperationHandle in
            ring.startRelay(FileDescriptor(adopting: a), FileDescriptor(adopting: b)) { promise.fulfill($0) }
        }.value
        return RunningRelay(result: promise, stop: { handle.stop() })
    case .copy:
        let task = Task(executorPreference: ring) {
            let r = await CopyRelay.run(
                SocketStream(FileDescriptor(adopting: a), ring: ring),
                SocketStream(FileDescriptor(adopting: b), ring: ring), on: ring)
            promise.fulfill(r)
        }
        return RunningRelay(result: promise, stop: { task.cancel() })
    }
}

/// Runs `body` with a fresh one-thread ring group, then checks that every fd the test and its
/// relays opened is closed again and that no pipe is still lent or relay still active.
public func withRelayRing(
    _ what: String, timeout: Double = 30,
    _ body: @escaping @Sendable (RingGroup, Listener) async throws -> Void,
    file: StaticString = #filePath, line: UInt = #line
) async throws {
    signal(SIGPIPE, SIG_IGN)
    let group = try RingGroup(threads: 1)
    defer { shutdownOrFail(group, file: file, line: line) }
    let listener = try Listener()
    defer { listener.close() }
    let baseline = await FDTable.baseline()
    try await withDeadline(timeout, what) { try await body(group, listener) }
    let counters = await settledCounters(group)
    XCTAssertEqual(counters.pipesLent, 0, "\(what): pipes still lent", file: file, line: line)
    XCTAssertEqual(counters.relaysActive, 0, "\(what): relays still active", file: file, line: line)
    assertFDsRestored(baseline, pooledPipes: counters.pipesPooled, what, file: file, line: line)
}
