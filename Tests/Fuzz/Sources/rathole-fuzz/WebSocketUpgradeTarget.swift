import ControlPlane

// The HTTP upgrade that opens a websocket: the server reading a client's request head, the
// client reading the server's response head, each found in the stream by headLength first.
// Input: mode byte, then
//   0: a request stream (server side);  1: a response stream (client side, fixed key);
//   2: a host and key to build a request and response from.
//
// Properties: headLength says the same on every prefix (nil while incomplete, the head's end once
// its blank line arrived, notHTTP at the first byte that cannot start the head); heads are found
// at their first blank line; every refusal is one line; heap grows with the head only; a request
// built for a key is accepted with that key, and our response to it passes the client's check.

let webSocketUpgradeTarget = FuzzTarget(
    name: "websocket-upgrade",
    summary: "WebSocketHandshake: head framing on every prefix, request/response checks, round trip"
) { data in
    var input = FuzzInput(data)
    switch input.byte() % 3 {
    case 0: WebSocketUpgradeChecks.stream(input.rest(), request: true)
    case 1: WebSocketUpgradeChecks.stream(input.rest(), request: false)
    default: WebSocketUpgradeChecks.roundTrip(&input)
    }
}

enum WebSocketUpgradeChecks {
    static let clientKey = "dGhlIHNhbXBsZSBub25jZQ=="

    static func headLength(_ bytes: ArraySlice<UInt8>, _ prefix: String) -> Result<Int?, WebSocketHandshakeError> {
        Array(bytes).withUnsafeBytes { raw in
            Result { () throws(WebSocketHandshakeError) in try WebSocketHandshake.headLength(raw, startsWith: prefix) }
        }
    }

    static func stream(_ s: [UInt8], request: Bool) {
        let prefix = request ? "GET " : "HTTP/"
        let p = Array(prefix.utf8)
        // The layout: refused at the first byte that differs from the prefix; else the head ends
        // at the first CRLFCRLF within the size limit.
        let mismatch = zip(s, p).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        var end: Int?
        if s.count >= 4 {
            for i in 3..<min(s.count, WebSocketHandshake.maxHeadSize) where s[i - 3] == 13 && s[i - 2] == 10 && s[i - 1] == 13 && s[i] == 10
            {
                end = i + 1
                break
            }
        }
        let whole = boundedHeap(input: s.count, fixed: 4096, "headLength") { headLength(s[...], prefix) }
        switch whole {
        case .failure(.notHTTP): require(mismatch != nil, "notHTTP for \(hex(s.prefix(16)))")
        case .failure(.headTooLarge): require(mismatch == nil && end == nil && s.count >= WebSocketHandshake.maxHeadSize, "headTooLarge")
        case .failure(let e): require(false, "headLength threw \(e)")
        case .success(let n):
            require(mismatch == nil && n == end, "headLength \(String(describing: n)), the head ends at \(String(describing: end))")
        }
        // Every prefix says nil or the same; a prefix that already shows the mismatch refuses.
        for cut in [0, 1, 3, 4, 5, s.count / 3, s.count / 2, s.count - 1] where cut >= 0 && cut < s.count {
            let r = headLength(s[..<cut], prefix)
            switch r {
            case .success(nil): require(mismatch.map { $0 >= cut } ?? true, "prefix \(cut): nil past the mismatch at \(mismatch!)")
            case .success(let n?): require(end == n, "prefix \(cut): head of \(n), whole \(String(describing: end))")
            case .failure(.notHTTP): require(mismatch.map { $0 < cut } ?? false, "prefix \(cut): notHTTP")
            case .failure(let e): require(false, "prefix \(cut): \(e)")
            }
        }
        guard case .success(let n?) = whole else { return }
        let head = Array(s[..<n])
        let checked = boundedHeap(input: n, perByte: 64, fixed: 16 << 10, "check head") {
            request
                ? Result { () throws(WebSocketHandshakeError) -> String in try WebSocketHandshake.checkRequest(head) }
                : Result { () throws(WebSocketHandshakeError) -> String in
                    try WebSocketHandshake.checkResponse(head, key: clientKey)
                    return ""
                }
        }
        switch checked {
        case .success(let key):
            if request {
                require(!key.isEmpty, "accepted a request without a key")
            } else {
                require(head.starts(with: Array("HTTP/1.1 101".utf8)), "accepted a response that is not 101")
            }
        case .failure(let e):
            requireOneLine(e.description, "WebSocketHandshakeError")
            require(e.description.count <= 250, "error of \(e.description.count) characters")
        }
    }

    static func roundTrip(_ input: inout FuzzInput) {
        let base64 = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        let hostChars = Array("abcdefghijklmnopqrstuvwxyz0123456789.-".utf8)
        let key = String(decoding: input.takePadded(Int(input.byte() % 40) + 1).map { base64[Int($0) % 64] }, as: UTF8.self)
        let host =
            String(decoding: input.takePadded(Int(input.byte() % 60) + 1).map { hostChars[Int($0) % hostChars.count] }, as: UTF8.self)
            + ":\(input.u16())"
        let request = WebSocketHandshake.request(host: host, key: key)
        let length = request.withUnsafeBytes { try? WebSocketHandshake.headLength($0, startsWith: "GET ") }
        require(length == request.count, "request of \(request.count) bytes, headLength \(String(describing: length))")
        require((try? WebSocketHandshake.checkRequest(request)) == key, "our request for key \(key) is not accepted with it")
        let response = WebSocketHandshake.response(key: key)
        let r = Result { () throws(WebSocketHandshakeError) in try WebSocketHandshake.checkResponse(response, key: key) }
        require((try? r.get()) != nil, "our response for key \(key) is refused: \(r)")
        let other = Result { () throws(WebSocketHandshakeError) in try WebSocketHandshake.checkResponse(response, key: key + "A") }
        require((try? other.get()) == nil, "a response for key \(key) passed for another key")
    }
}
