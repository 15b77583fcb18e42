// A fast checksum of a byte stream for the relay tests, which move gigabytes in debug builds where
// SHA-256 would dominate the run time.

/// A 64-bit checksum of a byte stream plus its length. Order- and position-sensitive: each 8-byte
/// word goes through h = rotl((h ^ w) * K, 29), a bijection of h for a fixed w and injective in w
/// for a fixed h, so a single changed word (any flipped byte) always changes the result; a missing
/// or inserted byte changes the length and shifts every later word; reordered words change the chain.
/// Works on 64 KiB blocks copied to an aligned buffer so chunk boundaries never matter.
public struct StreamDigest: Equatable, Sendable, CustomStringConvertible {
    public var value: UInt64
    public var count: UInt64
    public var description: String { "\(count) bytes, checksum \(String(value, radix: 16))" }
}

public final class StreamHasher {
    public static let blockSize = 64 * 1024
    private let block = UnsafeMutableRawPointer.allocate(byteCount: StreamHasher.blockSize, alignment: 8)
    private var filled = 0
    private var h: UInt64 = 0xCBF2_9CE4_8422_2325
    private var total: UInt64 = 0

    public init() {}

    deinit { block.deallocate() }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard var src = bytes.baseAddress else { return }
        var left = bytes.count
        total &+= UInt64(left)
        while left > 0 {
            let n = min(left, Self.blockSize - filled)
            (block + filled).copyMemory(from: src, byteCount: n)
            filled += n
            src += n
            left -= n
            if filled == Self.blockSize {
                h = Self.mix(h, block.assumingMemoryBound(to: UInt64.self), Self.blockSize / 8)
                filled = 0
            }
        }
    }

    public func finish() -> StreamDigest {
        let words = filled / 8
        var v = Self.mix(h, block.assumingMemoryBound(to: UInt64.self), words)
        var tail: UInt64 = 0
        var i = words * 8
        var shift: UInt64 = 0
        while i < filled {
            tail |= UInt64(block.load(fromByteOffset: i, as: UInt8.self)) &<< shift
            shift &+= 8
            i &+= 1
        }
        v = Self.mix(v, tail)
        v = Self.mix(v, total)
        return StreamDigest(value: v, count: total)
    }

    // Plain while loops and wrapping ops only: fast enough in debug builds (about 3 ns a word).
    @inline(__always)
    private static func mix(_ h: UInt64, _ w: UInt64) -> UInt64 {
        let x = (h ^ w) &* 0x9E37_79B9_7F4A_7C15
        return (x &<< 29) | (x &>> 35)
    }

    private static func mix(_ seed: UInt64, _ p: UnsafePointer<UInt64>, _ n: Int) -> UInt64 {
        var h = seed
        var i = 0
        while i < n {
            let x = (h ^ p[i]) &* 0x9E37_79B9_7F4A_7C15
            h = (x &<< 29) | (x &>> 35)
            i &+= 1
        }
        return h
    }

    /// The digest of `bytes` fed in slices of the given sizes (cycled).
    public static func digest(of bytes: UnsafeRawBufferPointer, slices: [Int] = [Int.max]) -> StreamDigest {
        let h = StreamHasher()
        var offset = 0
        var i = 0
        while offset < bytes.count {
            let n = min(slices[i % slices.count], bytes.count - offset)
            h.update(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n]))
            offset += n
            i += 1
        }
        return h.finish()
    }
}
