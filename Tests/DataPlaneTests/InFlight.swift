import TestKit

// How many operations a ring has in flight, read on its own thread: the proof that an operation a
// test cancels or interrupts had reached the ring (and was not just refused before submission).
@testable import DataPlane

func operationsInFlight(_ ring: RingExecutor) async -> Int {
    await Task(executorPreference: ring) { ring.slots.inFlight }.value
}

/// Waits until `ring` has more than `count` operations in flight and `alsoTrue` holds, both still
/// so 50 ms later (an operation that was about to complete has by then).
func waitForOperationInFlight(
    _ ring: RingExecutor, moreThan count: Int, _ what: String, timeout: Double = 20,
    alsoTrue: @Sendable () -> Bool = { true }
) async throws {
    let deadline = monoNow() + timeout
    var since: Double?
    while true {
        if await operationsInFlight(ring) > count && alsoTrue() {
            let first = since ?? monoNow()
            since = first
            if monoNow() - first >= 0.05 { return }
        } else {
            since = nil
        }
        if monoNow() > deadline { throw DeadlineExceeded(what: "\(what) getting in flight on the ring", seconds: timeout) }
        try await Task.sleep(for: .milliseconds(5))
    }
}
