import CFuzzSupport
import Glibc

/// One fuzz target: `run` gets each input libFuzzer generates and stops the process (abort: a
/// crash libFuzzer records) when a property does not hold.
struct FuzzTarget: Sendable {
    let name: String
    /// What the target checks, for `--list`.
    let summary: String
    let run: @Sendable (UnsafeRawBufferPointer) -> Void
}

/// A broken property: says which, then aborts so that libFuzzer saves the input.
func require(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
    file: StaticString = #fileID, line: UInt = #line
) {
    if condition() { return }
    let text = "PROPERTY FAILED at \(file):\(line): \(message())\n"
    text.utf8CString.withUnsafeBufferPointer { _ = write(2, $0.baseAddress, $0.count - 1) }
    abort()
}

/// Runs `body` and requires that the heap it leaves or used at its peak grows with the input, not
/// with what a length field in the input claims: at most `perByte` bytes per input byte plus `fixed`.
/// `fixed` is at least about 2 KiB: the first call down a code path may allocate the Swift
/// runtime's type metadata, once per process.
func boundedHeap<R>(
    input: Int, perByte: Int = 4, fixed: Int, _ what: String, file: StaticString = #fileID,
    line: UInt = #line, _ body: () -> R
) -> R {
    rf_track_begin()
    let r = body()
    var peak = 0
    var largest = 0
    rf_track_end(&peak, &largest)
    let limit = perByte * input + fixed
    require(
        peak <= limit, "\(what): heap grew by \(peak) bytes (largest block \(largest)) for \(input) input bytes (limit \(limit))",
        file: file, line: line)
    return r
}

/// Takes decisions from the front of a fuzz input; what is left is the payload.
struct FuzzInput {
    let bytes: UnsafeRawBufferPointer
    private(set) var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var isEmpty: Bool { position >= bytes.count }
    var remaining: Int { bytes.count - position }

    /// The next byte, or 0 past the end.
    mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u16() -> UInt16 { UInt16(byte()) | UInt16(byte()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }

    /// Up to `n` bytes (fewer at the end).
    mutating func take(_ n: Int) -> [UInt8] {
        let k = max(0, min(n, remaining))
        defer { position += k }
        return Array(bytes[position..<position + k])
    }

    /// Exactly `n` bytes, zeros past the end.
    mutating func takePadded(_ n: Int) -> [UInt8] {
        let b = take(n)
        return b + [UInt8](repeating: 0, count: n - b.count)
    }

    /// Everything not taken yet.
    mutating func rest() -> [UInt8] { take(remaining) }
}

/// Chunk sizes for feeding a stream in pieces, decided by one seed byte: the same input always
/// splits the same way (libFuzzer needs that), and every split shape gets tried.
struct Splitter {
    private var state: UInt32
    private let limit: Int

    init(seed: UInt8) {
        state = 0x9E37_79B9 ^ UInt32(seed) &* 0x0101_0101 | 1
        // Whole, byte by byte, small, around frame sizes, large.
        limit = [Int.max, 1, 2, 3, 5, 8, 13, 40, 64, 200, 1000, 5000][Int(seed) % 12]
    }

    /// The size of the next chunk when `remaining` bytes are left (at least 1 when remaining > 0).
    mutating func next(_ remaining: Int) -> Int {
        guard remaining > 0 else { return 0 }
        if limit == Int.max { return remaining }
        state ^= state << 13
        state ^= state >> 17
        state ^= state << 5
        return 1 + Int(state % UInt32(min(remaining, limit)))
    }

    /// `bytes` cut into chunks, at most about 2000 of them (a long stream a byte at a time would
    /// spend the run on one input).
    mutating func chunks(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        let floor = bytes.count / 2000
        var i = 0
        while i < bytes.count {
            let n = min(bytes.count - i, next(bytes.count - i) + floor)
            out.append(bytes[i..<i + n])
            i += n
        }
        return out
    }
}

/// A one-line description: no newline, not empty (error messages become log lines).
func requireOneLine(_ text: String, _ what: String, file: StaticString = #fileID, line: UInt = #line) {
    require(
        !text.isEmpty && !text.contains("\n") && !text.contains("\r"), "\(what) is not one line: \(text.debugDescription)",
        file: file, line: line)
}

func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef")
    var s = ""
    for b in bytes {
        s.append(digits[Int(b >> 4)])
        s.append(digits[Int(b & 15)])
    }
    return s
}
