import CRatholeRing
import Glibc
import Synchronization

/// What the ring reported for one submitted operation.
public struct Completion: Sendable {
    public var result: Int32
    public var flags: UInt32
    /// Relay ends only: bytes moved a->b and b->a.
    public var bytes: (UInt64, UInt64)
    /// Someone asked to cancel the operation before it completed: a -ECANCELED result is that
    /// cancel, not its linked timeout expiring.
    public var cancelRequested = false
}

/// One io_uring and the one thread that drives it.
///
/// Runs Swift jobs (as a `TaskExecutor`; `serial` is the `SerialExecutor` for actors pinned to it)
/// and resumes the continuations of the ring operations those jobs submit, all on its own thread.
/// Task jobs and actor jobs are told apart so that nonisolated code runs without hopping.
/// Jobs from other threads go through a locked queue and an eventfd the ring always has a read on.
public final class RingExecutor: TaskExecutor, @unchecked Sendable {
    public let index: Int

    // Owned by the ring thread. Everything below marked "ring thread" is touched only there.
    private var ring: OpaquePointer?
    private var localJobs: [QueuedJob] = []
    private var runningJobs: [QueuedJob] = []
    /// The serial executor of actors that live on this ring.
    public private(set) var serial: RingSerialExecutor!
    var slots = SlotTable()  // ring thread
    lazy var bufferPool = BufferPool()  // ring thread
    private var completions: UnsafeMutablePointer<rr_completion>
    private static let completionBatch = 256
    private var stopping = false  // ring thread
    private var thread = pthread_t()

    // Shared with other threads.
    private let remote = Mutex<[RemoteItem]>([])
    private let wakePending = Atomic<Bool>(false)
    private let eventFD: Int32
    private let wakeBuffer: UnsafeMutablePointer<UInt64>
    private let started = Atomic<Bool>(false)
    private let exited = Atomic<Bool>(false)
    private let countersSnapshot = Mutex<rr_counters>(rr_counters())

    private enum RemoteItem {
        case job(QueuedJob)
        case closure(@Sendable () -> Void)
    }

    /// Creates the executor and starts its thread; the ring is created on that thread.
    /// - Parameter maxLentPipes: how many relay pipes this worker may lend at once (each is 2 fds).
    public init(index: Int = 0, entries: UInt32 = 4096, maxLentPipes: UInt32 = 512) throws(IOError) {
        self.index = index
        _ = Self.ignoreSIGPIPE
        let efd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard efd >= 0 else { throw .system(.current, operation: "eventfd") }
        eventFD = efd
        wakeBuffer = .allocate(capacity: 1)
        completions = .allocate(capacity: Self.completionBatch)

        serial = RingSerialExecutor(self)

        // Create the ring on its own thread (SINGLE_ISSUER requires the creating thread to submit).
        let startup = StartupBox(entries: entries, maxLentPipes: maxLentPipes)
        let context = Unmanaged.passRetained(ThreadContext(executor: self, startup: startup)).toOpaque()
        let rc = pthread_create(
            &thread, nil,
            { raw in
                let context = Unmanaged<ThreadContext>.fromOpaque(raw!).takeRetainedValue()
                context.executor.threadMain(context.startup)
                return nil
            }, context)
        guard rc == 0 else { throw .system(Errno(rc), operation: "pthread_create") }
        startup.waitUntilReady()
        if let err = startup.error {
            pthread_join(thread, nil)
            throw .system(Errno(-err), operation: "io_uring_setup")
        }
    }

    /// splice(2) and send to a closed peer must fail with EPIPE, not kill the process.
    private static let ignoreSIGPIPE: Void = { signal(SIGPIPE, SIG_IGN) }()

    deinit {
        slots.deallocateAll()
        completions.deallocate()
        wakeBuffer.deallocate()
        close(eventFD)
    }

    /// The executor whose thread is the calling thread, if any.
    public static var current: RingExecutor? {
        guard let raw = rr_current_executor() else { return nil }
        return Unmanaged<RingExecutor>.fromOpaque(raw).takeUnretainedValue()
    }

    @inline(__always)
    public var isCurrent: Bool { rr_current_executor() == Unmanaged.passUnretained(self).toOpaque() }

    // MARK: Executor conformances

    public func enqueue(_ job: consuming ExecutorJob) {
        enqueue(QueuedJob(job: UnownedJob(job), isolated: false))
    }

    func enqueue(_ job: QueuedJob) {
        if isCurrent {
            localJobs.append(job)
        } else {
            post(.job(job))
        }
    }

    /// Runs `body` on the ring thread, soon. Safe from any thread.
    public func execute(_ body: @escaping @Sendable () -> Void) {
        post(.closure(body))
    }

    private func post(_ item: RemoteItem) {
        remote.withLock { $0.append(item) }
        if !wakePending.exchange(true, ordering: .acquiringAndReleasing) {
            var one: UInt64 = 1
            _ = Glibc.write(eventFD, &one, 8)
        }
    }

    // MARK: Lifecycle

    /// Stops the loop: cancels every operation in flight, stops every relay, lets the tasks that were
    /// waiting on them run to their end, then ends the thread. Waits for the thread. Safe from any
    /// thread except the ring thread itself.
    public func shutdown() {
        precondition(!isCurrent, "shutdown() must not be called on the ring's own thread")
        guard !exited.load(ordering: .acquiring) else { return }
        execute { [self] in self.beginStopping() }
        pthread_join(thread, nil)
    }

    private func beginStopping() {
        guard !stopping else { return }
        stopping = true
        slots.forEachInFlight { userData, slot in
            if let relay = slot.relay {
                rr_relay_stop(ring, relay)
            } else {
                submitCancel(of: userData)
            }
        }
    }

    /// Ring counters of this worker, as of its last loop iteration. Safe from any thread.
    public var counters: RelayCounters {
        RelayCounters(countersSnapshot.withLock { $0 })
    }

    // MARK: The loop

    private func threadMain(_ startup: StartupBox) {
        rr_set_current_executor(Unmanaged.passUnretained(self).toOpaque())
        rr_set_thread_name("rathole-ring-\(index)")
        var err: Int32 = 0
        ring = rr_ring_create(startup.entries, startup.maxLentPipes, &err)
        guard ring != nil else {
            startup.signalReady(error: err)
            return
        }
        started.store(true, ordering: .releasing)
        startup.signalReady(error: nil)
        armWakeRead()

        var idleRounds = 0
        while true {
            runJobs()
            if stopping {
                // Leave once nothing is in flight and no job arrived for a few idle rounds.
                if slots.inFlight == 0 && localJobs.isEmpty && remote.withLock({ $0.isEmpty }) {
                    idleRounds += 1
                    if idleRounds > 3 { break }
                } else {
                    idleRounds = 0
                }
            }
            // While stopping, wait in short steps: cancelled operations complete soon, and jobs
            // may still be posted from other threads.
            _ = rr_ring_submit(ring, !localJobs.isEmpty ? 0 : stopping ? 2_000_000 : -1)
            reapAll()
        }
        exited.store(true, ordering: .releasing)
        // Jobs posted after this point would never run; nothing should be posting to a stopped ring.
        rr_ring_destroy(ring)
        ring = nil
        rr_set_current_executor(nil)
    }

    private func runJobs() {
        guard !localJobs.isEmpty else { return }
        swap(&localJobs, &runningJobs)
        let serial = self.serial.asUnownedSerialExecutor()
        let task = asUnownedTaskExecutor()
        for queued in runningJobs {
            if queued.isolated {
                queued.job.runSynchronously(isolatedTo: serial, taskExecutor: task)
            } else {
                queued.job.runSynchronously(on: task)
            }
        }
        runningJobs.removeAll(keepingCapacity: true)
    }

    private func reapAll() {
        var sawWake = false
        while true {
            let n = Int(rr_ring_reap(ring, completions, UInt32(Self.completionBatch)))
            // rr_ring_reap has already freed the relays whose ends are in this batch. Forget them
            // before any callback of the batch runs: one that stops such a relay must not reach it.
            for i in 0..<n where completions[i].flags & RR_COMPLETION_RELAY_END != 0 {
                slots.lookup(completions[i].user_data)?.pointee.relay = nil
            }
            for i in 0..<n {
                let c = completions[i]
                if c.user_data == RR_UD_WAKE {
                    sawWake = true
                    continue
                }
                dispatch(c)
            }
            if n < Self.completionBatch { break }
        }
        if sawWake {
            wakePending.store(false, ordering: .releasing)
            armWakeRead()
            drainRemote()
        }
        var c = rr_counters()
        rr_ring_counters(ring, &c)
        countersSnapshot.withLock { $0 = c }
    }

    private func dispatch(_ c: rr_completion) {
        let more = c.flags & RR_COMPLETION_RELAY_END == 0 && c.flags & IORING_CQE_F_MORE != 0
        guard let (waiter, cancelRequested) = slots.complete(userData: c.user_data, keep: more) else { return }
        let completion = Completion(
            result: c.res, flags: c.flags, bytes: (c.bytes.0, c.bytes.1), cancelRequested: cancelRequested)
        switch waiter {
        case .continuation(let cont):
            cont.resume(returning: completion)
        case .callback(let body):
            body(completion)
        }
    }

    private func drainRemote() {
        let items = remote.withLock { items -> [RemoteItem] in
            let taken = items
            items.removeAll(keepingCapacity: true)
            return taken
        }
        for item in items {
            switch item {
            case .job(let job): localJobs.append(job)
            case .closure(let body): body()
            }
        }
    }

    private func armWakeRead() {
        let sqe = rr_ring_sqe(ring)
        io_uring_prep_read(sqe, eventFD, wakeBuffer, 8, 0)
        io_uring_sqe_set_data64(sqe, RR_UD_WAKE)
    }

    // MARK: Submitting operations (ring thread only)

    /// Fills a fresh SQE for an operation whose completion is awaited through `slot`.
    @inline(__always)
    func sqe() -> UnsafeMutablePointer<io_uring_sqe> { rr_ring_sqe(ring) }

    /// Submits now rather than at the end of this loop iteration; for operations whose arguments
    /// live only as long as the caller's stack frame (addresses for connect, for example).
    func flushSubmissions() { _ = rr_ring_submit(ring, 0) }

    /// Asks the kernel to cancel the operation tagged `userData`; its own completion still arrives.
    func submitCancel(of userData: UInt64) {
        let sqe = rr_ring_sqe(ring)
        io_uring_prep_cancel64(sqe, userData, 0)
        io_uring_sqe_set_data64(sqe, RR_UD_IGNORE)
    }

    var rawRing: OpaquePointer { ring! }
    var isStopping: Bool { stopping }
}

struct QueuedJob {
    let job: UnownedJob
    /// Enqueued through `serial`: runs isolated to an actor that lives on this ring.
    let isolated: Bool
}

/// The serial executor of a ring, for actors pinned to it (`unownedExecutor`).
public final class RingSerialExecutor: SerialExecutor, @unchecked Sendable {
    public unowned let ring: RingExecutor

    init(_ ring: RingExecutor) { self.ring = ring }

    public func enqueue(_ job: consuming ExecutorJob) {
        ring.enqueue(QueuedJob(job: UnownedJob(job), isolated: true))
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    public func checkIsolated() {
        precondition(ring.isCurrent, "not on the ring thread of RingExecutor \(ring.index)")
    }
}

/// Counters of one worker's relays and pipe pool.
public struct RelayCounters: Sendable, Equatable {
    public var bytesRelayed: UInt64 = 0
    public var relaysStarted: UInt64 = 0
    public var relaysActive: UInt64 = 0
    public var pipesPooled: UInt64 = 0
    public var pipesLent: UInt64 = 0
    public var pipeWaits: UInt64 = 0

    public init() {}

    init(_ c: rr_counters) {
        bytesRelayed = c.bytes_relayed
        relaysStarted = c.relays_started
        relaysActive = c.relays_active
        pipesPooled = c.pipes_pooled
        pipesLent = c.pipes_lent
        pipeWaits = c.pipe_waits
    }

    public static func + (a: RelayCounters, b: RelayCounters) -> RelayCounters {
        var s = RelayCounters()
        s.bytesRelayed = a.bytesRelayed + b.bytesRelayed
        s.relaysStarted = a.relaysStarted + b.relaysStarted
        s.relaysActive = a.relaysActive + b.relaysActive
        s.pipesPooled = a.pipesPooled + b.pipesPooled
        s.pipesLent = a.pipesLent + b.pipesLent
        s.pipeWaits = a.pipeWaits + b.pipeWaits
        return s
    }
}

private final class ThreadContext {
    let executor: RingExecutor
    let startup: StartupBox
    init(executor: RingExecutor, startup: StartupBox) {
        self.executor = executor
        self.startup = startup
    }
}

/// Hands the ring-creation result from the new thread back to the initialiser: written once by
/// the ring thread before it signals, read by the initialiser after its wait.
private final class StartupBox: Sendable {
    let entries: UInt32
    let maxLentPipes: UInt32
    private let ready = ThreadSignal()
    private let result = Mutex<Int32?>(nil)

    init(entries: UInt32, maxLentPipes: UInt32) {
        self.entries = entries
        self.maxLentPipes = maxLentPipes
    }

    var error: Int32? { result.withLock { $0 } }

    func signalReady(error: Int32?) {
        result.withLock { $0 = error }
        ready.signal()
    }

    func waitUntilReady() { ready.wait() }
}
