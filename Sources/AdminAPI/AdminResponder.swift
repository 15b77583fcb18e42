// Built with the AdminAPI package trait only (the default).
#if AdminAPI

import AdminAPIBodies
import ControlPlane
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore

/// The API's endpoints. Every request but `GET /healthz` needs the token; each is logged in one
/// line naming the peer.
struct AdminResponder: Sendable {
    let instance: Instance
    let token: BearerToken
    let logger: Logger

    static let maxBody = 64 * 1024
    private static let services = "/api/v1/services"

    func respond(to request: Request, peer: String) async -> Response {
        var request = request
        var note = ""
        let response: Response
        do {
            response = try await route(&request, note: &note)
        } catch {
            let failure =
                error as? APIError
                ?? ((error as? NIOTooManyBytesError) != nil ? APIError(413, "the body is larger than \(Self.maxBody) bytes") : nil)
                ?? APIError(500, "internal error: \(error)")
            note = "(\(failure.summary))"
            var extra: HTTPFields = [:]
            if failure.status == 401 { extra[.wwwAuthenticate] = "Bearer" }
            if let allow = failure.allow { extra[.allow] = allow }
            response = Self.json(failure.json, status: failure.status, extra: extra)
        }
        let line = "api: \(peer) \(request.method) \(request.uri.path) -> \(response.status.code)"
        if response.status.code >= 500 {
            logger.error("\(line) \(note)")
        } else {
            logger.info("\(note.isEmpty ? line : "\(line) \(note)")")
        }
        return response
    }

    private func route(_ request: inout Request, note: inout String) async throws -> Response {
        let path = request.uri.path
        let method = request.method
        if path == "/healthz" {
            guard method == .get || method == .head else { throw Self.notAllowed("GET, HEAD") }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
        }
        guard token.accepts(request.headers[.authorization]) else {
            throw APIError(401, "missing or wrong token (send Authorization: Bearer <token>)")
        }
        if path == "/metrics" {
            guard method == .get else { throw Self.notAllowed("GET") }
            let text = PrometheusText.render(
                services: await instance.serviceStatuses(),
                failures: instance.metrics.handshakeFailures, process: ProcessStats.read())
            return Response(
                status: .ok, headers: [.contentType: PrometheusText.contentType], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        if path == Self.services {
            guard method == .get else { throw Self.notAllowed("GET") }
            return Self.json(ServiceJSON.render(await instance.serviceStatuses(), mode: instance.mode))
        }
        guard path.hasPrefix(Self.services + "/"), let name = ServiceJSON.percentDecoded(path.dropFirst(Self.services.count + 1)) else {
            throw APIError(404, "no such endpoint (see docs/openapi.yaml)")
        }
        try ServiceJSON.checkName(name)
        switch method {
        case .get:
            guard let status = await instance.serviceStatus(named: name) else { throw APIError(404, "no service \(name)") }
            return Self.json(ServiceJSON.render(status, mode: instance.mode))
        case .put:
            let body = try await request.collectBody(upTo: Self.maxBody)
            let definition = try ServiceJSON.definition(name: name, body: Array(body.readableBytesView), mode: instance.mode)
            let outcome = try await edit { () async throws(ServiceEditError) in try await instance.putService(definition) }
            note = "(\(outcome))"
            guard let status = await instance.serviceStatus(named: name) else { throw APIError(500, "service \(name) vanished") }
            return Self.json(ServiceJSON.render(status, mode: instance.mode), status: outcome == .added ? 201 : 200)
        case .delete:
            try await edit { () async throws(ServiceEditError) in try await instance.deleteService(named: name) }
            note = "(removed)"
            return Response(status: .noContent)
        default:
            throw Self.notAllowed("GET, PUT, DELETE")
        }
    }

    /// Runs a change through the instance, turning its refusal into the API's.
    private func edit<T>(_ body: () async throws(ServiceEditError) -> T) async throws(APIError) -> T {
        do {
            return try await body()
        } catch {
            switch error.kind {
            case .invalid: throw APIError(400, error.message, field: error.field)
            case .notFound: throw APIError(404, error.message)
            case .configFile: throw APIError(500, error.message)
            }
        }
    }

    private static func notAllowed(_ allowed: String) -> APIError {
        APIError(405, "method not allowed here (allowed: \(allowed))", allow: allowed)
    }

    static func json(_ text: String, status: Int = 200, extra: HTTPFields = [:]) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        headers.append(contentsOf: extra)
        return Response(
            status: HTTPResponse.Status(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: text + "\n")))
    }

}

#endif
