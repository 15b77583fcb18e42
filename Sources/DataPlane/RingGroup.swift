import Glibc
import Synchronization

/// The workers of the process: one RingExecutor per core (by default).
public final class RingGroup: Sendable {
    public let executors: [RingExecutor]
    private let nextIndex = Atomic<Int>(0)

    public init(threads: Int? = nil, maxLentPipesPerWorker: UInt32 = 512) throws(IOError) {
        let count = max(1, threads ?? Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        var list: [RingExecutor] = []
        for i in 0..<count {
            list.append(try RingExecutor(index: i, maxLentPipes: maxLentPipesPerWorker))
        }
        executors = list
    }

    /// Round-robin choice, for work that is not tied to an accepting worker.
    public func next() -> RingExecutor {
        executors[nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue % executors.count]
    }

    public var counters: RelayCounters { executors.map(\.counters).reduce(RelayCounters(), +) }

    public func shutdown() { executors.forEach { $0.shutdown() } }
}
