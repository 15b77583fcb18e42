import ControlPlane

// Received websocket frames as WebSocketStream decodes them: in place, a chunk at a time, the
// undecoded tail (an incomplete header or control frame) offered again in front of the next
// chunk. Input: mode byte (bit 0: we are the server, the peer masks; bit 1: build frames instead
// of decoding raw bytes), split seed, then the bytes or the frames to build.
//
// Properties: raw bytes decode to the same payload, control frames and error in any split; the
// tail a caller must keep never exceeds one header or control frame; payload written never
// outruns input consumed; heap grows with the input, never with a frame's length field (a 64-bit
// length allocates nothing); built frames (fragmented, masked or not, with pings between
// fragments) decode back to exactly their payload and control frames, in any split.

let webSocketFramesTarget = FuzzTarget(
    name: "websocket-frames",
    summary: "WebSocketFrameDecoder: any split, bounded carry and heap, encode/decode round trip"
) { data in
    var input = FuzzInput(data)
    let mode = input.byte()
    let peerMasks = mode & 1 == 1
    let seed = input.byte()
    if mode & 2 == 0 {
        let stream = input.rest()
        var splitter = Splitter(seed: seed)
        let whole = WebSocketFrameChecks.decode([stream[...]], peerMasks: peerMasks)
        let split = WebSocketFrameChecks.decode(splitter.chunks(stream), peerMasks: peerMasks)
        if whole.error == nil && split.error == nil {
            require(whole == split, "split \(split) differs from whole \(whole) for \(hex(stream.prefix(64)))")
        } else {
            require(
                whole.error == split.error, "error \(String(describing: split.error)) in pieces, \(String(describing: whole.error)) whole")
            require(split.payload.starts(with: whole.payload), "payload before the error differs")
        }
    } else {
        WebSocketFrameChecks.roundTrip(&input, peerMasks: peerMasks, seed: seed)
    }
}

struct WebSocketDecoded: Equatable {
    var payload: [UInt8] = []
    var controls: [WebSocketControlFrame] = []
    var error: WebSocketFrameError?
    var atBoundary = true
    var closed = false
}

enum WebSocketFrameChecks {
    static func decode(_ chunks: [ArraySlice<UInt8>], peerMasks: Bool) -> WebSocketDecoded {
        var decoder = WebSocketFrameDecoder(peerMasks: peerMasks)
        var out = WebSocketDecoded()
        var carried: [UInt8] = []
        for chunk in chunks {
            var buffer = carried + chunk
            let count = buffer.count
            let result = boundedHeap(input: count, perByte: 32, fixed: 4096, "WebSocketFrameDecoder.decode") {
                buffer.withUnsafeMutableBytes { raw in
                    Result { () throws(WebSocketFrameError) in try decoder.decode(raw, count: count, controls: &out.controls) }
                }
            }
            switch result {
            case .success(let (payload, consumed)):
                require(payload <= consumed && consumed <= count, "decode: payload \(payload), consumed \(consumed) of \(count)")
                out.payload += buffer[..<payload]
                carried = Array(buffer[consumed...])
                require(
                    carried.count < WebSocketFrame.maxControlFrameSize,
                    "\(carried.count) bytes left undecoded (at most a header or a control frame may be)")
            case .failure(let e):
                requireOneLine(e.description, "WebSocketFrameError")
                out.error = e
                return out
            }
        }
        out.atBoundary = decoder.atBoundary
        out.closed = decoder.closed
        return out
    }

    static func roundTrip(_ input: inout FuzzInput, peerMasks: Bool, seed: UInt8) {
        var stream: [UInt8] = []
        var payload: [UInt8] = []
        var controls: [WebSocketControlFrame] = []
        var inMessage = false
        func mask() -> UInt32? { peerMasks ? input.u32() : nil }
        func frame(_ opcode: UInt8, _ body: [UInt8], fin: Bool) {
            var f = WebSocketFrame.encode(opcode: opcode, payload: body, mask: mask())
            if !fin { f[0] &= 0x7F }
            stream += f
        }
        var closed = false
        while !input.isEmpty && !closed {
            let op = input.byte()
            switch op % 8 {
            case 0, 1, 2, 3:
                // A data frame: its length from the input (sometimes past the input, filled by a pattern).
                let n = op & 0x80 != 0 ? Int(input.u16()) % (op & 0x20 != 0 ? 70_000 : 600) : Int(input.byte())
                let body = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(op)) }
                let fin = op & 0x40 != 0
                frame(inMessage ? 0x0 : 0x2, body, fin: fin)
                payload += body
                inMessage = !fin
            case 4, 5:
                let body = input.take(Int(input.byte()) % 126)
                frame(0x9, body, fin: true)
                controls.append(WebSocketControlFrame(kind: .ping, payload: body))
            case 6:
                let body = input.take(Int(input.byte()) % 126)
                frame(0xA, body, fin: true)
                controls.append(WebSocketControlFrame(kind: .pong, payload: body))
            default:
                guard !inMessage else { continue }
                let body = input.take(Int(input.byte()) % 126)
                frame(0x8, body, fin: true)
                controls.append(WebSocketControlFrame(kind: .close, payload: body))
                closed = true
            }
        }
        var splitter = Splitter(seed: seed)
        let decoded = decode(splitter.chunks(stream), peerMasks: peerMasks)
        require(decoded.error == nil, "built frames refused: \(String(describing: decoded.error))")
        require(decoded.payload == payload, "payload of \(decoded.payload.count) bytes, sent \(payload.count)")
        require(decoded.controls == controls, "control frames \(decoded.controls), sent \(controls)")
        require(
            decoded.atBoundary == !inMessage || closed, "atBoundary \(decoded.atBoundary) with a message \(inMessage ? "open" : "closed")")
        require(decoded.closed == closed, "closed \(decoded.closed), sent a close: \(closed)")
    }
}
