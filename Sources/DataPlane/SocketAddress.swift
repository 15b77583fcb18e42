import CRatholeRing
import Glibc

/// An IPv4 or IPv6 socket address; name resolution is `resolve(host:port:)`.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// Large enough for both families; a sockaddr_in occupies its start.
    var storage: sockaddr_in6

    public var family: Int32 { Int32(storage.sin6_family) }
    public var isIPv6: Bool { family == AF_INET6 }
    var length: socklen_t {
        socklen_t(isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    }

    public var port: UInt16 { UInt16(bigEndian: storage.sin6_port) }

    init(storage: sockaddr_in6) { self.storage = storage }

    /// From raw sockaddr bytes as the kernel returns them.
    init?(raw: UnsafeRawPointer, length: socklen_t) {
        var s = sockaddr_in6()
        let family = raw.load(as: sa_family_t.self)
        switch Int32(family) {
        case AF_INET:
            withUnsafeMutableBytes(of: &s) {
                $0.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: MemoryLayout<sockaddr_in>.size))
            }
        case AF_INET6:
            withUnsafeMutableBytes(of: &s) {
                $0.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: MemoryLayout<sockaddr_in6>.size))
            }
        default: return nil
        }
        storage = s
    }

    /// 127.0.0.1 (or ::1) and a port. Addresses come from numbers (here and in UDP.swift), the
    /// kernel, or getaddrinfo: the one parser of address text is the config's (`HostPort`).
    public static func loopback(port: UInt16, ipv6: Bool = false) -> SocketAddress {
        ipv6 ? SocketAddress(ipv6: 0, 1, port: port) : SocketAddress(ipv4: 0x7F00_0001, port: port)
    }

    /// Calls body with a sockaddr pointer and length.
    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }

    /// The IP address bytes (4 or 16).
    public var ipBytes: [UInt8] {
        withUnsafeBytes(of: storage) { raw in
            if isIPv6 { return Array(raw[8..<24]) }
            return Array(raw[4..<8])
        }
    }

    public var ipString: String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        withUnsafeBytes(of: storage) { raw in
            let src = raw.baseAddress! + (isIPv6 ? 8 : 4)
            _ = inet_ntop(family, src, &buf, socklen_t(buf.count))
        }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String { isIPv6 ? "[\(ipString)]:\(port)" : "\(ipString):\(port)" }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        withUnsafeBytes(of: a.storage) { x in
            withUnsafeBytes(of: b.storage) { y in
                x.prefix(Int(a.length)).elementsEqual(y.prefix(Int(b.length)))
            }
        }
    }

    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes(of: storage) { hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: $0.prefix(Int(length)))) }
    }

    /// Resolves `host` (a name; an IP literal comes back as it is) with getaddrinfo on the
    /// resolver's threads, so the ring never blocks on DNS.
    public static func resolve(host: String, port: UInt16) async throws(IOError) -> [SocketAddress] {
        let result: Result<[SocketAddress], IOError> = await withUnsafeContinuation { cont in
            Resolver.shared.run {
                cont.resume(returning: getaddrinfoBlocking(host: host, port: port))
            }
        }
        return try result.get()
    }

    private static func getaddrinfoBlocking(host: String, port: UInt16) -> Result<[SocketAddress], IOError> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0 else {
            return .failure(.unresolved(host: host, reason: String(cString: gai_strerror(rc))))
        }
        defer { freeaddrinfo(list) }
        var out: [SocketAddress] = []
        var p = list
        while let ai = p {
            if let a = SocketAddress(raw: ai.pointee.ai_addr, length: ai.pointee.ai_addrlen), !out.contains(a) {
                out.append(a)
            }
            p = ai.pointee.ai_next
        }
        return out.isEmpty ? .failure(.unresolved(host: host, reason: "no address")) : .success(out)
    }
}
