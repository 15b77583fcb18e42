// A plain HTTP/1.1 client for the API tests (one request per connection, bytes on a real socket),
// and configs with [server.api] / [client.api].
import Foundation
import Glibc
import TestKit
import XCTest

struct HTTPReply {
    var status: Int
    /// Header names in lower case.
    var headers: [String: String]
    var body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }

    /// The body as a JSON object.
    var object: [String: Any] { ((try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]) ?? [:] }
}

enum HTTP {
    static func request(
        port: UInt16, _ method: String, _ path: String, token: String? = nil, body: [UInt8]? = nil,
        timeout: Double = 20
    ) throws -> HTTPReply {
        let c = try Conn.connect(port: port)
        defer { c.close() }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let token { head += "Authorization: Bearer \(token)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        // A server that refuses a body may answer and close before reading all of it.
        try? c.send(Array((head + "\r\n").utf8) + (body ?? []))
        let raw = try c.readToEOF(timeout: timeout)
        guard let end = raw.firstRange(of: Array("\r\n\r\n".utf8)) else {
            throw TestFailure("no HTTP response head in \(raw.count) bytes: \(String(decoding: raw.prefix(200), as: UTF8.self))")
        }
        let lines = String(decoding: raw[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw TestFailure("bad status line: \(lines[0])") }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return HTTPReply(status: status, headers: headers, body: Array(raw[end.upperBound...]))
    }

    static func json(_ fields: [String: Any]) -> [UInt8] {
        Array(try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]))
    }
}

enum APIConfig {
    static let token = "api-token-for-tests"

    static func table(_ side: String, port: UInt16, token: String = APIConfig.token) -> String {
        "[\(side).api]\nbind_addr = \"127.0.0.1:\(port)\"\ntoken = \"\(token)\"\n"
    }
}

extension EndToEndCase {
    /// Waits until the API answers /healthz.
    func waitForAPI(port: UInt16, timeout: Double = 15) throws {
        let ok = waitUntil(timeout: timeout, interval: 0.1) { (try? HTTP.request(port: port, "GET", "/healthz"))?.status == 200 }
        if !ok { throw TestFailure("the API on port \(port) did not answer within \(timeout)s") }
    }

    /// The `/metrics` samples, by name with labels as written (`rathole_bytes_total{service="a",direction="in"}`).
    func metrics(port: UInt16) throws -> [String: Double] {
        let reply = try HTTP.request(port: port, "GET", "/metrics", token: APIConfig.token)
        guard reply.status == 200 else { throw TestFailure("/metrics: \(reply.status) \(reply.text)") }
        var samples: [String: Double] = [:]
        for line in reply.text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            samples[String(line[..<space])] = value
        }
        return samples
    }
}
