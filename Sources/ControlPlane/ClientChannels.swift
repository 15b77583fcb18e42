import DataPlane
import Synchronization

/// The data channels of one control session on the client: what the server asked for, and how
/// many are being opened right now. At most `maxOpening` connect at once, so a burst of requests
/// (thousands of visitors arriving together) neither floods the server with connects nor runs the
/// client out of descriptors; the rest follow as those finish.
final class DataChannelOpener: Sendable {
    static let maxOpening = 64
    /// Connects to the server per data channel, the later ones after `retryDelay`: the server may
    /// be busy accepting, and a lost channel leaves a visitor waiting.
    static let connectAttempts = 3
    /// How long the local service may take to accept a forwarded connection.
    static let localConnectTimeout: Duration = .seconds(10)

    static func retryDelay(after attempt: Int) -> Duration { .milliseconds(100 * attempt) }

    let service: ClientService
    let remote: Endpoint
    let sessionKey: Digest
    /// Set when the channels are plain sockets straight to the server: they are set up without a
    /// task (`DirectDataChannel`).
    let direct: (TCPTransport, SocketAddress)?
    private let counts = Mutex<(opening: Int, queued: Int)>((0, 0))

    init(service: ClientService, remote: Endpoint, sessionKey: Digest, transport: any Transport) {
        self.service = service
        self.remote = remote
        self.sessionKey = sessionKey
        let tcp = transport as? TCPTransport
        direct = tcp.flatMap { tcp in tcp.directAddress(of: remote).map { (tcp, $0) } }
    }

    /// `count` more channels were asked for; returns how many to start opening now.
    func request(_ count: Int) -> Int {
        counts.withLock { c in
            let now = min(count, Self.maxOpening - c.opening)
            c.opening += now
            c.queued += count - now
            return now
        }
    }

    /// One channel is open (or failed to open); true when the next one asked for takes its place.
    func finished() -> Bool {
        counts.withLock { c in
            if c.queued > 0 {
                c.queued -= 1
                return true
            }
            c.opening -= 1
            return false
        }
    }
}

/// The server's commands on a control channel, read a buffer at a time: a batch of
/// CreateDataChannel (one per waiting visitor) arrives as one chunk and costs one read.
final class CommandReader {
    private var decoder = WireDecoder()
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)

    deinit { buffer.deallocate() }

    /// Waits for more bytes; `.io(.timedOut)` when none came within `timeout`.
    func fill(from stream: ByteStream, timeout: Duration?) async throws(ControlError) {
        let n: Int
        do throws(IOError) {
            n = try await stream.read(into: buffer, timeout: timeout)
        } catch {
            throw .io(error)
        }
        if n == 0 { throw .io(.endOfStream) }
        decoder.feed(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
    }

    /// The next complete command, if one is buffered.
    func next() throws(ControlError) -> ControlChannelCmd? {
        do throws(ProtocolError) {
            return try decoder.next(ControlChannelCmd.self)
        } catch {
            throw .protocolViolation(error)
        }
    }
}

/// Delays between reconnection attempts: doubling from 100 ms up to `cap` (the service's
/// retry_interval), each one drawn at random from the upper half of its step ("equal jitter"), so
/// that the clients of a restarted server do not all come back in the same millisecond.
struct Backoff {
    static let first: Duration = .milliseconds(100)
    let cap: Duration
    private var step = Backoff.first

    init(cap: Duration) { self.cap = max(cap, Self.first) }

    mutating func next() -> Duration {
        var random = SystemRandomNumberGenerator()
        return next(using: &random)
    }

    mutating func next(using random: inout some RandomNumberGenerator) -> Duration {
        let current = min(step, cap)
        step = min(step * 2, cap)
        let nanoseconds = Double(current.components.seconds) * 1e9 + Double(current.components.attoseconds) / 1e9
        return .nanoseconds(Int64(nanoseconds * Double.random(in: 0.5...1.0, using: &random)))
    }

    mutating func reset() { step = Self.first }
}
