import XCTest

// The queue behind the server's data-channel pool and waiting visitors.
@testable import ControlPlane

final class FIFOTests: XCTestCase {
    final class Token {
        let n: Int
        init(_ n: Int) { self.n = n }
    }

    func testOrderIsKeptAcrossCompactions() {
        var q = FIFO<Int>()
        var expected = 0
        var next = 0
        // Interleaved appends and removals, enough to compact the storage many times.
        for round in 0..<50 {
            for _ in 0..<(round % 7 + 1) * 10 {
                q.append(next)
                next += 1
            }
            for _ in 0..<(round % 5 + 1) * 9 {
                guard let v = q.popFirst() else { break }
                XCTAssertEqual(v, expected)
                expected += 1
            }
            XCTAssertEqual(q.count, next - expected)
            XCTAssertEqual(q.first, q.isEmpty ? nil : expected)
        }
        while let v = q.popFirst() {
            XCTAssertEqual(v, expected)
            expected += 1
        }
        XCTAssertEqual(expected, next)
        XCTAssertTrue(q.isEmpty)
        XCTAssertNil(q.popFirst())
    }

    func testRemoveAllKeepsTheOthersInOrder() {
        var q = FIFO<Int>()
        for i in 0..<100 { q.append(i) }
        for _ in 0..<10 { _ = q.popFirst() }
        q.removeAll { $0 % 3 == 0 }
        var rest: [Int] = []
        while let v = q.popFirst() { rest.append(v) }
        XCTAssertEqual(rest, (10..<100).filter { $0 % 3 != 0 })
    }

    /// A removed element is released at once: a pooled channel or a waiting visitor's continuation
    /// must not linger in the queue's storage.
    func testRemovedElementsAreReleased() {
        var q = FIFO<Token>()
        weak var firstToken: Token?
        do {
            let t = Token(0)
            firstToken = t
            q.append(t)
        }
        for i in 1..<10 { q.append(Token(i)) }
        XCTAssertNotNil(firstToken)
        XCTAssertEqual(q.popFirst()?.n, 0)
        XCTAssertNil(firstToken, "the queue still holds a removed element")
    }
}
