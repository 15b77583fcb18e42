import XCTest

// The client's reconnection delays: doubling, capped, and spread at random.
@testable import ControlPlane

final class BackoffTests: XCTestCase {
    /// A generator with a fixed seed (SplitMix64), so a failure can be replayed.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    func testDelaysDoubleUpToTheCapWithinTheUpperHalfOfEachStep() {
        var random = SeededGenerator(state: 1)
        var backoff = Backoff(cap: .seconds(1))
        let steps: [Duration] = [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)]
        for step in steps {
            let d = backoff.next(using: &random)
            XCTAssertGreaterThanOrEqual(d, step / 2)
            XCTAssertLessThanOrEqual(d, step)
        }
        backoff.reset()
        XCTAssertLessThanOrEqual(backoff.next(using: &random), .milliseconds(100))
    }

    /// A thousand clients reconnecting after a server restart draw a thousand different delays,
    /// spread over the whole upper half of the step rather than bunched together.
    func testAThousandClientsSpreadTheirReconnects() {
        var random = SeededGenerator(state: 42)
        let delays = (0..<1000).map { _ -> Duration in
            var backoff = Backoff(cap: .seconds(1))
            return backoff.next(using: &random)
        }
        XCTAssertGreaterThan(Set(delays).count, 990, "distinct delays")
        let lowest = delays.min()!, highest = delays.max()!
        XCTAssertLessThan(lowest, .milliseconds(55))
        XCTAssertGreaterThan(highest, .milliseconds(95))
        // No millisecond holds more than a small share of the clients.
        let perMillisecond = Dictionary(grouping: delays) { $0.components.attoseconds / 1_000_000_000_000_000 }
        XCTAssertLessThan(perMillisecond.values.map(\.count).max()!, 60)
    }
}
