// Helpers shared by the DataPlane tests: loopback socket pairs, blocking peer threads, a fast
// stream checksum, open-fd accounting and deadlines. Everything runs on real loopback sockets.
import DataPlane
import Glibc
import Synchronization
import XCTest

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Open file descriptors

/// The process's open file descriptors and what each points at, from /proc/self/fd.
/// Comparing (fd, target) pairs catches an fd that was closed and reused for something else.
struct FDTable: Sendable {
    var entries: [Int32: String]

    static func current() -> FDTable {
        var result: [Int32: String] = [:]
        guard let dir = opendir("/proc/self/fd") else { return FDTable(entries: [:]) }
        let own = dirfd(dir)
        let target = UnsafeMutablePointer<CChar>.allocate(capacity: 512)
        defer { target.deallocate() }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            guard let fd = Int32(name), fd != own else { continue }
            let n = readlink("/proc/self/fd/\(fd)", target, 511)
            if n >= 0 {
                target[n] = 0
                result[fd] = String(cString: target)
            } else {
                result[fd] = "?"   // closed between readdir and readlink
            }
        }
        closedir(dir)
        return FDTable(entries: result)
    }

    /// The table to compare against later. First makes the Swift runtime open what it opens lazily
    /// and keeps for the life of the process (the global executor's timerfd, for one), so that
    /// only what the test itself opens shows up in a diff.
    static func baseline() async -> FDTable {
        try? await Task.sleep(for: .milliseconds(1))
        _ = try? await withDeadline(1, "warm-up") { 0 }
        return current()
    }

    /// What was opened since `baseline` and what of `baseline` is gone (or now points elsewhere).
    func diff(from baseline: FDTable) -> (opened: [Int32: String], closed: [Int32: String]) {
        var opened: [Int32: String] = [:]
        var closed: [Int32: String] = [:]
        for (fd, what) in entries where baseline.entries[fd] != what { opened[fd] = what }
        for (fd, what) in baseline.entries where entries[fd] != what { closed[fd] = what }
        return (opened, closed)
    }
}

/// Checks that the fds are back to `baseline`, exactly, except for the pipes the rings keep pooled
/// (2 fds each, as their counters report; the baseline was taken when the pools were empty).
func assertFDsRestored(_ baseline: FDTable, pooledPipes: UInt64 = 0, _ what: String,
                       file: StaticString = #filePath, line: UInt = #line) {
    let (opened, closed) = FDTable.current().diff(from: baseline)
    let nonPipes = opened.filter { !$0.value.hasPrefix("pipe:") }
    let pipeFDs = opened.count - nonPipes.count
    XCTAssertTrue(nonPipes.isEmpty, "\(what): fds left open: \(nonPipes.sorted { $0.key < $1.key }.prefix(20))",
                  file: file, line: line)
    XCTAssertEqual(UInt64(pipeFDs), 2 * pooledPipes,
                   "\(what): open pipe fds should be exactly the \(pooledPipes) pooled pipes", file: file, line: line)
    XCTAssertTrue(closed.isEmpty, "\(what): fds closed that the test did not own: \(closed.prefix(20))",
                  file: file, line: line)
}

// MARK: - Loopback sockets

/// A listening socket on 127.0.0.1 with a kernel-chosen port.
final class LoopbackListener: Sendable {
    let fd: Int32
    let address: SocketAddress

    init(backlog: Int32 = 4096) throws {
        fd = try Socket.listen(SocketAddress(ip: "127.0.0.1", port: 0)!, backlog: backlog, reusePort: false)
        guard let bound = Socket.localAddress(fd) else { throw TestFailure("getsockname on listener") }
        address = bound
    }

    func close() { Socket.close(fd) }

    /// A connected TCP pair made through this listener. `outer` is a blocking socket for test
    /// threads (ring ops work on it too); `inner` was accepted non-blocking, as relays require.
    func pair() throws -> (outer: Int32, inner: Int32) {
        let outer = try blockingConnect(to: address)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&pfd, 1, 5000) == 1 else {
            Glibc.close(outer)
            throw TestFailure("no connection to accept")
        }
        let inner = accept(fd, nil, nil)
        if inner >= 0 {
            _ = fcntl(inner, F_SETFL, fcntl(inner, F_GETFL) | O_NONBLOCK)
            _ = fcntl(inner, F_SETFD, FD_CLOEXEC)
        }
        guard inner >= 0 else {
            let e = Errno.current
            Glibc.close(outer)
            throw TestFailure("accept4: \(e)")
        }
        // Only one connection is ever pending, but make sure the two ends really belong together.
        guard Socket.peerAddress(inner)?.port == Socket.localAddress(outer)?.port else {
            Glibc.close(outer)
            Glibc.close(inner)
            throw TestFailure("accepted a connection that is not ours")
        }
        return (outer, inner)
    }
}

/// A blocking IPv4 TCP socket connected with connect(2); send/recv time out after 20 s so that a
/// broken relay fails a test instead of hanging it.
func blockingConnect(to address: SocketAddress) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(Errno.current)") }
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = address.port.bigEndian
    sin.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let rc = withUnsafePointer(to: &sin) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard rc == 0 else {
        let e = Errno.current
        Glibc.close(fd)
        throw TestFailure("connect to \(address): \(e)")
    }
    setIOTimeout(fd, seconds: 20)
    return fd
}

func setIOTimeout(_ fd: Int32, seconds: Int) {
    var tv = timeval(tv_sec: seconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
}

/// Closes with SO_LINGER 0, so the peer gets a RST instead of a FIN.
func resetClose(_ fd: Int32) {
    var lin = linger(l_onoff: 1, l_linger: 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, socklen_t(MemoryLayout<linger>.size))
    Glibc.close(fd)
}

// MARK: - Test data and checksums

/// Random bytes read once from /dev/urandom; tests send slices of it. Read-only after init.
final class RandomPool: @unchecked Sendable {
    static let shared = RandomPool(size: 8 << 20)

    let base: UnsafeMutableRawPointer
    let size: Int

    init(size: Int) {
        self.size = size
        base = .allocate(byteCount: size, alignment: 64)
        let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        precondition(fd >= 0, "open /dev/urandom")
        var done = 0
        while done < size {
            let n = read(fd, base + done, size - done)
            precondition(n > 0, "read /dev/urandom")
            done += n
        }
        Glibc.close(fd)
    }

    /// `count` bytes starting at an offset derived from `seed`; different seeds give different data.
    func slice(seed: Int, count: Int) -> UnsafeRawBufferPointer {
        precondition(count <= size / 2)
        let span = size - count
        let offset = Int((UInt64(truncatingIfNeeded: seed) &* 0x9E37_79B9_7F4A_7C15) >> 11) % span
        return UnsafeRawBufferPointer(start: base + offset, count: count)
    }
}

/// A 64-bit checksum of a byte stream plus its length. Order- and position-sensitive: each 8-byte
/// word goes through h = rotl((h ^ w) * K, 29), a bijection of h for a fixed w and injective in w
/// for a fixed h, so a single changed word (any flipped byte) always changes the result; a missing
/// or inserted byte changes the length and shifts every later word; reordered words change the chain.
/// Works on 64 KiB blocks copied to an aligned buffer so chunk boundaries never matter.
struct Digest: Equatable, Sendable, CustomStringConvertible {
    var value: UInt64
    var count: UInt64
    var description: String { "\(count) bytes, checksum \(String(value, radix: 16))" }
}

final class StreamHasher {
    static let blockSize = 64 * 1024
    private let block = UnsafeMutableRawPointer.allocate(byteCount: StreamHasher.blockSize, alignment: 8)
    private var filled = 0
    private var h: UInt64 = 0xCBF2_9CE4_8422_2325
    private var total: UInt64 = 0

    deinit { block.deallocate() }

    func update(_ bytes: UnsafeRawBufferPointer) {
        guard var src = bytes.baseAddress else { return }
        var left = bytes.count
        total &+= UInt64(left)
        while left > 0 {
            let n = min(left, Self.blockSize - filled)
            (block + filled).copyMemory(from: src, byteCount: n)
            filled += n
            src += n
            left -= n
            if filled == Self.blockSize {
                h = Self.mix(h, block.assumingMemoryBound(to: UInt64.self), Self.blockSize / 8)
                filled = 0
            }
        }
    }

    func finish() -> Digest {
        let words = filled / 8
        var v = Self.mix(h, block.assumingMemoryBound(to: UInt64.self), words)
        var tail: UInt64 = 0
        var i = words * 8
        var shift: UInt64 = 0
        while i < filled {
            tail |= UInt64(block.load(fromByteOffset: i, as: UInt8.self)) &<< shift
            shift &+= 8
            i &+= 1
        }
        v = Self.mix(v, tail)
        v = Self.mix(v, total)
        return Digest(value: v, count: total)
    }

    // Plain while loops and wrapping ops only: fast enough in debug builds (about 3 ns a word).
    @inline(__always)
    private static func mix(_ h: UInt64, _ w: UInt64) -> UInt64 {
        let x = (h ^ w) &* 0x9E37_79B9_7F4A_7C15
        return (x &<< 29) | (x &>> 35)
    }

    private static func mix(_ seed: UInt64, _ p: UnsafePointer<UInt64>, _ n: Int) -> UInt64 {
        var h = seed
        var i = 0
        while i < n {
            let x = (h ^ p[i]) &* 0x9E37_79B9_7F4A_7C15
            h = (x &<< 29) | (x &>> 35)
            i &+= 1
        }
        return h
    }

    /// The digest of `bytes` fed in slices of the given sizes (cycled).
    static func digest(of bytes: UnsafeRawBufferPointer, slices: [Int] = [Int.max]) -> Digest {
        let h = StreamHasher()
        var offset = 0
        var i = 0
        while offset < bytes.count {
            let n = min(slices[i % slices.count], bytes.count - offset)
            h.update(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n]))
            offset += n
            i += 1
        }
        return h.finish()
    }
}

// MARK: - Blocking peers

/// The result of a blocking peer's stream: what it sent or received, and how it ended
/// (0: cleanly, at EOF or after sending everything; else the errno).
struct StreamOutcome: Sendable, CustomStringConvertible {
    var digest: Digest
    var errno: Int32

    var description: String { "\(digest), " + (errno == 0 ? "ok" : String(cString: strerror(errno))) }
}

enum Blocking {
    /// Sends all bytes; returns 0 or the errno.
    static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
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

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Int32 {
        bytes.withUnsafeBytes { sendAll(fd, $0) }
    }

    /// Receives exactly `count` bytes; nil on EOF or error.
    static func recvExact(_ fd: Int32, count: Int) -> [UInt8]? {
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
    static func sendStream(_ fd: Int32, count: Int, seed: Int, shutdownAfter: Bool = true) -> StreamOutcome {
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
    static func drain(_ fd: Int32, progress: ByteCounter? = nil) -> StreamOutcome {
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
    static func sendUntilError(_ fd: Int32, progress: ByteCounter) -> Int32 {
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
    static func echo(_ fd: Int32) -> Int32 {
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

final class ByteCounter: Sendable {
    private let value = Atomic<Int>(0)
    func add(_ n: Int) { value.add(n, ordering: .relaxed) }
    var count: Int { value.load(ordering: .relaxed) }
}

private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Runs `body` on a new detached OS thread.
func spawnThread(_ body: @escaping @Sendable () -> Void) {
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
    var tid = pthread_t()
    let rc = pthread_create(&tid, &attr, { raw in
        Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, Unmanaged.passRetained(ThreadBody(body)).toOpaque())
    pthread_attr_destroy(&attr)
    precondition(rc == 0, "pthread_create failed: \(rc)")
}

/// A plain OS thread for a blocking peer, whose result can be awaited.
final class PeerThread<T: Sendable>: Sendable {
    private let result = Promise<T>()

    init(_ body: @escaping @Sendable () -> T) {
        let promise = result
        spawnThread { promise.fulfill(body()) }
    }

    var value: T {
        get async { await result.value }
    }
}

// MARK: - Deadlines and waiting

/// A one-shot gate on pthread primitives, for bounded waits from synchronous code (`defer`).
final class Latch: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var isOpen = false

    init() {
        pthread_mutex_init(&mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    func open() {
        pthread_mutex_lock(&mutex)
        isOpen = true
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }

    /// Waits until open or `seconds` pass; true when it opened.
    func wait(seconds: Int) -> Bool {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        deadline.tv_sec += seconds
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while !isOpen {
            if pthread_cond_timedwait(&cond, &mutex, &deadline) == ETIMEDOUT { return isOpen }
        }
        return true
    }
}

/// Shuts `group` down from another thread and fails the test, instead of hanging the whole suite,
/// when that does not return within `seconds`. Usable in `defer`.
func shutdownOrFail(_ group: RingGroup, within seconds: Int = 10, file: StaticString = #filePath, line: UInt = #line) {
    let done = Latch()
    spawnThread {
        group.shutdown()
        done.open()
    }
    if !done.wait(seconds: seconds) {
        XCTFail("RingGroup.shutdown() did not return within \(seconds) s", file: file, line: line)
    }
}

struct DeadlineExceeded: Error, CustomStringConvertible {
    let what: String
    let seconds: Double
    var description: String { "\(what) did not finish within \(seconds) s" }
}

private final class FirstResult<T: Sendable>: Sendable {
    private let cont: Mutex<CheckedContinuation<T, Error>?>
    init(_ c: CheckedContinuation<T, Error>) { cont = Mutex(c) }
    func resume(_ r: Result<T, Error>) {
        let c = cont.withLock { c -> CheckedContinuation<T, Error>? in
            defer { c = nil }
            return c
        }
        c?.resume(with: r)
    }
}

/// Runs `op` and gives up waiting after `seconds` (throwing `DeadlineExceeded`), so a hang fails
/// the test instead of stalling the whole suite. This bounds liveness; it is not a speed check.
func withDeadline<T: Sendable>(_ seconds: Double, _ what: String,
                               _ op: @escaping @Sendable () async throws -> T) async throws -> T {
    let work = Task { try await op() }
    var timer: Task<Void, Never>?
    defer { timer?.cancel() }
    return try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
        let first = FirstResult(c)
        Task { first.resume(await work.result) }
        timer = Task {
            try? await Task.sleep(for: .seconds(seconds))
            if !Task.isCancelled { first.resume(.failure(DeadlineExceeded(what: what, seconds: seconds))) }
        }
    }
}

/// Polls `condition` every few milliseconds until it holds or `seconds` pass.
func waitUntil(_ seconds: Double, _ what: String, _ condition: @Sendable () -> Bool) async throws {
    let clock = ContinuousClock()
    let end = clock.now + .seconds(seconds)
    while !condition() {
        if clock.now > end { throw DeadlineExceeded(what: what, seconds: seconds) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// Counts continuations that resumed anywhere but on their ring's thread.
final class RingThreadCheck: Sendable {
    private let misses = Atomic<Int>(0)
    private let checks = Atomic<Int>(0)

    func check(_ ring: RingExecutor) {
        checks.add(1, ordering: .relaxed)
        if !ring.isCurrent || RingExecutor.current !== ring { misses.add(1, ordering: .relaxed) }
    }

    var missCount: Int { misses.load(ordering: .relaxed) }
    var checkCount: Int { checks.load(ordering: .relaxed) }
}

// MARK: - Relays under test

/// The relay flavours the shared scenarios run against.
enum RelayKind: Sendable, CustomStringConvertible {
    /// `RingExecutor.relay(_:_:)` awaited in a task; stopping cancels the task.
    case spliceAsync
    /// `RingExecutor.startRelay(_:_:onEnd:)`; stopping calls `RelayHandle.stop()`.
    case spliceHandle
    /// `CopyRelay.run` over two `SocketStream`s; stopping cancels the task.
    case copy

    var description: String {
        switch self {
        case .spliceAsync: return "relay()"
        case .spliceHandle: return "startRelay()"
        case .copy: return "CopyRelay"
        }
    }
}

/// Delivers a value produced by a callback to async waiters.
final class Promise<T: Sendable>: Sendable {
    private struct State {
        var value: T?
        var waiters: [CheckedContinuation<T, Never>] = []
    }
    private let state = Mutex(State())

    init() {}

    func fulfill(_ value: T) {
        let waiters = state.withLock { s -> [CheckedContinuation<T, Never>] in
            precondition(s.value == nil, "fulfilled twice")
            s.value = value
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume(returning: value) }
    }

    var isFulfilled: Bool { state.withLock { $0.value != nil } }

    var value: T {
        get async {
            await withCheckedContinuation { cont in
                let ready = state.withLock { s -> T? in
                    if let v = s.value { return v }
                    s.waiters.append(cont)
                    return nil
                }
                if let ready { cont.resume(returning: ready) }
            }
        }
    }
}

/// A running relay under test: its eventual result and a way to stop it from Swift.
struct RunningRelay: Sendable {
    let result: Promise<RelayResult>
    let stop: @Sendable () -> Void
}

/// Starts a relay of `kind` between `a` and `b` (which it owns from now on) on `ring`.
func startRelay(_ kind: RelayKind, on ring: RingExecutor, _ a: Int32, _ b: Int32) async -> RunningRelay {
    let promise = Promise<RelayResult>()
    switch kind {
    case .spliceAsync:
        let task = Task(executorPreference: ring) {
            let r = await ring.relay(a, b)
            promise.fulfill(r)
        }
        return RunningRelay(result: promise, stop: { task.cancel() })
    case .spliceHandle:
        let handle = await Task(executorPreference: ring) { () -> RelayHandle in
            ring.startRelay(a, b) { promise.fulfill($0) }
        }.value
        return RunningRelay(result: promise, stop: { handle.stop() })
    case .copy:
        let task = Task(executorPreference: ring) {
            let r = await CopyRelay.run(SocketStream(fd: a, ring: ring), SocketStream(fd: b, ring: ring), on: ring)
            promise.fulfill(r)
        }
        return RunningRelay(result: promise, stop: { task.cancel() })
    }
}

/// The group's counters once every ring has gone once more through its loop. Counters are a
/// snapshot taken at the end of each loop iteration, and an `onEnd` callback runs before the
/// snapshot of its iteration; a job on each ring runs only after that snapshot.
func settledCounters(_ group: RingGroup) async -> RelayCounters {
    for ring in group.executors {
        await Task(executorPreference: ring) {}.value
    }
    return group.counters
}

/// Runs `body` with a fresh one-thread ring group, then checks that every fd the test and its
/// relays opened is closed again and that no pipe is still lent or relay still active.
func withRelayRing(_ what: String, timeout: Double = 30,
                   _ body: @escaping @Sendable (RingGroup, LoopbackListener) async throws -> Void,
                   file: StaticString = #filePath, line: UInt = #line) async throws {
    signal(SIGPIPE, SIG_IGN)
    let group = try RingGroup(threads: 1)
    defer { shutdownOrFail(group, file: file, line: line) }
    let listener = try LoopbackListener()
    defer { listener.close() }
    let baseline = await FDTable.baseline()
    try await withDeadline(timeout, what) { try await body(group, listener) }
    let counters = await settledCounters(group)
    XCTAssertEqual(counters.pipesLent, 0, "\(what): pipes still lent", file: file, line: line)
    XCTAssertEqual(counters.relaysActive, 0, "\(what): relays still active", file: file, line: line)
    assertFDsRestored(baseline, pooledPipes: counters.pipesPooled, what, file: file, line: line)
}
