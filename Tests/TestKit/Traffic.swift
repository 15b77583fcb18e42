// Visitors through a tunnel to an echo service: one round trip, a bulk transfer checked by hash,
// many connections at once, probing until forwarding works, and a connection kept busy across a
// reload or restart.
import ControlPlane
import Glibc

/// One visitor through `port` to an echo service: sends `payload`, expects it back.
public func echoOnce(port: UInt16, payload: [UInt8], ipv6: Bool = false, timeout: Double = 15) throws {
    let c = try Conn.connect(port: port, ipv6: ipv6)
    defer { c.close() }
    try c.send(payload)
    let back = try c.readExact(payload.count, timeout: timeout)
    guard back == payload else { throw TestFailure("echo returned different bytes") }
}

/// Tries an echo through `port` until it works or `timeout` passes; returns the seconds it took,
/// or nil. Each attempt is a fresh visitor.
public func secondsUntilForwarding(port: UInt16, ipv6: Bool = false, timeout: Double) -> Double? {
    let start = monoNow()
    var attempt = 0
    while monoNow() - start < timeout {
        attempt += 1
        let payload = Array("probe \(attempt) through the tunnel".utf8)
        let left = timeout - (monoNow() - start)
        if (try? echoOnce(port: port, payload: payload, ipv6: ipv6, timeout: max(0.5, min(12, left)))) != nil {
            return monoNow() - start
        }
        sleepSeconds(0.05)
    }
    return nil
}

public func waitUntilForwarding(port: UInt16, ipv6: Bool = false, timeout: Double) -> Bool {
    secondsUntilForwarding(port: port, ipv6: ipv6, timeout: timeout) != nil
}

/// True once connecting to 127.0.0.1:port is refused (nothing listens), within `timeout`.
public func waitRefused(port: UInt16, timeout: Double) -> Bool {
    waitUntil(timeout: timeout, interval: 0.1) {
        guard let c = try? Conn.connect(port: port) else { return true }
        c.close()
        return false
    }
}

/// Sends `data` to an echo service through `port` (on another thread) while reading the echo;
/// throws unless every byte comes back in order (compared by SHA-256, then located).
public func echoTransfer(port: UInt16, data: [UInt8], timeout: Double = 120) throws {
    let c = try Conn.connect(port: port)
    defer { c.close() }
    let sendError = Locked<String?>(nil)
    let sent = Latch()
    spawnThread {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let end = min(raw.count, offset + (1 << 20))
                do { try c.send(raw: UnsafeRawBufferPointer(rebasing: raw[offset..<end])) } catch {
                    sendError.withLock { $0 = "send failed at \(offset): \(error)" }
                    break
                }
                offset = end
            }
        }
        sent.open()
    }
    let back: [UInt8]
    do {
        back = try c.readExact(data.count, timeout: timeout)
    } catch {
        c.close()
        _ = sent.wait(seconds: 30)
        throw TestFailure("echo of \(data.count) bytes: \(error)\(sendError.get.map { " (\($0))" } ?? "")")
    }
    _ = sent.wait(seconds: 30)
    if let e = sendError.get { throw TestFailure(e) }
    if Digest.sha256(back) != Digest.sha256(data) {
        throw TestFailure(
            "echo of \(data.count) bytes differs from what was sent, first at offset \(firstMismatch(back, prefixOf: data) ?? -1)")
    }
}

/// `count` connections at once through `port` to an echo service, each with its own bytes
/// (`bytesEach + i * 31`), written and read back in turns of `chunk` bytes, then half-closing and
/// waiting for the EOF (or with `resetting`, closing with a reset); returns the failures.
public func concurrentEchoes(
    port: UInt16, count: Int, bytesEach: Int = 48 << 10, chunk: Int = 16384,
    resetting: Bool = false, timeout: Double = 90
) -> [String] {
    let failures = Locked<[String]>([])
    let finished = runConcurrently(count, timeout: timeout) { i in
        do {
            let c = try Conn.connect(port: port)
            defer { c.close() }
            let payload = patternBytes(count: bytesEach + i * 31, seed: UInt64(7000 + i))
            var offset = 0
            while offset < payload.count {
                let piece = Array(payload[offset..<min(payload.count, offset + chunk)])
                try c.send(piece)
                let back = try c.readExact(piece.count, timeout: 30)
                if back != piece { throw TestFailure("wrong bytes at offset \(offset)") }
                offset += piece.count
            }
            if resetting {
                c.reset()
                return
            }
            c.shutdownWrite()
            if c.readSome(timeout: 30) != .eof { throw TestFailure("no EOF after half-close") }
        } catch {
            failures.withLock { $0.append("connection \(i): \(error)") }
        }
    }
    if !finished { failures.withLock { $0.append("not all \(count) connections finished within \(timeout)s") } }
    return failures.get
}

/// Streams chunks to an echo service through one visitor connection, checking every echo, with a
/// pause between chunks, until stopped.
public final class Streamer: Sendable {
    public let conn: Conn
    private let state = Locked<(bytes: Int, chunks: Int, error: String?, stop: Bool)>((0, 0, nil, false))
    private let done = Latch()

    public init(port: UInt16, chunkSize: Int = 256 << 10, pause: Double = 0.01) throws {
        conn = try Conn.connect(port: port)
        spawnThread { [self] in
            defer { done.open() }
            var seed: UInt64 = 77
            while !state.get.stop {
                seed += 1
                let chunk = patternBytes(count: chunkSize, seed: seed)
                do {
                    try conn.send(chunk)
                    let back = try conn.readExact(chunk.count, timeout: 20)
                    if back != chunk {
                        throw TestFailure("chunk \(seed): echo differs at offset \(firstMismatch(back, prefixOf: chunk) ?? -1)")
                    }
                } catch {
                    state.withLock { $0.error = "after \($0.bytes) bytes: \(error)" }
                    return
                }
                state.withLock {
                    $0.bytes += chunk.count
                    $0.chunks += 1
                }
                sleepSeconds(pause)
            }
        }
    }

    public var bytes: Int { state.get.bytes }
    public var error: String? { state.get.error }

    /// Waits until `more` bytes beyond now went through (or the stream broke); false on timeout.
    public func waitForProgress(_ more: Int, timeout: Double = 30) -> Bool {
        let start = bytes
        return waitUntil(timeout: timeout) { bytes >= start + more || error != nil } && error == nil
    }

    /// Stops after the chunk in flight; returns the bytes that went through intact and the error, if any.
    @discardableResult
    public func stop() -> (bytes: Int, error: String?) {
        let first = state.withLock { s -> Bool in
            defer { s.stop = true }
            return !s.stop
        }
        if first {
            _ = done.wait(seconds: 30)
            conn.close()
        }
        let s = state.get
        return (s.bytes, s.error)
    }
}
