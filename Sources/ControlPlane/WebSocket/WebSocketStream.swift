import DataPlane
import Glibc

/// A stream that can send each protocol message as a message of its own, as upstream does on
/// the transports that have messages (websocket: one binary message per write).
protocol MessageFramedStream: ByteStream {
    func writeEach(_ messages: [[UInt8]]) async throws(IOError)
}

/// The rathole byte stream carried in binary websocket messages over another stream (a TCP
/// socket, or TLS for wss), after the upgrade. What the peer sends is decoded in place into the
/// reader's buffer; what we send goes out in final binary frames of at most 8 KiB, masked when we
/// are the client. A ping is answered with a pong; a close frame ends the reading side, and our
/// close frame (sent by `shutdownWrite`) ends the writing side, so a FIN each way still maps to
/// one close each way.
///
/// Every operation runs on the home ring, which is where the state below lives; the reader and
/// the writer tasks interleave only at their awaits.
final class WebSocketStream: MessageFramedStream {
    let inner: ByteStream
    let ring: RingExecutor
    /// We are the client: our frames are masked, the peer's must not be.
    let masking: Bool
    private let state: RingBound<State>

    private final class State {
        var decoder: WebSocketFrameDecoder
        /// Received bytes not decoded yet: an incomplete header or control frame, or what followed
        /// the upgrade in its read. `rawIsIncomplete`: decoding them needs more input.
        let raw = ByteBuffer()
        var rawIsIncomplete = false
        /// Payload decoded for a reader whose buffer was too small to decode into.
        let decoded = ByteBuffer()
        var controls: [WebSocketControlFrame] = []
        var writing = false
        var writeWaiters: [UnsafeContinuation<Void, Never>] = []
        /// The payload of a ping to answer once the current writer is done (only the latest counts).
        var pendingPong: [UInt8]?
        var sentClose = false
        var masks: [UInt32] = []

        init(decoder: WebSocketFrameDecoder) { self.decoder = decoder }
    }

    /// Reads into buffers at least this large decode in place; smaller ones go through `decoded`.
    static let directReadMinimum = 16 * 1024
    static let smallReadSize = 2048
    /// Payload framed per write to the inner stream.
    static let writeBatch = 64 * 1024

    init(over inner: ByteStream, ring: RingExecutor, masking: Bool, received: ArraySlice<UInt8> = []) {
        self.inner = inner
        self.ring = ring
        self.masking = masking
        let state = State(decoder: WebSocketFrameDecoder(peerMasks: !masking))
        if !received.isEmpty { state.raw.append(Array(received)) }
        self.state = RingBound(state, ring: ring)
    }

    func shutdown() { inner.shutdown() }
    var isAlive: Bool { inner.isAlive }
    var peerAddress: SocketAddress? { inner.peerAddress }

    func waitReadable() async throws(IOError) {
        try await ring.onRing { () async throws(IOError) in
            let st = state.value
            if !st.decoded.isEmpty || st.decoder.closed || (!st.raw.isEmpty && !st.rawIsIncomplete) { return }
            try await inner.waitReadable()
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws(IOError) -> Int {
        try await ring.onRing { () async throws(IOError) -> Int in
            let st = state.value
            while true {
                if !st.decoded.isEmpty { return copyDecoded(into: buffer) }
                if st.decoder.closed { return 0 }
                let needInput = st.raw.isEmpty || st.rawIsIncomplete
                let direct = buffer.count >= Self.directReadMinimum && st.raw.readable.count <= WebSocketFrame.maxControlFrameSize
                // An idle stream holds no buffer: wait for bytes before taking one.
                if !direct && needInput && timeout == nil { try await inner.waitReadable() }
                let space = direct ? buffer : st.decoded.reserve(st.raw.readable.count + Self.smallReadSize)
                // What is left from before goes in front; it leaves `st.raw` once the read succeeded.
                let carried = st.raw.readable.count
                if carried > 0 { space.copyMemory(from: st.raw.readable) }
                var filled = carried
                if needInput {
                    let n = try await inner.read(into: UnsafeMutableRawBufferPointer(rebasing: space[carried...]), timeout: timeout)
                    if n == 0 {
                        if carried > 0 || !st.decoder.atBoundary { throw Self.failure(.truncated) }
                        return 0
                    }
                    filled += n
                }
                st.raw.consume(carried)
                let payload: Int
                do throws(WebSocketFrameError) {
                    let (count, consumed) = try st.decoder.decode(space, count: filled, controls: &st.controls)
                    payload = count
                    if consumed < filled { st.raw.append(Array(UnsafeRawBufferPointer(rebasing: space[consumed..<filled]))) }
                    st.rawIsIncomplete = !st.raw.isEmpty
                } catch {
                    throw Self.failure(error)
                }
                if !st.controls.isEmpty { try await answerControls() }
                if direct {
                    if payload > 0 { return payload }
                } else {
                    st.decoded.commit(payload)
                    if payload > 0 { return copyDecoded(into: buffer) }
                    st.decoded.consume(0)  // releases the unused space
                }
            }
        }
    }

    func write(_ buffer: UnsafeRawBufferPointer) async throws(IOError) {
        try await ring.onRing { () async throws(IOError) in
            let st = state.value
            if st.sentClose { throw IOError.layer(WebSocketFrameError.writeAfterClose) }
            if buffer.isEmpty { return }
            await lockWrites()
            defer { unlockWrites() }
            var offset = 0
            repeat {
                let chunk = min(buffer.count - offset, Self.writeBatch)
                try await sendFrames(UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + chunk]))
                offset += chunk
            } while offset < buffer.count
            try await sendPendingPong()
        }
    }

    /// Each message in a binary frame of its own, all in one write to the inner stream.
    func writeEach(_ messages: [[UInt8]]) async throws(IOError) {
        try await ring.onRing { () async throws(IOError) in
            let st = state.value
            if st.sentClose { throw IOError.layer(WebSocketFrameError.writeAfterClose) }
            await lockWrites()
            defer { unlockWrites() }
            var frames: [UInt8] = []
            for m in messages { frames += WebSocketFrame.encode(opcode: WebSocketFrame.opBinary, payload: m, mask: nextMask()) }
            try await send(frames)
            try await sendPendingPong()
        }
    }

    func shutdownWrite() async {
        try? await ring.onRing { () async throws(IOError) in
            let st = state.value
            if st.sentClose { return }
            st.sentClose = true
            await lockWrites()
            defer { unlockWrites() }
            // As upstream: a close frame without a status code.
            try await sendControl(.close, [])
            await inner.shutdownWrite()
        }
    }

    func close() { inner.close() }

    func closeWhenPeerDone(grace: Duration) async { await inner.closeWhenPeerDone(grace: grace) }

    // MARK: Reading

    private func copyDecoded(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let st = state.value
        let n = min(buffer.count, st.decoded.readable.count)
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: st.decoded.readable[..<n]))
        st.decoded.consume(n)
        return n
    }

    /// Pings get a pong (now, or after the write in progress); pongs are ignored; a close frame
    /// has already ended the reading side in the st.decoder.
    private func answerControls() async throws(IOError) {
        let st = state.value
        let frames = st.controls
        st.controls.removeAll(keepingCapacity: false)
        for frame in frames where frame.kind == .ping && !st.sentClose {
            st.pendingPong = frame.payload
        }
        if st.pendingPong != nil && !st.writing {
            await lockWrites()
            defer { unlockWrites() }
            try await sendPendingPong()
        }
    }

    private static func failure(_ error: WebSocketFrameError) -> IOError {
        .layer(error)
    }

    // MARK: Writing (with the write lock held)

    private func lockWrites() async {
        let st = state.value
        while st.writing { await withUnsafeContinuation { st.writeWaiters.append($0) } }
        st.writing = true
    }

    private func unlockWrites() {
        let st = state.value
        st.writing = false
        if !st.writeWaiters.isEmpty { st.writeWaiters.removeFirst().resume() }
    }

    private func sendFrames(_ payload: UnsafeRawBufferPointer) async throws(IOError) {
        let frames = max(1, (payload.count + WebSocketFrame.maxSentPayload - 1) / WebSocketFrame.maxSentPayload)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: payload.count + frames * 8, alignment: 16)
        defer { out.deallocate() }
        var size = 0
        var offset = 0
        repeat {
            let n = min(payload.count - offset, WebSocketFrame.maxSentPayload)
            let mask = nextMask()
            size += WebSocketFrame.writeHeader(opcode: WebSocketFrame.opBinary, payloadCount: n, mask: mask, to: out.baseAddress! + size)
            if let mask {
                WebSocketFrame.applyMask(mask, phase: 0, from: payload.baseAddress! + offset, to: out.baseAddress! + size, count: n)
            } else if n > 0 {
                (out.baseAddress! + size).copyMemory(from: payload.baseAddress! + offset, byteCount: n)
            }
            size += n
            offset += n
        } while offset < payload.count
        try await inner.write(UnsafeRawBufferPointer(rebasing: out[..<size]))
    }

    private func sendPendingPong() async throws(IOError) {
        let st = state.value
        guard let payload = st.pendingPong else { return }
        st.pendingPong = nil
        try await sendControl(.pong, payload)
    }

    private func sendControl(_ kind: WebSocketControlFrame.Kind, _ payload: [UInt8]) async throws(IOError) {
        try await send(WebSocketFrame.encode(opcode: kind.rawValue, payload: payload, mask: nextMask()))
    }

    private func send(_ bytes: [UInt8]) async throws(IOError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: bytes)
        try await inner.write(UnsafeRawBufferPointer(buffer))
    }

    /// A fresh masking key when we are the client (RFC 6455 wants them unpredictable), drawn from
    /// a small batch of random bytes.
    private func nextMask() -> UInt32? {
        let st = state.value
        guard masking else { return nil }
        if st.masks.isEmpty {
            st.masks = [UInt32](repeating: 0, count: 32)
            st.masks.withUnsafeMutableBytes { fillSecureRandom($0) }
        }
        return st.masks.removeLast()
    }
}
