// Byte-level helpers for the codecs in this folder: little-endian loads and stores as bincode
// writes them, and hex digits.

extension UnsafeRawBufferPointer {
    @inline(__always)
    func u16LE(at offset: Int) -> UInt16 {
        UInt16(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    func u32LE(at offset: Int) -> UInt32 {
        UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func storeU16LE(_ v: UInt16, at offset: Int) {
        storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inline(__always)
    func storeU32LE(_ v: UInt32, at offset: Int) {
        storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
}

/// Runs `body` over the bytes of `c`, contiguously (copying only when `c` has no contiguous storage).
@inline(__always)
func withContiguousBytes<C: Collection<UInt8>, R>(_ c: C, _ body: (UnsafeRawBufferPointer) -> R) -> R {
    if let r = c.withContiguousStorageIfAvailable({ body(UnsafeRawBufferPointer($0)) }) {
        return r
    }
    return Array(c).withUnsafeBytes(body)
}

@inline(__always)
func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}
