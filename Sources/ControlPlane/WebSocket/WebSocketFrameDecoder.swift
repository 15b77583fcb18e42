/// Turns received frames back into the byte stream they carry, in place: the payload of every
/// data frame is unmasked and moved to the front of the buffer, headers and control frames are
/// taken out. Payloads are streamed (a frame may end in a later buffer); only a frame header or a
/// control frame (at most `WebSocketFrame.maxControlFrameSize` bytes) must be offered whole, so the
/// caller keeps what `decode` leaves unconsumed and offers it again in front of the next bytes.
public struct WebSocketFrameDecoder: Sendable {
    /// A server decodes a client's frames, which must be masked; a client, a server's, which must not.
    public let peerMasks: Bool

    /// Payload bytes of the current data frame still to come.
    private var remaining = 0
    private var mask: UInt32 = 0
    private var maskPhase = 0
    /// Inside a fragmented message (a data frame without FIN was seen).
    private var inMessage = false
    private var messageSize = 0
    /// A close frame arrived: nothing after it is decoded.
    public private(set) var closed = false

    public init(peerMasks: Bool) { self.peerMasks = peerMasks }

    /// True between frames and messages: the stream may end here.
    public var atBoundary: Bool { remaining == 0 && !inMessage }

    /// Decodes `buffer[0..<count]`. Returns the number of payload bytes now at the front of the
    /// buffer and the number of input bytes consumed; the bytes after `consumed` are an incomplete
    /// header or control frame. Control frames are appended to `controls`; after a close frame
    /// the rest of the input is consumed and ignored.
    public mutating func decode(
        _ buffer: UnsafeMutableRawBufferPointer, count: Int,
        controls: inout [WebSocketControlFrame]
    ) throws(WebSocketFrameError) -> (payload: Int, consumed: Int) {
        guard count > 0, let base = buffer.baseAddress else { return (0, 0) }
        var read = 0
        var written = 0
        while read < count {
            if closed { return (written, count) }
            if remaining > 0 {
                let n = min(remaining, count - read)
                if peerMasks {
                    maskPhase = WebSocketFrame.applyMask(mask, phase: maskPhase, from: base + read, to: base + written, count: n)
                } else if written != read {
                    (base + written).copyMemory(from: base + read, byteCount: n)  // memmove: regions may overlap
                }
                read += n
                written += n
                remaining -= n
                continue
            }
            guard let used = try header(base + read, available: count - read, controls: &controls) else { break }
            read += used
        }
        return (written, read)
    }

    /// Reads one frame header (or a whole control frame); nil when more bytes are needed.
    private mutating func header(
        _ p: UnsafeMutableRawPointer, available: Int,
        controls: inout [WebSocketControlFrame]
    ) throws(WebSocketFrameError) -> Int? {
        let b0 = p.load(as: UInt8.self)
        if b0 & 0x70 != 0 { throw .reservedBitsSet }
        let fin = b0 & 0x80 != 0
        let opcode = b0 & 0x0F
        switch opcode {
        case WebSocketFrame.opContinuation, WebSocketFrame.opBinary, 0x8, 0x9, 0xA: break
        case WebSocketFrame.opText: throw .textMessage
        default: throw .unknownOpcode(opcode)
        }
        guard available >= 2 else { return nil }
        let b1 = p.load(fromByteOffset: 1, as: UInt8.self)
        let masked = b1 & 0x80 != 0
        if masked != peerMasks { throw peerMasks ? .unmaskedClientFrame : .maskedServerFrame }
        var size = 2
        var length = UInt64(b1 & 0x7F)
        if length == 126 {
            guard available >= 4 else { return nil }
            length = UInt64(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
            size = 4
        } else if length == 127 {
            guard available >= 10 else { return nil }
            length = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt64.self))
            size = 10
        }
        let isControl = opcode & 0x8 != 0
        if isControl {
            if !fin { throw .fragmentedControlFrame }
            if length > 125 { throw .controlFrameTooLarge(length) }
        } else if length > UInt64(WebSocketFrame.maxFrameSize) {
            throw .frameTooLarge(length)
        }
        if masked { size += 4 }
        guard available >= size else { return nil }
        let key = masked ? p.loadUnaligned(fromByteOffset: size - 4, as: UInt32.self) : 0
        let payloadCount = Int(length)

        if isControl {
            guard available >= size + payloadCount else { return nil }
            var payload = [UInt8](repeating: 0, count: payloadCount)
            payload.withUnsafeMutableBytes { out in
                if payloadCount > 0 {
                    WebSocketFrame.applyMask(key, phase: 0, from: p + size, to: out.baseAddress!, count: payloadCount)
                }
            }
            let kind = WebSocketControlFrame.Kind(rawValue: opcode)!
            controls.append(WebSocketControlFrame(kind: kind, payload: payload))
            if kind == .close { closed = true }
            return size + payloadCount
        }

        if opcode == WebSocketFrame.opContinuation {
            if !inMessage { throw .continuationWithoutMessage }
        } else {
            if inMessage { throw .messageInterrupted }
            messageSize = 0
        }
        messageSize += payloadCount
        if messageSize > WebSocketFrame.maxMessageSize { throw .messageTooLarge(messageSize) }
        inMessage = !fin
        remaining = payloadCount
        mask = key
        maskPhase = 0
        return size
    }
}
