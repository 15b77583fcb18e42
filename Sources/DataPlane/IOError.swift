import Glibc

/// An errno value with its symbolic name; the only way syscall failures reach callers.
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The errno of the last failed libc call on this thread.
    public static var current: Errno { Errno(errno) }

    public var description: String { String(cString: strerror(rawValue)) }

    public static let wouldBlock = Errno(EAGAIN)
    public static let cancelled = Errno(ECANCELED)
    public static let connectionReset = Errno(ECONNRESET)
    public static let connectionRefused = Errno(ECONNREFUSED)
    public static let brokenPipe = Errno(EPIPE)
    public static let addressInUse = Errno(EADDRINUSE)
    public static let tooManyOpenFiles = Errno(EMFILE)
}

/// Why a socket operation failed.
public enum IOError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kernel refused the operation.
    case system(Errno, operation: String)
    /// A deadline passed before the operation completed.
    case timedOut(operation: String)
    /// The task was cancelled or the executor is shutting down.
    case cancelled
    /// The peer closed the stream before the expected bytes arrived.
    case endOfStream

    public var description: String {
        switch self {
        case .system(let e, let op): return "\(op): \(e)"
        case .timedOut(let op): return "\(op): timed out"
        case .cancelled: return "cancelled"
        case .endOfStream: return "connection closed by peer"
        }
    }

    public var errno: Errno? {
        if case .system(let e, _) = self { return e }
        return nil
    }

    /// Turns a syscall-style result (-errno on failure) into a value or a typed error.
    @inline(__always)
    static func check(_ result: Int32, _ operation: @autoclosure () -> String) throws(IOError) -> Int32 {
        if result >= 0 { return result }
        if result == -ECANCELED { throw .cancelled }
        throw .system(Errno(-result), operation: operation())
    }

    /// Same for libc calls that return -1 and set errno.
    @inline(__always)
    static func checkLibc(_ result: Int32, _ operation: @autoclosure () -> String) throws(IOError) -> Int32 {
        if result >= 0 { return result }
        throw .system(.current, operation: operation())
    }
}
