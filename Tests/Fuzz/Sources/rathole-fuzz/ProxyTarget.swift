import ControlPlane

// What a SOCKS5 or HTTP CONNECT proxy answers, read the way ProxyConnector reads it: exactly the
// bytes the parser says the reply still needs. Input: kind byte, then
//   0: a SOCKS5 method choice (flag byte: we offered a password; then 2 bytes);
//   1: a SOCKS5 CONNECT reply stream (the reply, then the target's first bytes);
//   2: a valid SOCKS5 reply built from the input, then the target's bytes;
//   3: an HTTP response stream read a byte at a time (flag byte: repeat the input past 16 KiB).
//
// Properties: the verdict and error are what the reply's layout calls for; the reader never takes
// a byte past the reply (the target's bytes stay on the socket); a built reply is accepted and
// consumed exactly; every error is one line of at most 200 characters.

let proxyTarget = FuzzTarget(
    name: "proxy",
    summary: "SOCKS5 and HTTP CONNECT replies: layout oracle, never reads past the reply, one-line errors"
) { data in
    var input = FuzzInput(data)
    switch input.byte() % 4 {
    case 0:
        let offered = input.byte() & 1 == 1
        ProxyChecks.methodChoice(input.takePadded(2), offered: offered)
    case 1:
        ProxyChecks.socks5Stream(input.rest())
    case 2:
        ProxyChecks.socks5Built(&input)
    default:
        let long = input.byte() & 31 == 0
        var stream = input.rest()
        if long && !stream.isEmpty {
            while stream.count <= HTTPConnectReply.maxHeadSize { stream += stream }
        }
        ProxyChecks.httpStream(stream)
    }
}

enum ProxyChecks {
    static let target = HostPort("example.net:443")!

    static func requireGoodLine(_ e: ProxyReplyError) {
        let line = e.message(target: target)
        requireOneLine(line, "proxy error")
        require(line.count <= 200, "proxy error of \(line.count) characters: \(line.prefix(300).debugDescription)")
    }

    static func methodChoice(_ reply: [UInt8], offered: Bool) {
        let r = Result { () throws(ProxyReplyError) in try Socks5Reply.methodChoice(reply, offeredPassword: offered) }
        let expected: Result<Bool, ProxyReplyError> =
            reply[0] != 5
            ? .failure(.notSocks5)
            : reply[1] == 0
                ? .success(false)
                : reply[1] == 2
                    ? (offered ? .success(true) : .failure(.passwordRequired))
                    : .failure(.noAcceptableMethod)
        require(r == expected, "method choice \(reply): \(r), expected \(expected)")
        if case .failure(let e) = r { requireGoodLine(e) }
    }

    /// The reply's length and verdict from its layout, given the whole stream.
    static func socks5Layout(_ s: [UInt8]) -> (length: Int, error: ProxyReplyError?)? {
        guard s.count >= 4 else { return nil }
        if s[0] != 5 { return (4, .malformedSocks5Reply) }
        if s[1] != 0 { return (4, .socks5ConnectFailed(s[1])) }
        switch s[3] {
        case 1: return (10, nil)
        case 4: return (22, nil)
        case 3: return s.count >= 5 ? (7 + Int(s[4]), nil) : nil
        default: return (4, .socks5AddressType(s[3]))
        }
    }

    /// Reads like the connector; returns what it took and how it ended.
    static func readSocks5(_ stream: [UInt8]) -> (taken: Int, result: Result<Void, ProxyReplyError>?) {
        var reply: [UInt8] = []
        while true {
            let needed: Int
            do {
                needed = try boundedHeap(input: reply.count, fixed: 2048, "Socks5Reply.bytesNeeded") {
                    Result { () throws(ProxyReplyError) in try Socks5Reply.bytesNeeded(reply) }
                }.get()
            } catch {
                return (reply.count, .failure(error))
            }
            if needed == 0 { return (reply.count, .success(())) }
            require(needed > 0, "bytesNeeded \(needed)")
            // The peer closed before the reply was whole.
            guard reply.count + needed <= stream.count else { return (reply.count, nil) }
            reply += stream[reply.count..<reply.count + needed]
        }
    }

    static func socks5Stream(_ stream: [UInt8]) {
        let (taken, result) = readSocks5(stream)
        guard let layout = socks5Layout(stream), layout.length <= stream.count else {
            require(result == nil, "a reply cut short (\(stream.count) bytes: \(hex(stream))) ended with \(String(describing: result))")
            return
        }
        require(taken <= layout.length, "took \(taken) bytes of a \(layout.length)-byte reply: \(hex(stream))")
        switch (result, layout.error) {
        case (.success?, nil):
            require(taken == layout.length, "accepted after \(taken) bytes of a \(layout.length)-byte reply")
        case (.failure(let e)?, let expected?):
            require(e == expected, "error \(e), layout says \(expected), for \(hex(stream))")
            requireGoodLine(e)
        default:
            require(false, "ended with \(String(describing: result)), layout says \(layout), for \(hex(stream))")
        }
    }

    static func socks5Built(_ input: inout FuzzInput) {
        let kind = input.byte() % 3
        var reply: [UInt8] = [5, 0, input.byte()]
        switch kind {
        case 0: reply += [1] + input.takePadded(4)
        case 1: reply += [4] + [UInt8](repeating: input.byte(), count: 16)
        default:
            let name = input.take(Int(input.byte()))
            reply += [3, UInt8(name.count)] + name
        }
        reply += [input.byte(), input.byte()]
        let target = input.rest()
        let (taken, result) = readSocks5(reply + target)
        let ok = if case .success? = result { true } else { false }
        require(ok && taken == reply.count, "built reply \(hex(reply)): took \(taken), \(String(describing: result))")
    }

    static func httpStream(_ stream: [UInt8]) {
        var head: [UInt8] = []
        var verdict: Result<Void, ProxyReplyError>?
        while true {
            let complete: Bool
            do {
                complete = try Result { () throws(ProxyReplyError) in try HTTPConnectReply.isComplete(head) }.get()
            } catch {
                verdict = .failure(error)
                break
            }
            if complete {
                verdict = boundedHeap(input: head.count, fixed: 4096, "HTTPConnectReply.check") {
                    Result { () throws(ProxyReplyError) in try HTTPConnectReply.check(head) }
                }
                break
            }
            guard head.count < stream.count else { break }
            head.append(stream[head.count])
        }
        // The layout: the head ends at the first blank line; no blank line within the limit refuses.
        var end: Int?
        var i = 3
        while i < stream.count, end == nil {
            if stream[i - 3] == 13, stream[i - 2] == 10, stream[i - 1] == 13, stream[i] == 10 { end = i + 1 }
            i += 1
        }
        if let end, end <= HTTPConnectReply.maxHeadSize {
            require(head.count == end, "read \(head.count) bytes of a \(end)-byte head")
            require(verdict != nil, "a whole head without a verdict")
        } else if stream.count >= HTTPConnectReply.maxHeadSize {
            let tooLarge = if case .failure(.httpHeadTooLarge)? = verdict { true } else { false }
            require(
                tooLarge && head.count == HTTPConnectReply.maxHeadSize,
                "no blank line in \(stream.count) bytes: read \(head.count), \(String(describing: verdict))")
        } else {
            require(verdict == nil && head.count == stream.count, "an unfinished head ended with \(String(describing: verdict))")
        }
        if case .failure(let e)? = verdict { requireGoodLine(e) }
        if case .success? = verdict {
            let line = head.prefix { $0 != 13 }
            require(line.starts(with: Array("HTTP/".utf8)) || head.first == 32, "accepted a non-HTTP head: \(hex(head.prefix(40)))")
        }
    }
}
