// Cutting messages off a byte stream that arrives in arbitrary chunks.

/// Buffers a byte stream that arrives in arbitrary chunks and cuts messages off its front. Which message
/// comes next is the caller's decision (it follows the protocol state). Amortised O(1) per byte.
public struct WireDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0

    public init() {}

    /// Bytes received and not yet consumed.
    public var bufferedCount: Int { buffer.count - start }

    public var isEmpty: Bool { bufferedCount == 0 }

    /// Appends received bytes.
    public mutating func feed(_ raw: UnsafeRawBufferPointer) {
        compact()
        buffer.append(contentsOf: raw)
    }

    /// Appends received bytes.
    public mutating func feed(_ bytes: some Sequence<UInt8>) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    /// Drops consumed bytes from the front when that is cheap relative to what was consumed.
    private mutating func compact() {
        if start == 0 { return }
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 4096 && start * 2 >= buffer.count {
            buffer.removeSubrange(0..<start)
            start = 0
        }
    }

    /// The next message of type `M`, or nil if fewer than `M.size` bytes are buffered. On error nothing
    /// is consumed.
    public mutating func next<M: WireMessage>(_ type: M.Type = M.self) throws(ProtocolError) -> M? {
        guard bufferedCount >= M.size else { return nil }
        let s = start
        let r: Result<M, ProtocolError> = buffer.withUnsafeBytes { raw in
            Result { () throws(ProtocolError) -> M in
                try M(decodingPrefixOf: UnsafeRawBufferPointer(rebasing: raw[s..<s + M.size]))
            }
        }
        let m = try r.get()
        start += M.size
        return m
    }

    /// Calls `body` with the next complete UDP frame's header and payload (valid only during the call),
    /// consumes the frame and returns what `body` returned; nil if no complete frame is buffered yet.
    public mutating func nextUdpFrame<R>(_ body: (UdpHeader, UnsafeRawBufferPointer) -> R) throws(ProtocolError) -> R? {
        let s = start
        let r: Result<(R, Int)?, ProtocolError> = buffer.withUnsafeBytes { all in
            let raw = UnsafeRawBufferPointer(rebasing: all[s...])
            return Result { () throws(ProtocolError) -> (R, Int)? in
                guard let (header, size) = try UdpFrame.parse(raw) else { return nil }
                let payload = UnsafeRawBufferPointer(rebasing: raw[header.prefixSize..<size])
                return (body(header, payload), size)
            }
        }
        guard let (value, size) = try r.get() else { return nil }
        start += size
        return value
    }

    /// The next complete UDP frame, or nil if none is buffered yet.
    public mutating func nextUdpFrame() throws(ProtocolError) -> UdpFrame? {
        try nextUdpFrame { header, payload in UdpFrame(from: header.from, payload: Array(payload)) }
    }

    /// Calls `body` with the buffered, unconsumed bytes.
    public func withBufferedBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let s = start
        return try buffer.withUnsafeBytes { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw[s...]))
        }
    }

    /// Removes and returns everything buffered (e.g. payload that arrived with the last handshake
    /// message, to be forwarded before the relay starts).
    public mutating func takeBuffered() -> [UInt8] {
        let rest = Array(buffer[start...])
        buffer.removeAll(keepingCapacity: false)
        start = 0
        return rest
    }

    /// Discards `count` buffered bytes.
    public mutating func skip(_ count: Int) {
        precondition(count >= 0 && count <= bufferedCount)
        start += count
    }
}
