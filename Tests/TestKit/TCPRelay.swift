// A TCP relay between the client and the server, on threads, that can flip one byte of one
// direction of every connection (to tamper with ciphertext).
import Glibc

/// Forwards connections from its port to 127.0.0.1:targetPort. With `flipAt`, flips (xor 0x20) the
/// byte at that offset of one direction of every connection that gets that far.
public final class TCPRelay: Sendable {
    public enum Direction: Sendable {
        /// From whoever connects to the relay (the client) to the target (the server).
        case toTarget
        case fromTarget
    }

    public let listener: Listener
    public let targetPort: UInt16
    public let flipAt: (direction: Direction, offset: Int)?
    public var port: UInt16 { listener.port }
    private let state = Locked<(flips: [String], fds: [Int32], stopped: Bool)>(([], [], false))

    public init(targetPort: UInt16, flipAt: (direction: Direction, offset: Int)? = nil) throws {
        self.listener = try Listener(backlog: 1024)
        self.targetPort = targetPort
        self.flipAt = flipAt
        spawnThread { [self] in acceptLoop() }
    }

    /// One line per flipped byte: which connection, which direction, the byte before and after.
    public var flips: [String] { state.get.flips }

    private func acceptLoop() {
        var index = 0
        while let fd = listener.acceptBlocking() {
            index += 1
            let inbound = Conn(fd: fd)
            guard let outbound = try? Conn.connect(port: targetPort) else {
                inbound.close()
                continue
            }
            let keep = state.withLock { s -> Bool in
                if s.stopped { return false }
                s.fds += [inbound.fd, outbound.fd]
                return true
            }
            if !keep {
                inbound.close()
                outbound.close()
                return
            }
            let n = index
            spawnThread { [self] in pump(inbound, outbound, .toTarget, connection: n) }
            spawnThread { [self] in pump(outbound, inbound, .fromTarget, connection: n) }
        }
    }

    private func pump(_ from: Conn, _ to: Conn, _ direction: Direction, connection: Int) {
        var offset = 0
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(from.fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                if n == 0 { to.shutdownWrite() } else { Glibc.shutdown(to.fd, Int32(SHUT_RDWR)) }
                break
            }
            if let flip = flipAt, flip.direction == direction, flip.offset >= offset, flip.offset < offset + n {
                let i = flip.offset - offset
                let before = buf[i]
                buf[i] ^= 0x20
                let line = "connection \(connection) \(direction) offset \(flip.offset): \(before) -> \(buf[i])"
                state.withLock { $0.flips.append(line) }
            }
            offset += n
            let sent = buf.withUnsafeBytes { raw in (try? to.send(raw: UnsafeRawBufferPointer(rebasing: raw[0..<n]))) != nil }
            if !sent {
                Glibc.shutdown(from.fd, Int32(SHUT_RDWR))
                break
            }
        }
    }

    public func stop() {
        let fds = state.withLock { s -> [Int32] in
            s.stopped = true
            return s.fds
        }
        listener.shutdown()
        for fd in fds { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }
}
