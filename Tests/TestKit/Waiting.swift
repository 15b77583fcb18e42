// Time and bounded waits: a monotonic clock, polling a condition until a deadline (from plain
// threads and from async code), and a deadline around async work so that a hang fails one test
// instead of stalling the suite. Deadlines bound liveness; they are never speed checks.
import Glibc
import Synchronization

/// A failed expectation inside a helper, with a message saying what was expected.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Monotonic seconds.
public func monoNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

public func sleepSeconds(_ s: Double) {
    guard s > 0 else { return }
    usleep(UInt32(min(s, 4000) * 1_000_000))
}

/// Polls `condition` until it holds or `timeout` seconds pass; returns whether it held.
@discardableResult
public func waitUntil(timeout: Double, interval: Double = 0.05, _ condition: () -> Bool) -> Bool {
    let deadline = monoNow() + timeout
    while true {
        if condition() { return true }
        if monoNow() >= deadline { return false }
        sleepSeconds(interval)
    }
}

/// Polls `condition` every few milliseconds until it holds, or throws after `seconds`.
public func waitUntil(_ seconds: Double, _ what: String, _ condition: @Sendable () -> Bool) async throws {
    let clock = ContinuousClock()
    let end = clock.now + .seconds(seconds)
    while !condition() {
        if clock.now > end { throw DeadlineExceeded(what: what, seconds: seconds) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

public struct DeadlineExceeded: Error, CustomStringConvertible {
    public let what: String
    public let seconds: Double
    public init(what: String, seconds: Double) {
        self.what = what
        self.seconds = seconds
    }
    public var description: String { "\(what) did not finish within \(seconds) s" }
}

private final class FirstResult<T: Sendable>: Sendable {
    private let cont: Mutex<CheckedContinuation<T, Error>?>
    init(_ c: CheckedContinuation<T, Error>) { cont = Mutex(c) }
    func resume(_ r: Result<T, Error>) {
        let c = cont.withLock { c -> CheckedContinuation<T, Error>? in
            defer { c = nil }
            return c
        }
        c?.resume(with: r)
    }
}

/// Runs `op` and gives up waiting after `seconds` (throwing `DeadlineExceeded`).
public func withDeadline<T: Sendable>(
    _ seconds: Double, _ what: String,
    _ op: @escaping @Sendable () async throws -> T
) async throws -> T {
    let work = Task { try await op() }
    var timer: Task<Void, Never>?
    defer { timer?.cancel() }
    return try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
        let first = FirstResult(c)
        Task { first.resume(await work.result) }
        timer = Task {
            try? await Task.sleep(for: .seconds(seconds))
            if !Task.isCancelled { first.resume(.failure(DeadlineExceeded(what: what, seconds: seconds))) }
        }
    }
}

/// `value()` once it has stayed the same for a few samples in a row (or the last sample after
/// `timeout` seconds): for counts that move for a moment after an event (pools refilling).
public func settled<T: Equatable>(timeout: Double = 10, _ value: () -> T) -> T {
    var last = value()
    var same = 0
    let deadline = monoNow() + timeout
    while monoNow() < deadline && same < 4 {
        sleepSeconds(0.1)
        let v = value()
        if v == last { same += 1 } else { same = 0 }
        last = v
    }
    return last
}
