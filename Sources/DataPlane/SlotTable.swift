import CRatholeRing

/// Who is waiting for an operation's completion.
enum Waiter {
    /// A suspended task; resumed once, on the ring thread.
    case continuation(UnsafeContinuation<Completion, Never>)
    /// A callback; called on the ring thread for every completion (multishot operations, relays).
    case callback((Completion) -> Void)
}

/// The state of one operation in flight. Lives at a stable address while in use, so the kernel
/// may read `timeout` after the SQE that points at it was prepared.
struct OpSlot {
    var generation: UInt32 = 1
    var nextFree: Int32 = -1
    var inUse = false
    var cancelRequested = false
    var waiter: Waiter?
    var relay: OpaquePointer?
    var timeout = __kernel_timespec()
    /// Socket address argument (connect, sendmsg), kept here for the same reason as `timeout`.
    var address = sockaddr_in6()
}

/// Operations in flight on one ring, addressed by the user_data of their SQEs:
/// `generation << 32 | index`. The generation changes every time a slot is reused, so a late
/// cancel or a stale handle can never reach the operation that took the slot over.
struct SlotTable {
    private static let chunkSize = 1024
    private var chunks: [UnsafeMutablePointer<OpSlot>] = []
    private var freeHead: Int32 = -1
    private(set) var inFlight = 0

    mutating func allocate() -> (slot: UnsafeMutablePointer<OpSlot>, userData: UInt64) {
        if freeHead < 0 { grow() }
        let index = freeHead
        let slot = pointer(index)
        freeHead = slot.pointee.nextFree
        slot.pointee.inUse = true
        slot.pointee.cancelRequested = false
        inFlight += 1
        return (slot, UInt64(slot.pointee.generation) << 32 | UInt64(index))
    }

    /// The slot an operation's user_data names, if that operation is still in flight.
    func lookup(_ userData: UInt64) -> UnsafeMutablePointer<OpSlot>? {
        let index = Int(userData & 0xFFFF_FFFF)
        guard index < chunks.count * Self.chunkSize else { return nil }
        let slot = pointer(Int32(index))
        guard slot.pointee.inUse, UInt64(slot.pointee.generation) == userData >> 32 else { return nil }
        return slot
    }

    /// Takes the waiter of a completed operation and frees its slot unless more completions follow.
    /// Also says whether a cancel was requested for it (read before the slot is freed).
    mutating func complete(userData: UInt64, keep: Bool) -> (waiter: Waiter, cancelRequested: Bool)? {
        guard let slot = lookup(userData) else { return nil }
        let (waiter, cancelRequested) = (slot.pointee.waiter, slot.pointee.cancelRequested)
        if !keep { release(slot, index: Int32(userData & 0xFFFF_FFFF)) }
        return waiter.map { ($0, cancelRequested) }
    }

    /// Frees a slot whose operation was never submitted.
    mutating func release(userData: UInt64) {
        guard let slot = lookup(userData) else { return }
        release(slot, index: Int32(userData & 0xFFFF_FFFF))
    }

    private mutating func release(_ slot: UnsafeMutablePointer<OpSlot>, index: Int32) {
        slot.pointee.inUse = false
        slot.pointee.waiter = nil
        slot.pointee.relay = nil
        slot.pointee.generation = slot.pointee.generation &+ 1
        if slot.pointee.generation >= 1 << 30 { slot.pointee.generation = 1 }
        slot.pointee.nextFree = freeHead
        freeHead = index
        inFlight -= 1
    }

    /// Frees the slot storage. Only for an executor that is going away (nothing in flight).
    mutating func deallocateAll() {
        for chunk in chunks {
            chunk.deinitialize(count: Self.chunkSize)
            chunk.deallocate()
        }
        chunks = []
        freeHead = -1
    }

    func forEachInFlight(_ body: (UInt64, OpSlot) -> Void) {
        for (c, chunk) in chunks.enumerated() {
            for i in 0..<Self.chunkSize where chunk[i].inUse {
                body(UInt64(chunk[i].generation) << 32 | UInt64(c * Self.chunkSize + i), chunk[i])
            }
        }
    }

    @inline(__always)
    private func pointer(_ index: Int32) -> UnsafeMutablePointer<OpSlot> {
        chunks[Int(index) / Self.chunkSize] + Int(index) % Self.chunkSize
    }

    private mutating func grow() {
        let base = chunks.count * Self.chunkSize
        let chunk = UnsafeMutablePointer<OpSlot>.allocate(capacity: Self.chunkSize)
        for i in 0..<Self.chunkSize {
            var slot = OpSlot()
            slot.nextFree = i + 1 < Self.chunkSize ? Int32(base + i + 1) : freeHead
            (chunk + i).initialize(to: slot)
        }
        chunks.append(chunk)
        freeHead = Int32(base)
    }
}

extension UnsafeMutablePointer where Pointee == OpSlot {
    /// Stable addresses of the slot's argument fields, for SQEs the kernel reads after prep.
    var timeoutPointer: UnsafeMutablePointer<__kernel_timespec> {
        (UnsafeMutableRawPointer(self) + MemoryLayout<OpSlot>.offset(of: \OpSlot.timeout)!)
            .assumingMemoryBound(to: __kernel_timespec.self)
    }

    var addressPointer: UnsafeMutablePointer<sockaddr> {
        (UnsafeMutableRawPointer(self) + MemoryLayout<OpSlot>.offset(of: \OpSlot.address)!)
            .assumingMemoryBound(to: sockaddr.self)
    }
}
