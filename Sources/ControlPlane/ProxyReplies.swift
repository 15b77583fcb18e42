// What a SOCKS5 (RFC 1928, RFC 1929) or HTTP CONNECT proxy answers, checked without I/O: bytes in,
// verdict out. ProxyConnector reads exactly what these say the reply still needs, so nothing past
// the reply (the target's first bytes) is ever taken from the socket.

/// A proxy's answer that ends the attempt. `message(target:)` is the one line to log.
public enum ProxyReplyError: Error, Equatable, Sendable, CustomStringConvertible {
    case notSocks5
    case passwordRequired
    case noAcceptableMethod
    case passwordRejected
    case malformedSocks5Reply
    case socks5AddressType(UInt8)
    /// The SOCKS5 proxy answered the CONNECT with this error code.
    case socks5ConnectFailed(UInt8)
    /// The first line of a response that is not HTTP.
    case notHTTP(statusLine: String)
    /// A non-2xx answer to the CONNECT, with its status line.
    case httpRefused(statusLine: String)
    case httpHeadTooLarge

    public var description: String { message(target: "the target") }

    /// The line to log, naming the target the proxy was asked to reach.
    public func message(target: some CustomStringConvertible) -> String {
        switch self {
        case .notSocks5: return "not a SOCKS5 proxy"
        case .passwordRequired: return "the proxy wants a username and password"
        case .noAcceptableMethod: return "the proxy accepts none of our authentication methods"
        case .passwordRejected: return "the proxy rejected the username/password"
        case .malformedSocks5Reply: return "malformed SOCKS5 reply"
        case .socks5AddressType(let t): return "malformed SOCKS5 reply (address type \(t))"
        case .socks5ConnectFailed(let code): return "the proxy could not connect to \(target): \(Socks5Reply.reason(code))"
        case .notHTTP(let line): return "not an HTTP proxy (answered \"\(line)\")"
        case .httpRefused(let line): return "CONNECT \(target) refused: \(line)"
        case .httpHeadTooLarge: return "response head longer than \(HTTPConnectReply.maxHeadSize / 1024) KiB"
        }
    }
}

public enum Socks5Reply {
    /// The server's method choice (2 bytes). Returns true when it chose username/password, which
    /// we offer only with `offeredPassword`.
    public static func methodChoice(_ reply: [UInt8], offeredPassword: Bool) throws(ProxyReplyError) -> Bool {
        precondition(reply.count == 2)
        guard reply[0] == 5 else { throw .notSocks5 }
        switch reply[1] {
        case 0: return false
        case 2:
            guard offeredPassword else { throw .passwordRequired }
            return true
        default: throw .noAcceptableMethod
        }
    }

    /// The RFC 1929 status (2 bytes).
    public static func checkPasswordStatus(_ reply: [UInt8]) throws(ProxyReplyError) {
        precondition(reply.count == 2)
        guard reply[1] == 0 else { throw .passwordRejected }
    }

    /// How many more bytes the CONNECT reply needs after the `reply` bytes received so far; 0 when
    /// it is complete (and says the proxy connected). Throws as soon as the bytes present refuse.
    public static func bytesNeeded(_ reply: [UInt8]) throws(ProxyReplyError) -> Int {
        guard reply.count >= 4 else { return 4 - reply.count }
        guard reply[0] == 5 else { throw .malformedSocks5Reply }
        guard reply[1] == 0 else { throw .socks5ConnectFailed(reply[1]) }
        let total: Int
        switch reply[3] {
        case 1: total = 4 + 4 + 2
        case 4: total = 4 + 16 + 2
        case 3:
            guard reply.count >= 5 else { return 1 }
            total = 5 + Int(reply[4]) + 2
        default: throw .socks5AddressType(reply[3])
        }
        return max(0, total - reply.count)
    }

    static func reason(_ code: UInt8) -> String {
        switch code {
        case 1: return "general failure"
        case 2: return "not allowed by the proxy's rules"
        case 3: return "network unreachable"
        case 4: return "host unreachable"
        case 5: return "connection refused"
        case 6: return "TTL expired"
        case 7: return "command not supported"
        case 8: return "address type not supported"
        default: return "error \(code)"
        }
    }
}

public enum HTTPConnectReply {
    /// A longer response head is refused.
    public static let maxHeadSize = 16 * 1024

    /// Whether `head` (read a byte at a time) is a whole response head, through its blank line.
    public static func isComplete(_ head: [UInt8]) throws(ProxyReplyError) -> Bool {
        if head.count >= 4 && head.suffix(4).elementsEqual([13, 10, 13, 10]) { return true }
        guard head.count < maxHeadSize else { throw .httpHeadTooLarge }
        return false
    }

    /// Checks a whole response head: the proxy connected when the status is 2xx.
    public static func check(_ head: [UInt8]) throws(ProxyReplyError) {
        let line = head.prefix { $0 != 13 && $0 != 10 }
        let parts = String(decoding: line, as: UTF8.self).split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let code = Int(parts[1]) else {
            throw .notHTTP(statusLine: shown(line))
        }
        guard (200..<300).contains(code) else { throw .httpRefused(statusLine: shown(line)) }
    }

    /// The status line as a log shows it: printable ASCII (others as '?'), at most 80 characters.
    static func shown(_ line: ArraySlice<UInt8>) -> String {
        String(decoding: line.prefix(80).map { $0 >= 0x20 && $0 < 0x7F ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
            + (line.count > 80 ? "..." : "")
    }
}
