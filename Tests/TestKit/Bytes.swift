// Test data: hex in and out, deterministic pattern bytes both ends can agree on, a pool of random
// bytes to slice streams from, and where two byte strings first differ.
import ControlPlane
import Glibc

public func hexBytes(_ text: String) -> [UInt8] {
    let digits = Array(text.utf8).filter { !($0 == 32 || $0 == 10) }
    precondition(digits.count % 2 == 0, "odd hex string")
    func v(_ c: UInt8) -> UInt8 {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: preconditionFailure("bad hex digit")
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(digits.count / 2)
    var i = 0
    while i < digits.count {
        out.append(v(digits[i]) << 4 | v(digits[i + 1]))
        i += 2
    }
    return out
}

public func hexString(_ bytes: some Collection<UInt8>) -> String {
    let d = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(d[Int(b >> 4)])
        out.append(d[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Deterministic pseudo-random bytes (xorshift64*), so both ends can agree without sharing state.
public func patternBytes(count: Int, seed: UInt64) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var x = seed | 1
    out.withUnsafeMutableBytes { raw in
        let words = count / 8
        let p = raw.baseAddress!
        for i in 0..<words {
            x ^= x >> 12
            x ^= x << 25
            x ^= x >> 27
            p.storeBytes(of: x &* 0x2545_F491_4F6C_DD1D, toByteOffset: i * 8, as: UInt64.self)
        }
        for i in (words * 8)..<count {
            x ^= x >> 12
            x ^= x << 25
            x ^= x >> 27
            raw[i] = UInt8(truncatingIfNeeded: x)
        }
    }
    return out
}

public func sha256Hex(_ bytes: [UInt8]) -> String { Digest.sha256(bytes).description }

/// nil when `got` is a prefix of `sent`, else the offset of the first byte that differs (or
/// `sent.count` when `got` is longer).
public func firstMismatch(_ got: [UInt8], prefixOf sent: [UInt8]) -> Int? {
    if got.count > sent.count { return sent.count }
    return got.withUnsafeBufferPointer { g in
        sent.withUnsafeBufferPointer { s in
            if g.isEmpty || memcmp(g.baseAddress!, s.baseAddress!, g.count) == 0 { return nil }
            for i in 0..<g.count where g[i] != s[i] { return i }
            return nil
        }
    }
}

/// 64 MiB of pattern bytes, made once per test process.
public let bigPattern = patternBytes(count: 64 << 20, seed: 0xB16_DA7A)

/// Random bytes read once from /dev/urandom; tests send slices of it.
public final class RandomPool: @unchecked Sendable {  // read-only after init
    public static let shared = RandomPool(size: 8 << 20)

    public let base: UnsafeMutableRawPointer
    public let size: Int

    public init(size: Int) {
        self.size = size
        base = .allocate(byteCount: size, alignment: 64)
        let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        precondition(fd >= 0, "open /dev/urandom")
        var done = 0
        while done < size {
            let n = read(fd, base + done, size - done)
            precondition(n > 0, "read /dev/urandom")
            done += n
        }
        Glibc.close(fd)
    }

    /// `count` bytes starting at an offset derived from `seed`; different seeds give different data.
    public func slice(seed: Int, count: Int) -> UnsafeRawBufferPointer {
        precondition(count <= size / 2)
        let span = size - count
        let offset = Int((UInt64(truncatingIfNeeded: seed) &* 0x9E37_79B9_7F4A_7C15) >> 11) % span
        return UnsafeRawBufferPointer(start: base + offset, count: count)
    }
}
