import CRatholeRing
import Glibc

/// UDP sockets for the datagram copy path: readiness comes from a ring poll, then the calls below
/// move datagrams without blocking (batching as many as are queued).
public enum UDP {
    /// A non-blocking UDP socket bound to `address`, with large kernel buffers.
    public static func bind(_ address: SocketAddress) throws(IOError) -> Int32 {
        let fd = try open(family: address.family)
        guard address.withSockAddr({ Glibc.bind(fd, $0, $1) }) == 0 else {
            let e = Errno.current
            Glibc.close(fd)
            throw .system(e, operation: "bind udp \(address)")
        }
        return fd
    }

    /// A non-blocking UDP socket connected to `address` (it then only talks to that peer).
    public static func connected(to address: SocketAddress) throws(IOError) -> Int32 {
        let fd = try open(family: address.family)
        guard address.withSockAddr({ Glibc.connect(fd, $0, $1) }) == 0 else {
            let e = Errno.current
            Glibc.close(fd)
            throw .system(e, operation: "connect udp \(address)")
        }
        return fd
    }

    private static func open(family: Int32) throws(IOError) -> Int32 {
        let fd = socket(family, Int32(SOCK_DGRAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(.current, operation: "socket udp") }
        for option in [SO_RCVBUFFORCE, SO_SNDBUFFORCE] {
            // Without CAP_NET_ADMIN the FORCE variants fail; the plain ones are capped by rmem_max.
            if (try? Socket.setOption(fd, SOL_SOCKET, option, 4 << 20, "buffer")) == nil {
                try? Socket.setOption(fd, SOL_SOCKET, option == SO_RCVBUFFORCE ? SO_RCVBUF : SO_SNDBUF, 4 << 20, "buffer")
            }
        }
        return fd
    }

    /// Receives one queued datagram and its sender; nil when none is queued.
    public static func tryReceive(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(IOError) -> (count: Int, from: SocketAddress)? {
        var storage = sockaddr_in6()
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let n = withUnsafeMutableBytes(of: &storage) { raw in
            recvfrom(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT), raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
        }
        if n >= 0 { return (n, SocketAddress(storage: storage)) }
        if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
        // A connected socket reports an ICMP error from an earlier send here; it is not fatal.
        if errno == ECONNREFUSED { return (0, SocketAddress(storage: storage)) }
        throw .system(.current, operation: "recvfrom")
    }

    /// Sends one datagram (to `address`, or to the connected peer); false when the kernel's queue is
    /// full or the peer is unreachable (UDP: the datagram is dropped).
    @discardableResult
    public static func trySend(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, to address: SocketAddress? = nil) -> Bool {
        let n: Int
        if let address {
            n = address.withSockAddr { sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT), $0, $1) }
        } else {
            n = send(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
        }
        return n == buffer.count
    }
}

extension SocketAddress {
    /// An IPv4 address from its 32-bit value (host order, 127.0.0.1 = 0x7F000001) and a port.
    public init(ipv4 value: UInt32, port: UInt16) {
        var v4 = sockaddr_in()
        v4.sin_family = sa_family_t(AF_INET)
        v4.sin_port = port.bigEndian
        v4.sin_addr.s_addr = value.bigEndian
        var s = sockaddr_in6()
        withUnsafeMutableBytes(of: &s) { dst in withUnsafeBytes(of: v4) { dst.copyMemory(from: $0) } }
        self.init(storage: s)
    }

    /// An IPv6 address from its two 64-bit halves (big-endian reading order) and a port.
    public init(ipv6 high: UInt64, _ low: UInt64, port: UInt16) {
        var s = sockaddr_in6()
        s.sin6_family = sa_family_t(AF_INET6)
        s.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &s.sin6_addr) { raw in
            raw.storeBytes(of: high.bigEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        self.init(storage: s)
    }

    /// The 32-bit value of an IPv4 address (host order).
    public var ipv4Value: UInt32? {
        guard !isIPv6 else { return nil }
        return withUnsafeBytes(of: storage) { UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) }
    }

    /// The two 64-bit halves of an IPv6 address.
    public var ipv6Halves: (high: UInt64, low: UInt64)? {
        guard isIPv6 else { return nil }
        return withUnsafeBytes(of: storage.sin6_addr) {
            (UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
             UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
    }
}

/// Receives up to `capacity` datagrams in one recvmmsg(2). Slots are sized for the largest UDP
/// payload, so nothing is ever truncated.
public final class ReceiveBatch {
    public let capacity: Int
    static let slotSize = 65536
    private let headers: UnsafeMutablePointer<rr_mmsghdr>
    private let iovecs: UnsafeMutablePointer<iovec>
    private let addresses: UnsafeMutablePointer<sockaddr_in6>
    private let storage: UnsafeMutableRawPointer

    public init(capacity: Int) {
        self.capacity = capacity
        headers = .allocate(capacity: capacity)
        iovecs = .allocate(capacity: capacity)
        addresses = .allocate(capacity: capacity)
        storage = .allocate(byteCount: capacity * Self.slotSize, alignment: 64)
        for i in 0..<capacity {
            iovecs[i] = iovec(iov_base: storage + i * Self.slotSize, iov_len: Self.slotSize)
        }
    }

    deinit {
        headers.deallocate()
        iovecs.deallocate()
        addresses.deallocate()
        storage.deallocate()
    }

    /// Receives what is queued (up to capacity); 0 when nothing is.
    public func receive(_ fd: Int32) throws(IOError) -> Int {
        for i in 0..<capacity {
            headers[i] = rr_mmsghdr()
            headers[i].msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + i)
            headers[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in6>.size)
            headers[i].msg_hdr.msg_iov = iovecs + i
            headers[i].msg_hdr.msg_iovlen = 1
        }
        let n = rr_recvmmsg(fd, headers, UInt32(capacity), Int32(MSG_DONTWAIT))
        if n >= 0 { return Int(n) }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED { return 0 }
        throw .system(.current, operation: "recvmmsg")
    }

    public func payload(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage + i * Self.slotSize, count: Int(headers[i].msg_len))
    }

    public func sender(_ i: Int) -> SocketAddress { SocketAddress(storage: addresses[i]) }
}

/// Collects datagrams (pointers into the caller's buffers, valid until `flush`) and sends them
/// with one sendmmsg(2). Datagrams the kernel cannot queue are dropped, as UDP would.
public final class SendBatch {
    public let capacity: Int
    private let headers: UnsafeMutablePointer<rr_mmsghdr>
    private let iovecs: UnsafeMutablePointer<iovec>
    private let addresses: UnsafeMutablePointer<sockaddr_in6>
    public private(set) var count = 0

    public init(capacity: Int) {
        self.capacity = capacity
        headers = .allocate(capacity: capacity)
        iovecs = .allocate(capacity: capacity)
        addresses = .allocate(capacity: capacity)
    }

    deinit {
        headers.deallocate()
        iovecs.deallocate()
        addresses.deallocate()
    }

    public var isFull: Bool { count == capacity }

    /// Adds a datagram for `address` (nil: the socket's connected peer).
    public func add(_ payload: UnsafeRawBufferPointer, to address: SocketAddress?) {
        precondition(count < capacity)
        iovecs[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
        headers[count] = rr_mmsghdr()
        if let address {
            addresses[count] = address.storage
            headers[count].msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + count)
            headers[count].msg_hdr.msg_namelen = address.length
        }
        headers[count].msg_hdr.msg_iov = iovecs + count
        headers[count].msg_hdr.msg_iovlen = 1
        count += 1
    }

    /// Sends the collected datagrams on `fd`.
    public func flush(_ fd: Int32) {
        var sent = 0
        while sent < count {
            let n = rr_sendmmsg(fd, headers + sent, UInt32(count - sent), Int32(MSG_DONTWAIT))
            if n > 0 {
                sent += Int(n)
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                sent += 1   // this one cannot go (queue full, unreachable): drop it, try the rest
            }
        }
        count = 0
    }
}
