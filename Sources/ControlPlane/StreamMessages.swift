import DataPlane

/// Reading and writing protocol messages on a stream.
extension ByteStream {
    /// Reads one fixed-size protocol message, giving up after `timeout` without a byte, or when
    /// `deadline` (for the whole message) passes.
    func readMessage<M: WireMessage>(
        _ type: M.Type, timeout: Duration? = nil, deadline: ContinuousClock.Instant? = nil
    )
        async throws(ControlError) -> M
    {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: M.size, alignment: 8)
        defer { buffer.deallocate() }
        var done = 0
        do throws(IOError) {
            // The timeout applies to each read; the bytes of a 4-37 byte message arrive together.
            while done < buffer.count {
                var limit = timeout
                if let deadline {
                    let left = deadline - .now
                    guard left > .zero else { throw IOError.timedOut(operation: "handshake") }
                    limit = min(limit ?? left, left)
                }
                let n = try await read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), timeout: limit)
                if n == 0 { throw IOError.endOfStream }
                done += n
            }
        } catch {
            throw .io(error)
        }
        do throws(ProtocolError) {
            return try M(decoding: UnsafeRawBufferPointer(buffer))
        } catch {
            throw .protocolViolation(error)
        }
    }

    /// Writes one or more protocol messages in one go (on websocket, one message each, as upstream).
    func writeMessages(_ messages: [any WireMessage]) async throws(ControlError) {
        if let framed = self as? MessageFramedStream {
            do throws(IOError) { try await framed.writeEach(messages.map { $0.encode() }) } catch { throw .io(error) }
            return
        }
        var bytes: [UInt8] = []
        for m in messages { m.encode(appendingTo: &bytes) }
        try await writeBytes(bytes)
    }

    func writeMessage(_ message: some WireMessage) async throws(ControlError) {
        try await writeBytes(message.encode())
    }

    /// Writes the first message on a new connection: straight into the socket's empty buffer when
    /// the stream is a plain socket (no ring round trip), else through the stream.
    func writeFirstMessage(_ message: some WireMessage) async throws(ControlError) {
        let bytes = message.encode()
        var sent = 0
        if let socket = self as? SocketStream {
            sent = bytes.withUnsafeBytes { (try? socket.sendNow($0)) ?? 0 }
        }
        if sent < bytes.count { try await writeBytes(Array(bytes[sent...])) }
    }

    func writeBytes(_ bytes: [UInt8]) async throws(ControlError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: bytes)
        do throws(IOError) {
            try await write(UnsafeRawBufferPointer(buffer))
        } catch {
            throw .io(error)
        }
    }
}
