// `[server.api]` / `[client.api]`: the HTTP API (ours; upstream rathole has none).

import DataPlane

/// Where the HTTP API listens and the token every request but `GET /healthz` must carry. Without
/// the table nothing listens.
public struct ApiConfig: Equatable, Sendable {
    public var bindAddr: PeerAddress
    public var token: MaskedString

    public init(bindAddr: PeerAddress, token: MaskedString) {
        self.bindAddr = bindAddr
        self.token = token
    }
}

func parseApi(_ r: TableReader) throws(ConfigError) -> ApiConfig {
    try r.checkKeys(["bind_addr", "token"])
    let bindAddr = try readBindAddr(r, "bind_addr", required: true)!
    let token = try r.requiredString("token")
    guard !token.isEmpty else { throw r.error("token", "must not be empty") }
    return ApiConfig(bindAddr: bindAddr, token: MaskedString(token))
}
