// The 32-byte values of the protocol: service names' hashes, nonces, session keys.

/// 32 bytes: a SHA-256 output, a nonce, or a session key. Stored inline (no heap allocation).
public struct Digest: Hashable, Sendable, CustomStringConvertible {
    public static let size = 32

    private var storage: (UInt64, UInt64, UInt64, UInt64)

    /// All zero bytes.
    public static let zero = Digest(storage: (0, 0, 0, 0))

    init(storage: (UInt64, UInt64, UInt64, UInt64)) {
        self.storage = storage
    }

    /// The digest made of exactly these 32 bytes; nil for any other count.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Digest.size else { return nil }
        var s: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &s) { $0.copyBytes(from: bytes) }
        self.storage = s
    }

    /// The digest whose bytes are `hex` (64 hex digits, either case); nil otherwise.
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 2 * Digest.size else { return nil }
        var bytes = [UInt8](repeating: 0, count: Digest.size)
        for i in 0..<Digest.size {
            guard let hi = hexValue(utf8[2 * i]), let lo = hexValue(utf8[2 * i + 1]) else { return nil }
            bytes[i] = hi << 4 | lo
        }
        self.init(bytes: bytes)
    }

    /// Copies 32 bytes from `raw` starting at `offset` (the caller checked the bounds).
    init(copying raw: UnsafeRawBufferPointer, at offset: Int) {
        var s: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &s) {
            $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[offset..<offset + Digest.size]))
        }
        self.storage = s
    }

    /// Calls `body` with the 32 bytes.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        var s = storage
        return try Swift.withUnsafeBytes(of: &s) { (raw) throws(E) -> R in try body(raw) }
    }

    /// The 32 bytes as an array.
    public var bytes: [UInt8] {
        withUnsafeBytes { Array($0) }
    }

    /// Lowercase hex, 64 characters.
    public var description: String {
        withUnsafeBytes { raw in
            var out = ""
            out.reserveCapacity(64)
            for b in raw {
                out.unicodeScalars.append(hexDigits[Int(b >> 4)])
                out.unicodeScalars.append(hexDigits[Int(b & 0xF)])
            }
            return out
        }
    }

    /// Equality in constant time (no early exit), since digests are compared against secrets.
    public static func == (a: Digest, b: Digest) -> Bool {
        let d =
            (a.storage.0 ^ b.storage.0) | (a.storage.1 ^ b.storage.1)
            | (a.storage.2 ^ b.storage.2) | (a.storage.3 ^ b.storage.3)
        return d == 0
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(storage.0)
        hasher.combine(storage.1)
        hasher.combine(storage.2)
        hasher.combine(storage.3)
    }
}

private let hexDigits: [Unicode.Scalar] = Array("0123456789abcdef".unicodeScalars)
