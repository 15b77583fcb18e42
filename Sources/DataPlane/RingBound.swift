/// State that belongs to one ring and is only ever touched on its thread (in the manner of
/// swift-nio's NIOLoopBound): the value can be shared with other threads, reading or writing it
/// there is a bug that debug builds stop at.
public final class RingBound<Value>: @unchecked Sendable {  // the one place that vouches for ring confinement
    public let ring: RingExecutor
    private var stored: Value

    public init(_ value: Value, ring: RingExecutor) {
        self.ring = ring
        stored = value
    }

    /// The value; on the ring's thread only.
    public var value: Value {
        _read {
            assert(ring.isCurrent, "RingBound value touched off ring \(ring.index)")
            yield stored
        }
        _modify {
            assert(ring.isCurrent, "RingBound value touched off ring \(ring.index)")
            yield &stored
        }
    }
}
