// Loopback addresses and free ports, picked at run time (the machine is shared: never fixed ports).
import Glibc
import Synchronization

public enum Ports {
    private static let handedOut = Mutex<Set<UInt16>>([])

    /// A TCP port that was free a moment ago (bound with port 0 and read back), never handed out
    /// twice by this process.
    public static func free() -> UInt16 {
        while true {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
            precondition(fd >= 0, "socket: \(errno)")
            defer { close(fd) }
            var addr = Loopback.address(ipv6: false, port: 0)
            precondition(Loopback.bind(fd, &addr, ipv6: false) == 0, "bind: \(errno)")
            let port = localPort(fd)
            if handedOut.withLock({ $0.insert(port).inserted }) { return port }
        }
    }

    /// A port free for UDP as well (on the loopback address of the family), distinct from every
    /// port handed out before.
    public static func freeUDP(ipv6: Bool = false) -> UInt16 {
        while true {
            let port = free()
            let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
            precondition(fd >= 0, "socket: \(errno)")
            var addr = Loopback.address(ipv6: ipv6, port: port)
            let ok = Loopback.bind(fd, &addr, ipv6: ipv6) == 0
            close(fd)
            if ok { return port }
        }
    }
}

/// 127.0.0.1 and ::1 as socket addresses (in a sockaddr_in6-sized storage for either family).
public enum Loopback {
    public static func host(ipv6: Bool) -> String { ipv6 ? "::1" : "127.0.0.1" }

    public static func address(ipv6: Bool, port: UInt16) -> sockaddr_in6 {
        var s = sockaddr_in6()
        if ipv6 {
            s.sin6_family = sa_family_t(AF_INET6)
            s.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &s.sin6_addr) { $0[15] = 1 }
        } else {
            var v4 = sockaddr_in()
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            v4.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            withUnsafeMutableBytes(of: &s) { dst in withUnsafeBytes(of: &v4) { dst.copyMemory(from: $0) } }
        }
        return s
    }

    public static func length(ipv6: Bool) -> socklen_t {
        socklen_t(ipv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    }

    public static func bind(_ fd: Int32, _ address: inout sockaddr_in6, ipv6: Bool) -> Int32 {
        withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length(ipv6: ipv6)) }
        }
    }

    public static func connect(_ fd: Int32, _ address: inout sockaddr_in6, ipv6: Bool) -> Int32 {
        withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length(ipv6: ipv6)) }
        }
    }
}

/// The local port of a socket of either family (sin_port and sin6_port sit at the same offset).
public func localPort(_ fd: Int32) -> UInt16 {
    var addr = sockaddr_in6()
    var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return UInt16(bigEndian: addr.sin6_port)
}

/// The peer's port of a connected socket of either family.
public func peerPort(_ fd: Int32) -> UInt16 {
    var addr = sockaddr_in6()
    var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
    }
    return UInt16(bigEndian: addr.sin6_port)
}

public func errnoText(_ e: Int32 = errno) -> String { String(cString: strerror(e)) }
