import Glibc

/// A file descriptor this value owns: it is closed exactly once, when its owner ends, unless it is
/// handed on with `release()` to something that closes it itself (the splice relay, in C). Being
/// non-copyable, it cannot be closed twice or used after it was handed on.
public struct FileDescriptor: ~Copyable, Sendable {
    /// The number, for calls made while this value is alive. Never close it directly.
    public let rawValue: Int32

    public init(adopting rawValue: Int32) {
        self.rawValue = rawValue
    }

    deinit {
        Glibc.close(rawValue)
    }

    /// Gives up ownership: the caller (or the C code it hands the number to) closes it.
    public consuming func release() -> Int32 {
        let fd = rawValue
        discard self
        return fd
    }
}
