import Glibc

/// An errno value with its symbolic name; the only way syscall failures reach callers. The named
/// constants match in patterns: `catch .system(.wouldBlock, _)`.
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The errno of the last failed libc call on this thread.
    public static var current: Errno { Errno(errno) }

    public var description: String { String(cString: strerror(rawValue)) }

    public static let interrupted = Errno(EINTR)
    public static let wouldBlock = Errno(EAGAIN)
    public static let cancelled = Errno(ECANCELED)
    public static let connectionReset = Errno(ECONNRESET)
    public static let connectionRefused = Errno(ECONNREFUSED)
    public static let connectionAborted = Errno(ECONNABORTED)
    public static let brokenPipe = Errno(EPIPE)
    public static let addressInUse = Errno(EADDRINUSE)
    public static let tooManyOpenFiles = Errno(EMFILE)
    public static let tooManyOpenFilesInSystem = Errno(ENFILE)
    public static let badFileDescriptor = Errno(EBADF)
    public static let fileTooLarge = Errno(EFBIG)
}

/// Why an I/O operation failed.
public enum IOError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kernel refused the operation.
    case system(Errno, operation: String)
    /// A deadline passed before the operation completed.
    case timedOut(operation: String)
    /// The task was cancelled or the executor is shutting down.
    case cancelled
    /// The peer closed the stream before the expected bytes arrived.
    case endOfStream
    /// A name had no address (getaddrinfo's own error, in its words).
    case unresolved(host: String, reason: String)
    /// The protocol layered on the socket (TLS, Noise, websocket framing) failed; the error is
    /// that layer's own, typed.
    case layer(any Error & Sendable)

    public var description: String {
        switch self {
        case .system(let e, let op): return "\(op): \(e)"
        case .timedOut(let op): return "\(op): timed out"
        case .cancelled: return "cancelled"
        case .endOfStream: return "connection closed by peer"
        case .unresolved(let host, let reason): return "resolve \(host): \(reason)"
        case .layer(let e): return "\(e)"
        }
    }

    /// Equal when they say the same: a layer's errors compare by what they say.
    public static func == (a: IOError, b: IOError) -> Bool {
        switch (a, b) {
        case let (.system(x, op1), .system(y, op2)): return x == y && op1 == op2
        case let (.timedOut(x), .timedOut(y)): return x == y
        case (.cancelled, .cancelled), (.endOfStream, .endOfStream): return true
        case let (.unresolved(h1, r1), .unresolved(h2, r2)): return h1 == h2 && r1 == r2
        case let (.layer(x), .layer(y)): return "\(x)" == "\(y)"
        default: return false
        }
    }

    public var errno: Errno? {
        if case .system(let e, _) = self { return e }
        return nil
    }

    /// Turns an io_uring result (-errno on failure) into a value or a typed error.
    @inline(__always)
    static func check(_ result: Int32, _ operation: @autoclosure () -> String) throws(IOError) -> Int32 {
        if result >= 0 { return result }
        if result == -ECANCELED { throw .cancelled }
        throw .system(Errno(-result), operation: operation())
    }
}

/// Runs a libc call that returns -1 and sets errno on failure: retries it when a signal
/// interrupted it, and throws any other failure as a typed error naming `operation`. Every direct
/// system call in the data plane goes through here (io_uring results through `IOError.check`).
@inline(__always)
public func systemCall<Result: BinaryInteger>(_ operation: @autoclosure () -> String, _ call: () -> Result) throws(IOError) -> Result {
    while true {
        let result = call()
        if result != -1 { return result }
        let e = Errno.current
        if e != .interrupted { throw .system(e, operation: operation()) }
    }
}

/// `systemCall` for non-blocking calls: nil when the call would block.
@inline(__always)
public func nonBlockingCall<Result: BinaryInteger>(_ operation: @autoclosure () -> String, _ call: () -> Result) throws(IOError) -> Result?
{
    do {
        return try systemCall(operation(), call)
    } catch .system(.wouldBlock, _) {
        return nil
    }
}
