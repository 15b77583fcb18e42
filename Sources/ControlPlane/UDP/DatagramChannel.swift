import DataPlane
import Logging

/// A data channel that carries UDP frames (`u8 header length, UdpHeader, payload`) both ways.
/// Frames queued with `send` are written in batches by the channel's writer, so a burst of
/// datagrams costs one write; a backed-up channel drops datagrams rather than growing without
/// bound. Lives on one ring: `send` and `close` are called on its thread.
final class DatagramChannel: Sendable {
    let stream: ByteStream
    let ring: RingExecutor
    let sessionKey: Digest?
    private let wake: RingEvent
    private let state: RingBound<State>
    static let maxQueuedBytes = 4 << 20

    private final class State {
        var queued = ByteBuffer()
        var alive = true
    }

    /// Why a channel ended.
    enum End: CustomStringConvertible {
        case closedByPeer
        case closed
        case failed(IOError)
        /// The peer broke the framing: a bad frame, or the channel ended inside one.
        case malformed(ProtocolError)
        case endedInsideFrame(received: Int)

        var isPeersFault: Bool {
            switch self {
            case .malformed, .endedInsideFrame: return true
            case .closedByPeer, .closed, .failed: return false
            }
        }

        var description: String {
            switch self {
            case .closedByPeer: return "closed by the peer"
            case .closed: return "closed"
            case .failed(let e): return e.description
            case .malformed(let e): return "malformed UDP frame: \(e)"
            case .endedInsideFrame(let n):
                return "malformed UDP frame: the channel ended in the middle of a frame (\(n) bytes of it received)"
            }
        }
    }

    init(stream: ByteStream, ring: RingExecutor, sessionKey: Digest? = nil) {
        self.stream = stream
        self.ring = ring
        self.sessionKey = sessionKey
        wake = RingEvent(ring: ring)
        state = RingBound(State(), ring: ring)
    }

    var alive: Bool { state.value.alive }

    /// Queues one datagram from (server side) or for (client side) `peer`; false when it was
    /// dropped (the channel is backed up or closed, or the datagram too big).
    @discardableResult
    func send(_ payload: UnsafeRawBufferPointer, peer: PeerAddress) -> Bool {
        let s = state.value
        guard s.alive, payload.count <= UdpHeader.maxPayload, s.queued.readable.count < Self.maxQueuedBytes else { return false }
        let prefix = UdpHeader.prefixSize(for: peer)
        let space = s.queued.reserve(prefix + payload.count)
        _ = try? UdpHeader.encodePrefix(from: peer, payloadLength: payload.count, into: space)
        UnsafeMutableRawBufferPointer(rebasing: space[prefix...]).copyMemory(from: payload)
        s.queued.commit(prefix + payload.count)
        wake.signal()
        return true
    }

    /// Queues a protocol message ahead of the frames (StartForwardUdp).
    func send(_ message: some WireMessage) {
        state.value.queued.append(message.encode())
        wake.signal()
    }

    /// Runs the channel until it ends: its writer, and its reader, which hands each frame to
    /// `deliver`. The payloads stay valid until `endOfBatch` runs, after the frames of each read.
    /// A malformed frame ends this channel only.
    func run(_ deliver: (UdpHeader, UnsafeRawBufferPointer) -> Void, endOfBatch: () -> Void) async -> End {
        async let writer: Void = runWriter()
        let end = await runReader(deliver, endOfBatch: endOfBatch)
        close()
        await writer
        return end
    }

    /// Writes queued bytes until the channel fails or is closed.
    private func runWriter() async {
        var sending = ByteBuffer()  // swapped with `queued`: each fills while the other is written
        while state.value.alive {
            if state.value.queued.isEmpty {
                do { _ = try await wake.wait(timeout: nil) } catch { break }
                continue
            }
            swap(&state.value.queued, &sending)
            do {
                try await stream.write(sending.readable)
            } catch {
                break
            }
            sending.consume(sending.readable.count, keepingCapacity: true)
        }
        close()
    }

    private func runReader(_ deliver: (UdpHeader, UnsafeRawBufferPointer) -> Void, endOfBatch: () -> Void) async -> End {
        let input = ByteBuffer()
        while state.value.alive {
            let space = input.reserve(UdpHeader.maxFrameSize)
            let n: Int
            do { n = try await stream.read(into: space) } catch { return .failed(error) }
            if n == 0 {
                if input.isEmpty { return .closedByPeer }
                return .endedInsideFrame(received: input.readable.count)
            }
            input.commit(n)
            var parsed = 0
            do throws(ProtocolError) {
                let bytes = input.readable
                while let (header, size) = try UdpFrame.parse(UnsafeRawBufferPointer(rebasing: bytes[parsed...])) {
                    let payload = bytes[(parsed + header.prefixSize)..<(parsed + size)]
                    deliver(header, UnsafeRawBufferPointer(rebasing: payload))
                    parsed += size
                }
            } catch {
                return .malformed(error)
            }
            endOfBatch()
            input.consume(parsed, keepingCapacity: true)
        }
        return .closed
    }

    /// Logs why a channel ended: a warning when the peer broke the framing, else debug.
    static func logEnd(_ end: End, service: String, logger: Logger) {
        if end.isPeersFault {
            logger.warning("service \(service): udp data channel closed: \(end)")
        } else {
            logger.debug("service \(service): udp data channel ended: \(end)")
        }
    }

    func close() {
        let s = state.value
        guard s.alive else { return }
        s.alive = false
        wake.signal()
        stream.shutdown()
        stream.close()
    }
}
