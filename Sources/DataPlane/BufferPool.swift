/// Large copy buffers shared by the connections of one ring: a direction borrows one only while
/// it has bytes in hand, so idle connections hold none.
final class BufferPool {
    static let bufferSize = 256 * 1024
    private var free: [UnsafeMutableRawBufferPointer] = []
    private let keep: Int

    init(keep: Int = 64) { self.keep = keep }

    func borrow() -> UnsafeMutableRawBufferPointer {
        free.popLast() ?? .allocate(byteCount: Self.bufferSize, alignment: 64)
    }

    func giveBack(_ buffer: UnsafeMutableRawBufferPointer) {
        if free.count < keep { free.append(buffer) } else { buffer.deallocate() }
    }

    deinit { free.forEach { $0.deallocate() } }
}
