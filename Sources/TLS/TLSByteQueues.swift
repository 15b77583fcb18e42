// The byte queues between an SSL object and the caller's sockets: ciphertext received from the
// network waits in the input buffer for OpenSSL to read it; ciphertext OpenSSL produces lands in
// output segments that never move or grow while they hold data, so a pointer to pending output stays
// valid (even as more output is appended) until that data is consumed. Buffers are released as soon
// as they are empty, so an idle connection holds none; a small per-thread cache of standard-size
// blocks keeps that churn cheap on busy connections (no malloc and, above all, no fresh pages to
// fault in for every batch of records).

import Glibc

/// Standard-size blocks (128 KiB), at most 8 kept per thread, freed when the thread ends.
private final class TLSBlockCache {
    static let blockSize = 128 * 1024
    private static let capacity = 8
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit { for block in blocks { free(block) } }

    /// Runs `body` on this thread's cache, made on first use (kept alive by the thread's reference).
    @inline(__always)
    private static func withCurrent<R>(_ body: (TLSBlockCache) -> R) -> R {
        if let p = pthread_getspecific(tlsBlockCacheKey) {
            return Unmanaged<TLSBlockCache>.fromOpaque(p)._withUnsafeGuaranteedRef(body)
        }
        let cache = TLSBlockCache()
        cache.blocks.reserveCapacity(capacity)
        pthread_setspecific(tlsBlockCacheKey, Unmanaged.passRetained(cache).toOpaque())
        return body(cache)
    }

    /// `size` bytes (nil when memory is exhausted); a cached block when `size` is the standard size.
    static func take(_ size: Int) -> UnsafeMutableRawPointer? {
        if size == blockSize, let block = withCurrent({ $0.blocks.popLast() }) { return block }
        return malloc(size)
    }

    /// Gives back memory from `take`.
    static func give(_ block: UnsafeMutableRawPointer?, size: Int) {
        guard let block else { return }
        let kept =
            size == blockSize
            && withCurrent { cache in
                guard cache.blocks.count < capacity else { return false }
                cache.blocks.append(block)
                return true
            }
        if !kept { free(block) }
    }
}

private let tlsBlockCacheKey: pthread_key_t = {
    var key = pthread_key_t()
    let r = pthread_key_create(&key) { p in
        if let p { Unmanaged<TLSBlockCache>.fromOpaque(p).release() }
    }
    precondition(r == 0, "pthread_key_create failed")
    return key
}()

/// The input buffer and output segments of one TLS session. Not thread-safe: used by its session
/// and, through the BIO, by the session's OpenSSL calls.
final class TLSByteQueues {
    // Input: [inHead, inTail) of `input` (capacity inCapacity) is ciphertext not yet read by OpenSSL.
    private var input: UnsafeMutableRawPointer?
    private var inHead = 0
    private var inTail = 0
    private var inCapacity = 0
    /// The peer ended the transport: once the input is drained, reads report end of file.
    private(set) var inputEnded = false

    /// An output segment: [head, tail) of `bytes` (capacity `capacity`) waits to be sent.
    private struct Segment {
        let bytes: UnsafeMutableRawPointer
        let capacity: Int
        var head = 0
        var tail = 0
    }
    private var segments: [Segment] = []
    private(set) var outputPending = 0

    deinit {
        TLSBlockCache.give(input, size: inCapacity)
        for segment in segments { TLSBlockCache.give(segment.bytes, size: segment.capacity) }
    }

    // MARK: Input

    var inputPending: Int { inTail - inHead }

    /// Space for at least `minimumCapacity` bytes after the pending input (nil when memory is
    /// exhausted). Valid until the next reserve, feed, or read by OpenSSL.
    func reserve(_ minimumCapacity: Int) -> UnsafeMutableRawBufferPointer? {
        if inCapacity - inTail < minimumCapacity {
            let used = inTail - inHead
            if let input, inCapacity - used >= minimumCapacity {
                input.copyMemory(from: input + inHead, byteCount: used)
            } else {
                var capacity = inCapacity > 0 ? inCapacity : TLSBlockCache.blockSize
                while capacity - used < minimumCapacity { capacity *= 2 }
                guard let fresh = TLSBlockCache.take(capacity) else { return nil }
                if let input, used > 0 { fresh.copyMemory(from: input + inHead, byteCount: used) }
                TLSBlockCache.give(input, size: inCapacity)
                input = fresh
                inCapacity = capacity
            }
            inHead = 0
            inTail = used
        }
        return UnsafeMutableRawBufferPointer(start: input! + inTail, count: inCapacity - inTail)
    }

    /// Marks `count` bytes written into the reserved space as input.
    func commit(_ count: Int) {
        inTail += min(count, inCapacity - inTail)
    }

    /// Copies `bytes` in as input; false when memory is exhausted.
    func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count > 0 else { return true }
        guard let space = reserve(bytes.count) else { return false }
        space.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        inTail += bytes.count
        return true
    }

    func endInput() { inputEnded = true }

    /// OpenSSL reads: up to `count` bytes of input into `destination`; returns how many.
    func read(into destination: UnsafeMutableRawPointer, count: Int) -> Int {
        let n = min(count, inTail - inHead)
        guard n > 0 else { return 0 }
        destination.copyMemory(from: input! + inHead, byteCount: n)
        inHead += n
        if inHead == inTail {
            // Drained: an idle connection holds no input memory.
            TLSBlockCache.give(input, size: inCapacity)
            input = nil
            inHead = 0
            inTail = 0
            inCapacity = 0
        }
        return n
    }

    // MARK: Output

    /// OpenSSL writes: appends `count` bytes; false when memory is exhausted.
    func append(_ source: UnsafeRawPointer, count: Int) -> Bool {
        var source = source
        var left = count
        while left > 0 {
            if let last = segments.indices.last, segments[last].tail < segments[last].capacity {
                let n = min(left, segments[last].capacity - segments[last].tail)
                (segments[last].bytes + segments[last].tail).copyMemory(from: source, byteCount: n)
                segments[last].tail += n
                outputPending += n
                source += n
                left -= n
                continue
            }
            let capacity = max(TLSBlockCache.blockSize, left)
            guard let bytes = TLSBlockCache.take(capacity) else { return false }
            segments.append(Segment(bytes: bytes, capacity: capacity))
        }
        return true
    }

    /// The first contiguous run of pending output (empty when none).
    var firstPendingRun: UnsafeRawBufferPointer {
        guard let first = segments.first, first.tail > first.head else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: first.bytes + first.head, count: first.tail - first.head)
    }

    /// Drops `count` bytes from the front of the pending output.
    func consume(_ count: Int) {
        var left = min(count, outputPending)
        outputPending -= left
        while let first = segments.first {
            let n = min(left, first.tail - first.head)
            segments[0].head += n
            left -= n
            if segments[0].head < first.tail { break }
            // Empty: an idle connection keeps no output memory.
            TLSBlockCache.give(first.bytes, size: first.capacity)
            segments.removeFirst()
            if left == 0 { break }
        }
        if segments.isEmpty { segments = [] }
    }

    /// Copies (and consumes) up to `count` bytes of pending output into `destination`; returns how many.
    func copyOut(into destination: UnsafeMutableRawPointer, count: Int) -> Int {
        var done = 0
        while done < count {
            let run = firstPendingRun
            guard let base = run.baseAddress else { break }
            let n = min(run.count, count - done)
            (destination + done).copyMemory(from: base, byteCount: n)
            consume(n)
            done += n
        }
        return done
    }
}
