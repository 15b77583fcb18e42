// A blocking TCP connection for test threads (visitors, services, hand-made peers), where every
// read has a timeout and writes give up after 20 s, so a broken program fails a test instead of
// hanging it.
import Glibc
import Synchronization

public enum ReadResult: Equatable, Sendable {
    case data([UInt8])
    case eof
    case timeout
    case error(Int32)
}

/// A connected TCP socket (blocking, close-on-exec, TCP_NODELAY).
public final class Conn: Sendable {
    public let fd: Int32
    private let isClosed = Atomic<Bool>(false)

    public init(fd: Int32) {
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close() }

    /// Connects to 127.0.0.1:port (or [::1]:port); throws on refusal.
    public static func connect(port: UInt16, ipv6: Bool = false) throws -> Conn {
        let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errnoText())") }
        var addr = Loopback.address(ipv6: ipv6, port: port)
        if Loopback.connect(fd, &addr, ipv6: ipv6) != 0 {
            let e = errno
            Glibc.close(fd)
            throw TestFailure("connect \(ipv6 ? "[::1]" : "127.0.0.1"):\(port): \(errnoText(e))")
        }
        return Conn(fd: fd)
    }

    /// Connects, retrying while refused, for up to `timeout` seconds.
    public static func connect(port: UInt16, ipv6: Bool = false, retryFor timeout: Double) throws -> Conn {
        let deadline = monoNow() + timeout
        while true {
            do { return try connect(port: port, ipv6: ipv6) } catch {
                if monoNow() >= deadline { throw error }
                sleepSeconds(0.05)
            }
        }
    }

    public func send(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try send(raw: $0) }
    }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    public func send(raw: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < raw.count {
            let n = Glibc.send(fd, raw.baseAddress! + done, raw.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                throw TestFailure("send: \(errnoText())")
            }
            done += n
        }
    }

    /// Waits up to `timeout` seconds for the socket to become readable.
    public func waitReadable(timeout: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = monoNow() + timeout
        while true {
            let left = max(0, deadline - monoNow())
            let rc = poll(&p, 1, Int32(left * 1000))
            if rc > 0 { return true }
            if rc == 0 { return false }
            if errno != EINTR { return true }
        }
    }

    /// One recv of up to `max` bytes, waiting at most `timeout` seconds.
    public func readSome(max: Int = 65536, timeout: Double) -> ReadResult {
        guard waitReadable(timeout: timeout) else { return .timeout }
        var buf = [UInt8](repeating: 0, count: max)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, max, Int32(MSG_DONTWAIT)) }
            if n > 0 { return .data(Array(buf[0..<n])) }
            if n == 0 { return .eof }
            if errno == EINTR { continue }
            if errno == EAGAIN { return .timeout }
            return .error(errno)
        }
    }

    /// Exactly `count` bytes within `timeout` seconds overall.
    public func readExact(_ count: Int, timeout: Double) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        let deadline = monoNow() + timeout
        while out.count < count {
            switch readSome(max: min(count - out.count, 1 << 20), timeout: max(0, deadline - monoNow())) {
            case .data(let d): out += d
            case .eof: throw TestFailure("EOF after \(out.count) of \(count) bytes (got \(hexString(out.prefix(64))))")
            case .timeout: throw TestFailure("timed out after \(out.count) of \(count) bytes (got \(hexString(out.prefix(64))))")
            case .error(let e): throw TestFailure("recv error \(errnoText(e)) after \(out.count) of \(count) bytes")
            }
        }
        return out
    }

    /// Everything until EOF (or a reset), within `timeout` seconds overall.
    public func readToEOF(timeout: Double, limit: Int = 256 << 20) throws -> [UInt8] {
        var out: [UInt8] = []
        let deadline = monoNow() + timeout
        while true {
            switch readSome(max: 1 << 20, timeout: max(0, deadline - monoNow())) {
            case .data(let d):
                out += d
                if out.count > limit { throw TestFailure("more than \(limit) bytes") }
            case .eof: return out
            case .timeout: throw TestFailure("no EOF within \(timeout)s (got \(out.count) bytes)")
            case .error(let e): throw TestFailure("recv error \(errnoText(e)) after \(out.count) bytes")
            }
        }
    }

    /// Waits for the peer to close (EOF or reset) within `timeout`; returns what arrived before, or
    /// nil if the connection was still open at the deadline.
    public func waitClosed(timeout: Double) -> [UInt8]? {
        var got: [UInt8] = []
        let deadline = monoNow() + timeout
        while true {
            switch readSome(timeout: max(0, deadline - monoNow())) {
            case .data(let d): got += d
            case .eof, .error: return got
            case .timeout: return nil
            }
        }
    }

    /// True when the peer has closed (EOF or reset is waiting), without waiting; the bytes before
    /// the end are consumed.
    public var peerClosed: Bool {
        while true {
            switch readSome(timeout: 0) {
            case .data: continue
            case .eof, .error: return true
            case .timeout: return false
            }
        }
    }

    public func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Closes with a reset (RST) instead of a FIN.
    public func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close()
    }

    public func close() {
        if !isClosed.exchange(true, ordering: .acquiringAndReleasing) { Glibc.close(fd) }
    }
}
