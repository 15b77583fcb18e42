// RFC 6455 framing, as rathole's websocket transport (tungstenite) uses it: binary messages carry
// the protocol stream, the client masks every frame, ping/pong/close are the only control frames.
// Pure: bytes in, values out.

/// Why a peer's frames were refused. Every case reads as one line through `description`.
public enum WebSocketFrameError: Error, Equatable, Sendable, CustomStringConvertible {
    case reservedBitsSet
    case unknownOpcode(UInt8)
    /// A text message: rathole sends binary messages only (upstream refuses text the same way).
    case textMessage
    case unmaskedClientFrame
    case maskedServerFrame
    case frameTooLarge(UInt64)
    case messageTooLarge(Int)
    case fragmentedControlFrame
    case controlFrameTooLarge(UInt64)
    case continuationWithoutMessage
    case messageInterrupted
    /// The stream ended inside a frame or a fragmented message.
    case truncated
    /// Our side wrote after sending its close frame.
    case writeAfterClose

    public var description: String {
        switch self {
        case .reservedBitsSet: return "websocket frame with reserved bits set (no extension was negotiated)"
        case .unknownOpcode(let op): return "websocket frame with unknown opcode \(op)"
        case .textMessage: return "websocket text message (rathole sends binary messages only)"
        case .unmaskedClientFrame: return "unmasked websocket frame from a client"
        case .maskedServerFrame: return "masked websocket frame from a server"
        case .frameTooLarge(let n): return "websocket frame of \(n) bytes (limit \(WebSocketFrame.maxFrameSize))"
        case .messageTooLarge(let n): return "websocket message of \(n)+ bytes (limit \(WebSocketFrame.maxMessageSize))"
        case .fragmentedControlFrame: return "fragmented websocket control frame"
        case .controlFrameTooLarge(let n): return "websocket control frame of \(n) bytes (limit 125)"
        case .continuationWithoutMessage: return "websocket continuation frame outside a message"
        case .messageInterrupted: return "new websocket message before the previous one ended"
        case .truncated: return "connection closed in the middle of a websocket frame"
        case .writeAfterClose: return "websocket write after our close frame"
        }
    }
}

/// A control frame that arrived among the data.
public struct WebSocketControlFrame: Equatable, Sendable {
    public enum Kind: UInt8, Sendable {
        case close = 0x8
        case ping = 0x9
        case pong = 0xA
    }

    public var kind: Kind
    public var payload: [UInt8]

    public init(kind: Kind, payload: [UInt8]) {
        self.kind = kind
        self.payload = payload
    }
}

public enum WebSocketFrame {
    /// Upstream (tungstenite's defaults) refuses larger frames and messages; so do we. Payloads are
    /// streamed, never buffered whole, so these bound nothing in memory: they are the protocol's
    /// limits, kept identical at both ends.
    public static let maxFrameSize = 16 << 20
    public static let maxMessageSize = 64 << 20
    /// Data frames we send carry at most this much, as upstream's copy loop (8 KiB reads) does.
    public static let maxSentPayload = 8192
    /// The largest frame header: 2 bytes, a 64-bit length, a masking key.
    public static let maxHeaderSize = 14
    /// The largest unit the decoder must see whole: a control frame with its header.
    public static let maxControlFrameSize = maxHeaderSize + 125

    static let opContinuation: UInt8 = 0x0
    static let opText: UInt8 = 0x1
    static let opBinary: UInt8 = 0x2

    /// The header size of a frame with `payloadCount` bytes.
    public static func headerSize(payloadCount: Int, masked: Bool) -> Int {
        let length = payloadCount < 126 ? 0 : payloadCount <= 0xFFFF ? 2 : 8
        return 2 + length + (masked ? 4 : 0)
    }

    /// Writes a final frame's header at `out`; returns its size. `mask` is the masking key in wire
    /// order (nil: unmasked, as a server sends).
    @discardableResult
    public static func writeHeader(opcode: UInt8, payloadCount: Int, mask: UInt32?, to out: UnsafeMutableRawPointer) -> Int {
        out.storeBytes(of: 0x80 | opcode, toByteOffset: 0, as: UInt8.self)
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        var size: Int
        if payloadCount < 126 {
            out.storeBytes(of: maskBit | UInt8(payloadCount), toByteOffset: 1, as: UInt8.self)
            size = 2
        } else if payloadCount <= 0xFFFF {
            out.storeBytes(of: maskBit | 126, toByteOffset: 1, as: UInt8.self)
            out.storeBytes(of: UInt16(payloadCount).bigEndian, toByteOffset: 2, as: UInt16.self)
            size = 4
        } else {
            out.storeBytes(of: maskBit | 127, toByteOffset: 1, as: UInt8.self)
            out.storeBytes(of: UInt64(payloadCount).bigEndian, toByteOffset: 2, as: UInt64.self)
            size = 10
        }
        if let mask {
            out.storeBytes(of: mask, toByteOffset: size, as: UInt32.self)
            size += 4
        }
        return size
    }

    /// One complete frame (header and payload, masked when `mask` is given).
    public static func encode(opcode: UInt8, payload: [UInt8], mask: UInt32?) -> [UInt8] {
        let header = headerSize(payloadCount: payload.count, masked: mask != nil)
        return [UInt8](unsafeUninitializedCapacity: header + payload.count) { out, count in
            let base = UnsafeMutableRawPointer(out.baseAddress!)
            writeHeader(opcode: opcode, payloadCount: payload.count, mask: mask, to: base)
            payload.withUnsafeBytes { p in
                if let mask {
                    applyMask(mask, phase: 0, from: p.baseAddress, to: base + header, count: p.count)
                } else if p.count > 0 {
                    (base + header).copyMemory(from: p.baseAddress!, byteCount: p.count)
                }
            }
            count = header + payload.count
        }
    }

    /// XORs `count` bytes with the masking key (wire-order bytes, loaded as stored), starting at
    /// byte `phase` of the key; returns the phase after them. `to` may equal `from`, or lie before
    /// it in the same buffer.
    @discardableResult
    public static func applyMask(
        _ mask: UInt32, phase: Int, from src: UnsafeRawPointer?, to dst: UnsafeMutableRawPointer,
        count: Int
    ) -> Int {
        guard count > 0, let src else { return phase }
        // Little-endian: byte i of `key` is the key byte for position i (mod 8) of this run.
        let shift = UInt32(8 * phase)
        let rotated = phase == 0 ? mask : (mask >> shift) | (mask << (32 - shift))
        let key = UInt64(rotated) | UInt64(rotated) << 32
        var i = 0
        while i + 8 <= count {
            let word = src.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            dst.storeBytes(of: word ^ key, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < count {
            let byte = src.load(fromByteOffset: i, as: UInt8.self)
            dst.storeBytes(of: byte ^ UInt8(truncatingIfNeeded: key >> UInt64(8 * (i & 7))), toByteOffset: i, as: UInt8.self)
            i += 1
        }
        return (phase + count) & 3
    }
}

#if !_endian(little)
#error("WebSocketFrame.applyMask assumes a little-endian machine")
#endif
