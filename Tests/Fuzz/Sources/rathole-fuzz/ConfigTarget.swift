import ControlPlane
import Glibc

// config: the TOML loader (Config.parse) on any text. The seed corpus holds the recorded
// configs and the examples.
// Properties: a refusal is one line starting with the file name; an accepted config keeps the
// promises the rest of the program relies on (a service is filed under its own name and has a
// token, the transport type has its table, ports are not 0, exactly one mode or the choice is
// asked for); parsing is deterministic; heap stays within a multiple of the text.
//
// addresses: the address syntax inside configs (IPv4, IPv6, socket addresses, host:port).
// Properties: IPv4 and IPv6 literals are accepted exactly when glibc's inet_pton accepts them,
// with the same value; whatever is accepted prints back to text that parses to the same value.

let configTarget = FuzzTarget(
    name: "config",
    summary: "Config.parse on any TOML: one-line errors naming the file, invariants of accepted configs"
) { data in
    let text = String(decoding: data, as: UTF8.self)
    let result = boundedHeap(input: data.count, perByte: 256, fixed: 1 << 20, "Config.parse") {
        Result { () throws(ConfigError) in try Config.parse(text, file: "fuzz.toml") }
    }
    switch result {
    case .failure(let e):
        requireOneLine(e.description, "ConfigError")
        require(e.description.hasPrefix("fuzz.toml: ") && e.file == "fuzz.toml", "error does not name the file: \(e.description)")
        if let key = e.key { require(!key.isEmpty, "error with an empty key: \(e.description)") }
    case .success(let config):
        require(config.server != nil || config.client != nil, "a config with neither side")
        let again = try? Config.parse(text, file: "fuzz.toml")
        require(again == config, "parsing the same text twice differs")
        ConfigChecks.invariants(config)
    }
}

enum ConfigChecks {
    static func invariants(_ c: Config) {
        let mode = Result { () throws(ConfigError) in try c.mode() }
        switch (c.server != nil, c.client != nil, mode) {
        case (true, false, .success(.server)), (false, true, .success(.client)): break
        case (true, true, .failure(let e)): requireOneLine(e.description, "mode error")
        default: require(false, "mode() is \(mode) for server \(c.server != nil), client \(c.client != nil)")
        }
        if let s = c.server {
            transport(s.transport, server: true)
            for (name, service) in s.services {
                require(service.name == name, "service \(name) filed under another name")
            }
        }
        if let cl = c.client {
            transport(cl.transport, server: false)
            require(cl.remoteAddr.port != 0, "remote_addr with port 0")
            for (name, service) in cl.services {
                require(service.name == name, "service \(name) filed under another name")
                require(service.localAddr.port != 0, "local_addr with port 0")
            }
        }
    }

    static func transport(_ t: TransportConfig, server: Bool) {
        switch t.type {
        case .tcp: break
        case .tls:
            require(t.tls != nil, "tls transport without [tls]")
            if server {
                require(t.tls?.pkcs12 != nil && t.tls?.pkcs12Password != nil, "tls server without pkcs12")
            } else {
                require(t.tls?.trustedRoot != nil, "tls client without trusted_root")
            }
        case .noise: require(t.noise != nil, "noise transport without [noise]")
        case .websocket: require(t.websocket != nil, "websocket transport without [websocket]")
        }
        if let p = t.tcp.proxy { require(p.address.port != 0, "proxy with port 0") }
    }
}

let addressesTarget = FuzzTarget(
    name: "addresses",
    summary: "IPv4/IPv6/socket address and host:port text: inet_pton agreement, print/parse round trip"
) { data in
    let text = String(decoding: data, as: UTF8.self)
    guard !text.utf8.contains(0) else { return }

    let v4 = IPv4Address(text)
    var a4 = in_addr()
    let glibc4 = inet_pton(AF_INET, text, &a4) == 1
    require((v4 != nil) == glibc4, "IPv4 \(text.debugDescription): ours \(String(describing: v4)), inet_pton \(glibc4)")
    if let v4 {
        require(v4.networkOrder == a4.s_addr, "IPv4 \(text.debugDescription): \(v4) vs inet_pton")
        require(IPv4Address(v4.description) == v4, "IPv4 \(v4) does not round-trip")
    }

    let v6 = IPv6Address(text)
    var a6 = in6_addr()
    let glibc6 = inet_pton(AF_INET6, text, &a6) == 1
    require((v6 != nil) == glibc6, "IPv6 \(text.debugDescription): ours \(String(describing: v6)), inet_pton \(glibc6)")
    if let v6 {
        let bytes = withUnsafeBytes(of: &a6) { Array($0) }
        require(v6.bytes == bytes, "IPv6 \(text.debugDescription): \(v6) vs inet_pton \(hex(bytes))")
        require(IPv6Address(v6.description) == v6, "IPv6 \(v6) does not round-trip")
    }

    if let p = PeerAddress(text) {
        require(PeerAddress(p.description) == p, "socket address \(p) does not round-trip")
    }
    if let h = HostPort(text) {
        require(h.port != 0, "host:port with port 0: \(text.debugDescription)")
        require(HostPort(h.description) == h, "host:port \(h) does not round-trip")
        if let literal = h.literalAddress { require(PeerAddress(literal.description) == literal, "\(literal) does not round-trip") }
    }
}
