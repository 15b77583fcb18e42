// The blocking peers of the DataPlane tests: plain threads that send hashed streams from the random
// pool, drain and hash what arrives, echo, or send until the other side goes away.
import Glibc

/// The result of a blocking peer's stream: what it sent or received, and how it ended
/// (0: cleanly, at EOF or after sending everything; else the errno).
public struct StreamOutcome: Sendable, CustomStringConvertible {
    public var digest: StreamDigest
    public var errno: Int32

    public var description: String { "\(digest), " + (errno == 0 ? "ok" : errnoText(errno)) }
}

public enum Blocking {
    /// Sends all bytes; returns 0 or the errno.
    public static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
        var done = 0
        while done < bytes.count {
            let n = send(fd, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            done += n
        }
        return 0
    }

    public static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Int32 {
        bytes.withUnsafeBytes { sendAll(fd, $0) }
    }

    /// Receives exactly `count` bytes; nil on EOF or error.
    public static func recvExact(_ fd: Int32, count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        let ok = out.withUnsafeMutableBytes { buf -> Bool in
            while done < count {
                let n = recv(fd, buf.baseAddress! + done, count - done, 0)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                done += n
            }
            return true
        }
        return ok ? out : nil
    }

    /// Sends `count` bytes taken from the random pool in 256 KiB slices chosen by `seed`, hashing
    /// them; then shuts down writing if asked.
    public static func sendStream(_ fd: Int32, count: Int, seed: Int, shutdownAfter: Bool = true) -> StreamOutcome {
        let hasher = StreamHasher()
        let chunk = 256 * 1024
        var left = count
        var k = 0
        while left > 0 {
            let slice = RandomPool.shared.slice(seed: seed &* 1_000_003 &+ k, count: min(chunk, left))
            hasher.update(slice)
            let e = sendAll(fd, slice)
            if e != 0 { return StreamOutcome(digest: hasher.finish(), errno: e) }
            left -= slice.count
            k += 1
        }
        if shutdownAfter { shutdown(fd, Int32(SHUT_WR)) }
        return StreamOutcome(digest: hasher.finish(), errno: 0)
    }

    /// Receives until EOF or an error, hashing everything; `progress` counts bytes as they arrive.
    public static func drain(_ fd: Int32, progress: ByteCounter? = nil) -> StreamOutcome {
        let hasher = StreamHasher()
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer { buffer.deallocate() }
        while true {
            let n = recv(fd, buffer, size, 0)
            if n < 0 {
                if errno == EINTR { continue }
                return StreamOutcome(digest: hasher.finish(), errno: errno)
            }
            if n == 0 { return StreamOutcome(digest: hasher.finish(), errno: 0) }
            hasher.update(UnsafeRawBufferPointer(start: buffer, count: n))
            progress?.add(n)
        }
    }

    /// Sends pool data until sending fails (the relay under test is expected to go away).
    public static func sendUntilError(_ fd: Int32, progress: ByteCounter) -> Int32 {
        var k = 0
        while true {
            let slice = RandomPool.shared.slice(seed: k, count: 256 * 1024)
            let e = sendAll(fd, slice)
            if e != 0 { return e }
            progress.add(slice.count)
            k += 1
        }
    }

    /// Echoes everything back until EOF, then shuts down writing. Returns 0 or the errno.
    public static func echo(_ fd: Int32) -> Int32 {
        let size = 64 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let n = recv(fd, buffer, size, 0)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            if n == 0 {
                shutdown(fd, Int32(SHUT_WR))
                return 0
            }
            let e = sendAll(fd, UnsafeRawBufferPointer(start: buffer, count: n))
            if e != 0 { return e }
        }
    }
}
