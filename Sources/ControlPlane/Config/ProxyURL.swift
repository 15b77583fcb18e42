// `[client.transport.tcp] proxy = "socks5://user:pass@host:port"` or `"http://..."`.

func percentDecode(_ s: ArraySlice<UInt8>) -> String? {
    var out: [UInt8] = []
    out.reserveCapacity(s.count)
    var i = s.startIndex
    while i < s.endIndex {
        let c = s[i]
        if c == UInt8(ascii: "%") {
            guard i + 2 < s.endIndex else { return nil }
            guard let hi = hexNibble(s[i + 1]), let lo = hexNibble(s[i + 2]) else { return nil }
            out.append(hi << 4 | lo)
            i += 3
        } else {
            out.append(c)
            i += 1
        }
    }
    return String(validating: out, as: UTF8.self)
}

func hexNibble(_ c: UInt8) -> UInt8? {
    switch c {
    case 0x30...0x39: return c - 0x30
    case 0x41...0x46: return c - 0x41 + 10
    case 0x61...0x66: return c - 0x61 + 10
    default: return nil
    }
}

extension ProxyConfig {
    /// Parses `scheme://[user[:password]@]host[:port][/]` with scheme socks5 or http. The http port
    /// defaults to 80; socks5 needs an explicit port.
    static func parse(url text: String) -> Result<ProxyConfig, HostPortParseError> {
        func fail(_ why: String) -> Result<ProxyConfig, HostPortParseError> {
            .failure(HostPortParseError(message: "invalid proxy URL: \(why)"))
        }
        let b = Array(text.utf8)
        guard let sep = findSubsequence(b, Array("://".utf8)) else {
            return fail("expected socks5://host:port or http://host:port")
        }
        let schemeText = String(decoding: b[..<sep], as: UTF8.self).lowercased()
        guard let scheme = ProxyConfig.Scheme(rawValue: schemeText) else {
            return fail("unsupported scheme \"\(schemeText)\" (expected socks5 or http)")
        }
        var rest = b[(sep + 3)...]
        // Authority ends at the first '/', '?' or '#'.
        if let end = rest.firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) {
            let tail = rest[end...]
            guard tail.count == 1 && tail.first == UInt8(ascii: "/") else {
                return fail("a proxy URL has no path, query or fragment")
            }
            rest = rest[..<end]
        }
        var username: String? = nil
        var password: MaskedString? = nil
        if let at = rest.lastIndex(of: UInt8(ascii: "@")) {
            let userinfo = rest[..<at]
            rest = rest[(at + 1)...]
            let userPart: ArraySlice<UInt8>
            if let colon = userinfo.firstIndex(of: UInt8(ascii: ":")) {
                userPart = userinfo[..<colon]
                guard let p = percentDecode(userinfo[(colon + 1)...]) else {
                    return fail("bad percent-encoding in the password")
                }
                password = MaskedString(p)
            } else {
                userPart = userinfo
            }
            guard let u = percentDecode(userPart) else { return fail("bad percent-encoding in the user name") }
            username = u
        }
        let hostPortText = String(decoding: rest, as: UTF8.self)
        switch HostPort.parse(hostPortText, ipOnly: false, defaultPort: scheme == .http ? 80 : nil) {
        case let .success(hp):
            return .success(ProxyConfig(scheme: scheme, username: username, password: password, address: hp))
        case let .failure(e):
            return fail(e.message)
        }
    }
}

func findSubsequence(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
    guard haystack.count >= needle.count else { return nil }
    for i in 0...(haystack.count - needle.count) where haystack[i..<i + needle.count].elementsEqual(needle) {
        return i
    }
    return nil
}
