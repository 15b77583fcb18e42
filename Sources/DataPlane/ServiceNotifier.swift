import CRatholeRing
import Glibc

/// systemd's notification protocol (sd_notify(3)) without libsystemd: each state change
/// ("READY=1", "RELOADING=1", "STOPPING=1", "STATUS=...") is one datagram to the AF_UNIX socket
/// named by `$NOTIFY_SOCKET`, a path or, with a leading '@', a name in the abstract namespace.
public final class ServiceNotifier: Sendable {
    /// The socket address bytes (a `sockaddr_un`, cut to its used length).
    private let address: [UInt8]
    private let socket: FileDescriptor

    /// Why `$NOTIFY_SOCKET` cannot be used.
    public enum AddressError: Error, Equatable, CustomStringConvertible {
        /// Neither an absolute path nor '@name' (systemd also knows vsock addresses, for VMs).
        case unsupported(String)
        /// Longer than `sun_path` holds.
        case tooLong(String)

        public var description: String {
            switch self {
            case .unsupported(let value): return "NOTIFY_SOCKET=\(value): not a path or an @abstract name"
            case .tooLong(let value): return "NOTIFY_SOCKET=\(value): longer than a unix socket address holds"
            }
        }
    }

    public enum SetupError: Error, CustomStringConvertible {
        case address(AddressError)
        case socket(IOError)

        public var description: String {
            switch self {
            case .address(let e): return e.description
            case .socket(let e): return e.description
            }
        }
    }

    /// The notifier for `$NOTIFY_SOCKET`, nil when it is unset or empty (not run by systemd).
    public static func fromEnvironment() throws(SetupError) -> ServiceNotifier? {
        guard let raw = getenv("NOTIFY_SOCKET"), raw.pointee != 0 else { return nil }
        return try ServiceNotifier(socket: String(cString: raw))
    }

    public init(socket value: String) throws(SetupError) {
        do {
            address = try Self.socketAddress(value)
        } catch {
            throw .address(error)
        }
        do {
            socket = FileDescriptor(
                adopting: try systemCall("socket(AF_UNIX)") {
                    Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
                })
        } catch {
            throw .socket(error)
        }
    }

    /// The `sockaddr_un` bytes for a `$NOTIFY_SOCKET` value: a path ends with a NUL, an abstract
    /// name starts with one and is exactly as long as the name (no terminator).
    static func socketAddress(_ value: String) throws(AddressError) -> [UInt8] {
        var name = Array(value.utf8)
        switch name.first {
        case UInt8(ascii: "/"): name.append(0)
        case UInt8(ascii: "@") where name.count > 1: name[0] = 0
        default: throw .unsupported(value)
        }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        let pathCapacity = MemoryLayout<sockaddr_un>.size - pathOffset
        guard name.count <= pathCapacity else { throw .tooLong(value) }
        var bytes = [UInt8](repeating: 0, count: pathOffset)
        withUnsafeBytes(of: sa_family_t(AF_UNIX)) { bytes.replaceSubrange(0..<$0.count, with: $0) }
        return bytes + name
    }

    /// Sends one notification ("KEY=value" lines joined by newlines).
    public func send(_ message: String) throws(IOError) {
        let payload = Array(message.utf8)
        _ = try systemCall("sendto NOTIFY_SOCKET") {
            payload.withUnsafeBytes { data in
                address.withUnsafeBytes { addr in
                    sendto(
                        socket.rawValue, data.baseAddress, data.count, Int32(MSG_NOSIGNAL),
                        addr.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(addr.count))
                }
            }
        }
    }

    /// CLOCK_MONOTONIC in microseconds: the `MONOTONIC_USEC=` that systemd (253 and later) wants
    /// beside `RELOADING=1`.
    public static var monotonicMicroseconds: UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }
}
