import CRatholeCrypto
import DataPlane

// The HTTP/1.1 upgrade that opens a websocket, byte for byte as upstream rathole (tungstenite)
// sends it, and checked as tungstenite checks it (a little more leniently where RFC 6455 allows:
// `Connection` is a token list in both directions, and a server reply's extra headers are fine).
// Pure: bytes in, values out.

/// Why an upgrade was refused, in one line.
public enum WebSocketHandshakeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Not HTTP at all (the first bytes already say so), e.g. a peer speaking another transport.
    case notHTTP
    case headTooLarge
    case malformed(String)
    /// A well-formed request that is not a websocket upgrade rathole accepts.
    case badRequest(String)
    /// The server answered, but not with a websocket upgrade.
    case refused(String)

    public var description: String {
        switch self {
        case .notHTTP: return "not an HTTP websocket upgrade (is the peer using another transport?)"
        case .headTooLarge: return "HTTP head longer than \(WebSocketHandshake.maxHeadSize) bytes"
        case .malformed(let why): return "malformed HTTP head: \(why)"
        case .badRequest(let why): return "bad websocket upgrade request: \(why)"
        case .refused(let why): return "websocket upgrade refused: \(why)"
        }
    }
}

public enum WebSocketHandshake {
    /// A request or response head longer than this is refused (proxies and CDNs add headers, but
    /// not this many).
    public static let maxHeadSize = 16 * 1024

    // MARK: Client

    /// The client's upgrade request, as upstream sends it: `GET /`, then exactly these headers in
    /// this order.
    public static func request(host: String, key: String) -> [UInt8] {
        Array(
            ("GET / HTTP/1.1\r\nHost: \(host)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: \(key)\r\n\r\n").utf8)
    }

    /// The `Host` header upstream sends for `remote_addr`: the authority of the URL
    /// `ws://<remote_addr>`, so a name in lower case, an IPv6 address in brackets, and no port
    /// when it is 80 (the ws default, even when TLS is underneath).
    public static func hostHeader(for remote: HostPort) -> String {
        let host: String
        switch remote.host {
        case .ipv6: host = "[\(remote.host)]"
        case .ipv4: host = remote.host.description
        case .name(let n): host = n.lowercased()
        }
        return remote.port == 80 ? host : "\(host):\(remote.port)"
    }

    /// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
    public static func randomKey() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        bytes.withUnsafeMutableBytes { fillSecureRandom($0) }
        return base64(bytes)
    }

    /// Checks the server's response head (up to and including its blank line) to a request made
    /// with `key`.
    public static func checkResponse(_ head: [UInt8], key: String) throws(WebSocketHandshakeError) {
        let parsed = try Head(head, startsWith: "HTTP/")
        let parts = parsed.startLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0] == "HTTP/1.1", parts[1].utf8.count == 3, let status = Int(parts[1]) else {
            throw .malformed("status line \"\(shown(parsed.startLine, 80))\"")
        }
        guard status == 101 else { throw .refused("the server answered \"\(shown(parsed.startLine, 80))\"") }
        guard parsed["upgrade"]?.lowercased() == "websocket" else { throw .refused("no \"Upgrade: websocket\" in the response") }
        guard parsed.hasToken("connection", "upgrade") else { throw .refused("no \"Connection: Upgrade\" in the response") }
        guard parsed["sec-websocket-accept"] == acceptValue(key: key) else {
            throw .refused("wrong Sec-WebSocket-Accept in the response")
        }
        // We asked for neither: RFC 6455 says fail if the server picked one anyway.
        if parsed["sec-websocket-protocol"] != nil { throw .refused("the server chose a subprotocol we did not offer") }
        if parsed["sec-websocket-extensions"] != nil { throw .refused("the server chose an extension we did not offer") }
    }

    // MARK: Server

    /// Checks a client's request head; returns its `Sec-WebSocket-Key`. What upstream requires:
    /// `GET`, HTTP/1.1, `Connection: Upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13`
    /// and a key; the path and other headers do not matter.
    public static func checkRequest(_ head: [UInt8]) throws(WebSocketHandshakeError) -> String {
        let parsed = try Head(head, startsWith: "GET ")
        let parts = parsed.startLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[1].isEmpty else { throw .malformed("request line \"\(shown(parsed.startLine, 80))\"") }
        guard parts[2] == "HTTP/1.1" else { throw .badRequest("HTTP version \(shown(parts[2], 16)), not HTTP/1.1") }
        guard parsed.hasToken("connection", "upgrade") else { throw .badRequest("no \"Connection: Upgrade\"") }
        guard parsed["upgrade"]?.lowercased() == "websocket" else { throw .badRequest("no \"Upgrade: websocket\"") }
        guard parsed["sec-websocket-version"] == "13" else { throw .badRequest("no \"Sec-WebSocket-Version: 13\"") }
        guard let key = parsed["sec-websocket-key"], !key.isEmpty else { throw .badRequest("no Sec-WebSocket-Key") }
        return key
    }

    /// The server's answer, as upstream sends it (header names in lower case).
    public static func response(key: String) -> [UInt8] {
        Array(
            ("HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
                + "sec-websocket-accept: \(acceptValue(key: key))\r\n\r\n").utf8)
    }

    /// What the server sends before closing a connection whose request was HTTP but not an
    /// acceptable upgrade (RFC 6455 4.2.1).
    public static let badRequestResponse = Array("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".utf8)

    /// base64(SHA-1(key + the RFC 6455 GUID)).
    public static func acceptValue(key: String) -> String {
        let input = Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)
        var digest = [UInt8](repeating: 0, count: 20)
        var length: UInt32 = 0
        let ok = input.withUnsafeBytes { i in
            digest.withUnsafeMutableBufferPointer { d in
                EVP_Digest(i.baseAddress, i.count, d.baseAddress, &length, EVP_sha1(), nil)
            }
        }
        precondition(ok == 1 && length == 20, "OpenSSL SHA-1 failed")
        return base64(digest)
    }

    // MARK: Reading a head

    /// The size of the head (through its blank line) at the start of `bytes`; nil while it is
    /// incomplete. Throws as soon as the bytes cannot start `prefix` ("GET " or "HTTP/"), so a
    /// stranger speaking another protocol is refused at its first bytes, and when the head grows
    /// past `maxHeadSize`.
    public static func headLength(_ bytes: UnsafeRawBufferPointer, startsWith prefix: String) throws(WebSocketHandshakeError) -> Int? {
        let expected = Array(prefix.utf8)
        for (i, b) in zip(bytes.indices, expected) where bytes[i] != b { throw .notHTTP }
        if bytes.count >= 4 {
            for i in 3..<min(bytes.count, maxHeadSize)
            where bytes[i] == 0x0A && bytes[i - 1] == 0x0D
                && bytes[i - 2] == 0x0A && bytes[i - 3] == 0x0D
            {
                return i + 1
            }
        }
        if bytes.count >= maxHeadSize { throw .headTooLarge }
        return nil
    }

    /// A parsed head: the start line and the headers (names in lower case; the first of each).
    struct Head {
        let startLine: Substring
        private var fields: [(name: String, value: String)] = []

        init(_ head: [UInt8], startsWith prefix: String) throws(WebSocketHandshakeError) {
            guard head.count <= WebSocketHandshake.maxHeadSize else { throw .headTooLarge }
            guard head.starts(with: prefix.utf8) else { throw .notHTTP }
            // Header text is ASCII; a byte outside it (or a bare control character) is refused.
            if let bad = head.first(where: { ($0 < 0x20 && $0 != 0x0D && $0 != 0x0A && $0 != 0x09) || $0 >= 0x7F }) {
                throw .malformed("byte 0x\(String(bad, radix: 16)) in the head")
            }
            guard head.count >= 4, head.suffix(4).elementsEqual([13, 10, 13, 10]) else { throw .malformed("no blank line at its end") }
            // Lines end in CRLF; a bare CR or LF inside a line is refused below as part of a name or kept in a value.
            var lines: [Substring] = []
            var start = 0
            for i in 1..<(head.count - 2) where head[i - 1] == 13 && head[i] == 10 {
                lines.append(Substring(String(decoding: head[start..<(i - 1)], as: UTF8.self)))
                start = i + 1
            }
            startLine = lines.removeFirst()
            for line in lines {
                guard let colon = line.firstIndex(of: ":") else { throw .malformed("header line without a colon") }
                let name = line[..<colon]
                guard !name.isEmpty, !name.contains(" "), !name.contains("\t") else {
                    throw .malformed("header name \"\(shown(name, 40))\"")
                }
                let value = line[line.index(after: colon)...].trimmingSpaces
                fields.append((name.lowercased(), String(value)))
            }
        }

        subscript(name: String) -> String? { fields.first { $0.name == name }?.value }

        /// True when the header's value, as a list split on commas and spaces, holds `token`.
        func hasToken(_ name: String, _ token: String) -> Bool {
            guard let value = self[name] else { return false }
            return value.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" }).contains { $0.lowercased() == token }
        }
    }

    /// Standard padded base64 (RFC 4648).
    static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = min(3, bytes.count - i)
            let chunk = UInt32(bytes[i]) << 16 | (n > 1 ? UInt32(bytes[i + 1]) << 8 : 0) | (n > 2 ? UInt32(bytes[i + 2]) : 0)
            for j in 0..<4 {
                out.append(j <= n ? alphabet[Int(chunk >> UInt32(18 - 6 * j)) & 63] : UInt8(ascii: "="))
            }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Peer text as an error shows it: at most `limit` characters, a bare CR or LF inside a line
/// (kept by the head parser) as '?', so that one refusal stays one log line.
private func shown(_ text: Substring, _ limit: Int) -> String {
    String(text.prefix(limit).map { $0 == "\r" || $0 == "\n" || $0 == "\r\n" ? "?" : $0 })
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return s
    }
}
