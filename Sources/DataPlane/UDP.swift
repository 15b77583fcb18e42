import CRatholeRing
import Glibc

/// A non-blocking UDP socket for the datagram copy path, which owns its descriptor: readiness
/// comes from a ring poll, then batches move every queued datagram without blocking.
public final class UDPSocket: Sendable {
    let fd: Int32
    private let descriptor: FileDescriptor

    private init(_ descriptor: consuming FileDescriptor) {
        fd = descriptor.rawValue
        self.descriptor = descriptor
    }

    /// Bound to `address` (a service's port), with large kernel buffers.
    public static func bind(_ address: SocketAddress) throws(IOError) -> UDPSocket {
        let socket = try open(family: address.family)
        _ = try systemCall("bind udp \(address)") { address.withSockAddr { Glibc.bind(socket.fd, $0, $1) } }
        return socket
    }

    /// Connected to `address`: it then only talks to that peer (a visitor's local socket).
    public static func connected(to address: SocketAddress) throws(IOError) -> UDPSocket {
        let socket = try open(family: address.family)
        _ = try systemCall("connect udp \(address)") { address.withSockAddr { Glibc.connect(socket.fd, $0, $1) } }
        return socket
    }

    private static func open(family: Int32) throws(IOError) -> UDPSocket {
        let socket = UDPSocket(
            FileDescriptor(
                adopting: try systemCall("socket udp") {
                    Glibc.socket(family, Int32(SOCK_DGRAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
                }))
        for (forced, plain) in [(SO_RCVBUFFORCE, SO_RCVBUF), (SO_SNDBUFFORCE, SO_SNDBUF)] {
            // Without CAP_NET_ADMIN the FORCE variants are refused; the plain ones are capped by rmem_max.
            do {
                try Socket.setOption(socket.fd, SOL_SOCKET, forced, 4 << 20, "udp buffer")
            } catch {
                try Socket.setOption(socket.fd, SOL_SOCKET, plain, 4 << 20, "udp buffer")
            }
        }
        return socket
    }

    /// Waits until a datagram (or an error) is queued; `.timedOut` after `timeout`.
    public func waitReadable(on ring: RingExecutor, timeout: Duration? = nil) async throws(IOError) {
        _ = try await ring.poll(fd, events: Socket.readableEvents, timeout: timeout)
    }

    /// Wakes a waiting `waitReadable` for good (the socket is being given up).
    public func shutdown() {
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
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
            (
                UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            )
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

    /// Receives what is queued on `socket` (up to capacity); 0 when nothing is. An ICMP error a
    /// connected socket reports for an earlier send is not a failure: the datagram was lost.
    public func receive(from socket: UDPSocket) throws(IOError) -> Int {
        for i in 0..<capacity {
            headers[i] = rr_mmsghdr()
            headers[i].msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + i)
            headers[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in6>.size)
            headers[i].msg_hdr.msg_iov = iovecs + i
            headers[i].msg_hdr.msg_iovlen = 1
        }
        do {
            return Int(try nonBlockingCall("recvmmsg") { rr_recvmmsg(socket.fd, headers, UInt32(capacity), Int32(MSG_DONTWAIT)) } ?? 0)
        } catch .system(.connectionRefused, _) {
            return 0
        }
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

    /// Sends the collected datagrams on `socket`.
    public func flush(on socket: UDPSocket) {
        var sent = 0
        while sent < count {
            let n = try? nonBlockingCall("sendmmsg") { rr_sendmmsg(socket.fd, headers + sent, UInt32(count - sent), Int32(MSG_DONTWAIT)) }
            // Nothing sent (queue full, unreachable): drop that datagram, as UDP would, and go on.
            sent += max(1, Int(n.flatMap { $0 } ?? 0))
        }
        count = 0
    }
}
