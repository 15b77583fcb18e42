import Glibc

/// A growable byte buffer: append at the end, consume from the front. Memory is released once the
/// buffer is empty (an idle connection holds none), unless the caller, a busy channel, asks to keep
/// it, and when the buffer goes away. Confined to one thread.
final class ByteBuffer {
    private var storage: UnsafeMutableRawBufferPointer?
    private var start = 0
    private var end = 0
    /// Kept by `consume(_:keepingCapacity:)` up to this size; larger buffers go back to malloc.
    static let maxKeptCapacity = 1 << 20

    init() {}
    deinit { storage?.deallocate() }

    var isEmpty: Bool { start == end }
    var readable: UnsafeRawBufferPointer {
        guard let storage else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(rebasing: storage[start..<end])
    }

    /// Space for at least `count` more bytes at the end: the free tail, else the storage with its
    /// live bytes moved to the front, else new storage.
    func reserve(_ count: Int) -> UnsafeMutableRawBufferPointer {
        let live = end - start
        if let s = storage {
            if s.count - end >= count { return UnsafeMutableRawBufferPointer(rebasing: s[end...]) }
            if s.count - live >= count {
                memmove(s.baseAddress!, s.baseAddress! + start, live)
                start = 0
                end = live
                return UnsafeMutableRawBufferPointer(rebasing: s[end...])
            }
        }
        let capacity = max(live + count, 2 * live)
        let fresh = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        if let s = storage {
            if live > 0 { fresh.copyMemory(from: UnsafeRawBufferPointer(rebasing: s[start..<end])) }
            s.deallocate()
        }
        storage = fresh
        start = 0
        end = live
        return UnsafeMutableRawBufferPointer(rebasing: fresh[end...])
    }

    func commit(_ count: Int) { end += count }

    func append(_ bytes: [UInt8]) {
        let space = reserve(bytes.count)
        space.copyBytes(from: bytes)
        commit(bytes.count)
    }

    /// Drops `count` bytes from the front. An emptied buffer releases its memory, or with
    /// `keepingCapacity` keeps it (up to `maxKeptCapacity`) for the next fill.
    func consume(_ count: Int, keepingCapacity: Bool = false) {
        start += count
        guard start == end else { return }
        if keepingCapacity, let s = storage, s.count <= Self.maxKeptCapacity {
            start = 0
            end = 0
        } else {
            release()
        }
    }

    /// Lets `body` consume a prefix of the readable bytes: it returns (consumed, result).
    func withReadable<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> (Int, R)) throws(E) -> R {
        let (consumed, result) = try body(readable)
        consume(consumed)
        return result
    }

    private func release() {
        storage?.deallocate()
        storage = nil
        start = 0
        end = 0
    }
}
