// Small TCP services behind the client, one thread per connection: echo, sink (counts and hashes),
// source (sends and closes), half-close, a recorder, or any handler a test writes; and an echo
// service on one thread with poll(2) for thousands of connections.
import ControlPlane
import Glibc

/// A TCP service on loopback with a kernel-chosen port.
public final class LocalService: @unchecked Sendable {  // mutable state only in `state`
    public let name: String
    public let listener: Listener
    public var port: UInt16 { listener.port }
    private let state = Locked<(accepted: Int, open: Set<Int32>, stopped: Bool)>((0, [], false))
    private let handler: @Sendable (Conn) -> Void

    public init(name: String, ipv6: Bool = false, handler: @escaping @Sendable (Conn) -> Void) throws {
        self.name = name
        self.listener = try Listener(ipv6: ipv6, backlog: 1024)
        self.handler = handler
        spawnThread { [self] in acceptLoop() }
    }

    /// Connections accepted so far.
    public var accepted: Int { state.get.accepted }

    private func acceptLoop() {
        while let fd = listener.acceptBlocking() {
            let keep = state.withLock { s -> Bool in
                if s.stopped { return false }
                s.accepted += 1
                s.open.insert(fd)
                return true
            }
            if !keep {
                Glibc.close(fd)
                return
            }
            let conn = Conn(fd: fd)
            spawnThread { [self] in
                handler(conn)
                state.withLock { _ = $0.open.remove(fd) }
                conn.close()
            }
        }
    }

    /// Stops accepting and wakes every connection's thread.
    public func stop() {
        let fds = state.withLock { s -> Set<Int32> in
            s.stopped = true
            return s.open
        }
        listener.shutdown()
        for fd in fds { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Echoes every byte; on EOF shuts its writing side down.
    public static func echo(ipv6: Bool = false) throws -> LocalService {
        try LocalService(name: "echo", ipv6: ipv6) { conn in
            while true {
                switch conn.readSome(max: 1 << 18, timeout: 60) {
                case .data(let d): if (try? conn.send(d)) == nil { return }
                case .eof:
                    conn.shutdownWrite()
                    return
                case .timeout, .error: return
                }
            }
        }
    }

    /// Reads everything until EOF, then answers with the byte count (u64 LE) and the SHA-256 of
    /// what it received.
    public static func sink() throws -> LocalService {
        try LocalService(name: "sink") { conn in
            guard let all = try? conn.readToEOF(timeout: 120) else { return }
            var reply: [UInt8] = []
            withUnsafeBytes(of: UInt64(all.count).littleEndian) { reply += $0 }
            reply += Digest.sha256(all).bytes
            try? conn.send(reply)
        }
    }

    /// Sends `bytes` and closes.
    public static func source(_ bytes: [UInt8]) throws -> LocalService {
        try LocalService(name: "source") { conn in
            try? conn.send(bytes)
            conn.shutdownWrite()
            _ = conn.waitClosed(timeout: 30)
        }
    }

    /// Greets, reads until EOF, and only then (its reading side done, its writing side still open)
    /// reports what it got, in two writes some time apart, and closes.
    public static func halfClose() throws -> LocalService {
        try LocalService(name: "half-close") { conn in
            try? conn.send("greeting;")
            guard let got = try? conn.readToEOF(timeout: 30) else { return }
            let text = String(decoding: got, as: UTF8.self)
            try? conn.send("saw EOF after \(got.count) bytes;")
            sleepSeconds(0.2)
            try? conn.send("you said <\(text)>")
        }
    }
}

/// A TCP service that records every byte each connection receives until EOF or an error;
/// `finished` counts the connections that ended.
public final class Recorder: Sendable {
    public let received: Locked<[[UInt8]]>
    public let finished: Locked<Int>
    public let service: LocalService

    public init() throws {
        let received = Locked<[[UInt8]]>([])
        let finished = Locked(0)
        self.received = received
        self.finished = finished
        service = try LocalService(name: "recorder") { conn in
            let index = received.withLock { r -> Int in
                r.append([])
                return r.count - 1
            }
            loop: while true {
                switch conn.readSome(max: 1 << 18, timeout: 60) {
                case .data(let d): received.withLock { $0[index] += d }
                case .eof, .error, .timeout: break loop
                }
            }
            finished.withLock { $0 += 1 }
        }
    }
}

/// An echo service on one thread with poll(2): thousands of connections without a thread each.
public final class PollingEcho: @unchecked Sendable {  // `stopped` is locked; the thread owns the rest
    public let listener: Listener
    public var port: UInt16 { listener.port }
    private let stopped = Locked(false)

    public init() throws {
        let listener = try Listener()
        self.listener = listener
        let stopped = self.stopped
        spawnThread {
            var conns: [Int32] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while !stopped.get {
                var fds = [pollfd(fd: listener.fd, events: Int16(POLLIN), revents: 0)]
                fds += conns.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
                guard poll(&fds, nfds_t(fds.count), 100) > 0 else { continue }
                if fds[0].revents != 0 {
                    while true {
                        let fd = acceptCloexec(listener.fd)
                        if fd < 0 { break }
                        conns.append(fd)
                    }
                }
                var closed = Set<Int32>()
                for p in fds.dropFirst() where p.revents != 0 {
                    let n = recv(p.fd, &buffer, buffer.count, 0)
                    if n > 0 {
                        _ = Glibc.send(p.fd, buffer, n, Int32(MSG_NOSIGNAL))
                    } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                        Glibc.close(p.fd)
                        closed.insert(p.fd)
                    }
                }
                if !closed.isEmpty { conns.removeAll { closed.contains($0) } }
            }
            conns.forEach { Glibc.close($0) }
        }
    }

    public func stop() {
        stopped.withLock { $0 = true }
        listener.shutdown()
    }
}
