// Thousands of visitors at once from one thread: non-blocking connects, poll(2), 8 bytes each way.
import Glibc

/// Many visitors connecting at once, each sending 8 bytes of its own and waiting for their echo;
/// one thread, non-blocking sockets and poll(2).
public final class VisitorBurst {
    public struct Result: Sendable {
        public var served = 0
        public var failed = 0
        public var unanswered = 0
    }

    private struct Visitor {
        var fd: Int32
        var tag: UInt64
        var sent = false
        var got: [UInt8] = []
        var done = false
    }

    public let port: UInt16
    private var visitors: [Visitor] = []
    private var result = Result()

    public init(port: UInt16, count: Int) {
        self.port = port
        visitors.reserveCapacity(count)
        for i in 0..<count { visitors.append(Visitor(fd: -1, tag: 0x5600_0000_0000 | UInt64(i))) }
    }

    public static func run(port: UInt16, count: Int, timeout: Double) -> Result {
        let burst = VisitorBurst(port: port, count: count)
        burst.connectAll()
        return burst.finish(timeout: timeout)
    }

    /// Starts every connection (non-blocking connects, as fast as the kernel takes them).
    public func connectAll() {
        var address = Loopback.address(ipv6: false, port: port)
        for i in visitors.indices {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else {
                visitors[i].done = true
                result.failed += 1
                continue
            }
            let rc = Loopback.connect(fd, &address, ipv6: false)
            if rc != 0 && errno != EINPROGRESS {
                Glibc.close(fd)
                visitors[i].done = true
                result.failed += 1
                continue
            }
            visitors[i].fd = fd
        }
    }

    /// Sends each visitor's bytes once connected and waits for every echo; closes everything.
    public func finish(timeout: Double) -> Result {
        let deadline = monoNow() + timeout
        while monoNow() < deadline {
            var fds: [pollfd] = []
            var index: [Int] = []
            for (i, v) in visitors.enumerated() where !v.done {
                fds.append(pollfd(fd: v.fd, events: Int16(v.sent ? POLLIN : POLLOUT), revents: 0))
                index.append(i)
            }
            if fds.isEmpty { break }
            guard poll(&fds, nfds_t(fds.count), 200) > 0 else { continue }
            for (k, p) in fds.enumerated() where p.revents != 0 {
                step(index[k], revents: p.revents)
            }
        }
        for i in visitors.indices where !visitors[i].done {
            result.unanswered += 1
            Glibc.close(visitors[i].fd)
            visitors[i].done = true
        }
        return result
    }

    private func step(_ i: Int, revents: Int16) {
        var v = visitors[i]
        defer { visitors[i] = v }
        func end(_ ok: Bool) {
            if ok { result.served += 1 } else { result.failed += 1 }
            Glibc.close(v.fd)
            v.done = true
        }
        if !v.sent {
            var tag = v.tag.littleEndian
            guard revents & Int16(POLLOUT) != 0, Glibc.send(v.fd, &tag, 8, Int32(MSG_NOSIGNAL)) == 8 else { return end(false) }
            v.sent = true
            return
        }
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = recv(v.fd, &buffer, 8 - v.got.count, 0)
        guard n > 0 else { return end(false) }
        v.got += buffer[0..<n]
        guard v.got.count == 8 else { return }
        end(v.got == withUnsafeBytes(of: v.tag.littleEndian) { Array($0) })
    }
}
