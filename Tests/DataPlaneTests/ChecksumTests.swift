// The stream checksum the bulk tests compare must catch what a broken relay would do.
import Glibc
import TestKit
import XCTest

final class ChecksumTests: XCTestCase {
    func testChecksumCatchesFlipsDropsInsertsAndSwaps() {
        let size = (1 << 20) + 13
        let original = RandomPool.shared.slice(seed: 77, count: size)
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: size + 1, alignment: 8)
        defer { copy.deallocate() }
        let reference = StreamHasher.digest(of: original)
        XCTAssertEqual(reference.count, UInt64(size))

        func withCopy(_ count: Int = size, _ change: (UnsafeMutableRawBufferPointer) -> Void) -> StreamDigest {
            copy.copyMemory(from: original)
            change(copy)
            return StreamHasher.digest(of: UnsafeRawBufferPointer(rebasing: copy[..<count]))
        }

        // Unchanged bytes in any slicing give the same digest.
        XCTAssertEqual(withCopy { _ in }, reference)
        XCTAssertEqual(StreamHasher.digest(of: original, slices: [1, 7, 65_536, 3, 100_000]), reference)
        XCTAssertEqual(StreamHasher.digest(of: original, slices: [65_535]), reference)

        for position in [0, 1, 7, 8, 65_535, 65_536, size / 2, size - 9, size - 1] {
            for bit in [0, 7] {
                let flipped = withCopy { $0[position] ^= UInt8(1 << bit) }
                XCTAssertNotEqual(flipped, reference, "bit \(bit) of byte \(position) flipped")
            }
            if position + 1 < size {
                let a = original[position], b = original[position + 1]
                if a != b {
                    let swapped = withCopy { buf in
                        buf[position] = b
                        buf[position + 1] = a
                    }
                    XCTAssertNotEqual(swapped, reference, "bytes \(position) and \(position + 1) swapped")
                }
            }
            let dropped = withCopy(size - 1) { buf in
                buf.baseAddress!.advanced(by: position)
                    .copyMemory(from: original.baseAddress!.advanced(by: position + 1), byteCount: size - position - 1)
            }
            XCTAssertNotEqual(dropped, reference, "byte \(position) missing")
            let inserted = withCopy(size + 1) { buf in
                buf.baseAddress!.advanced(by: position + 1)
                    .copyMemory(from: original.baseAddress!.advanced(by: position), byteCount: size - position)
            }
            XCTAssertNotEqual(inserted, reference, "byte \(position) doubled")
        }
        // Two 64 KiB blocks in the wrong order.
        let blocksSwapped = withCopy { buf in
            let block = 65_536
            let first = UnsafeMutableRawBufferPointer(rebasing: buf[0..<block])
            let second = UnsafeMutableRawBufferPointer(rebasing: buf[block..<2 * block])
            first.copyMemory(from: UnsafeRawBufferPointer(rebasing: original[block..<2 * block]))
            second.copyMemory(from: UnsafeRawBufferPointer(rebasing: original[0..<block]))
        }
        XCTAssertNotEqual(blocksSwapped, reference, "64 KiB blocks reordered")
    }
}
