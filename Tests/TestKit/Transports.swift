// The transport tables of both config files for each encrypted transport: Noise NK, XX and KK
// with keys from `rathole --genkey`, and TLS with certificates from the fixture script.
import Foundation

/// The `[server.transport]` and `[client.transport]` tables of a transport.
public struct TransportTables: Sendable {
    public var server: String
    public var client: String
    public init(server: String, client: String) {
        self.server = server
        self.client = client
    }
}

public enum TransportKind: String, Sendable {
    case noiseNK, noiseXX, noiseKK, noiseNKAESGCM, tls
}

public enum Transports {
    public static let p12Password = "p12 pass-word"
    public static let xx = "Noise_XX_25519_ChaChaPoly_BLAKE2s"
    public static let kk = "Noise_KK_25519_ChaChaPoly_BLAKE2s"
    public static let nkAESGCM = "Noise_NK_25519_AESGCM_SHA256"

    public static func noise(_ side: String, pattern: String? = nil, privateKey: String? = nil, remotePublic: String? = nil) -> String {
        var t = "[\(side).transport]\ntype = \"noise\"\n\n[\(side).transport.noise]\n"
        if let pattern { t += "pattern = \"\(pattern)\"\n" }
        if let privateKey { t += "local_private_key = \"\(privateKey)\"\n" }
        if let remotePublic { t += "remote_public_key = \"\(remotePublic)\"\n" }
        return t
    }

    public static func tlsServer(certDir: String) -> String {
        "[server.transport]\ntype = \"tls\"\n\n[server.transport.tls]\npkcs12 = \"\(certDir)/server.p12\"\npkcs12_password = \"\(p12Password)\"\n"
    }

    public static func tlsClient(trustedRoot: String, hostname: String? = "localhost") -> String {
        var t = "[client.transport]\ntype = \"tls\"\n\n[client.transport.tls]\ntrusted_root = \"\(trustedRoot)\"\n"
        if let hostname { t += "hostname = \"\(hostname)\"\n" }
        return t
    }

    /// The certificates for TLS in <dir>/certs, made once per test.
    public static func certs(in dir: String) throws -> String {
        let certDir = dir + "/certs"
        if !FileManager.default.fileExists(atPath: certDir + "/server.p12") {
            try Programs.makeCerts(in: certDir, password: p12Password)
        }
        return certDir
    }

    /// Matching tables for both sides, with fresh keys (certificates in `dir`).
    public static func tables(_ kind: TransportKind, dir: String) throws -> TransportTables {
        switch kind {
        case .noiseNK:
            let s = try Programs.genkey()
            return TransportTables(server: noise("server", privateKey: s.privateKey), client: noise("client", remotePublic: s.publicKey))
        case .noiseXX:
            return TransportTables(server: noise("server", pattern: xx), client: noise("client", pattern: xx))
        case .noiseNKAESGCM:
            let s = try Programs.genkey()
            return TransportTables(
                server: noise("server", pattern: nkAESGCM, privateKey: s.privateKey),
                client: noise("client", pattern: nkAESGCM, remotePublic: s.publicKey))
        case .noiseKK:
            let s = try Programs.genkey()
            let c = try Programs.genkey()
            return TransportTables(
                server: noise("server", pattern: kk, privateKey: s.privateKey, remotePublic: c.publicKey),
                client: noise("client", pattern: kk, privateKey: c.privateKey, remotePublic: s.publicKey))
        case .tls:
            let d = try certs(in: dir)
            return TransportTables(server: tlsServer(certDir: d), client: tlsClient(trustedRoot: d + "/ca.pem"))
        }
    }
}

extension TunnelConfig {
    public var transport: TransportTables {
        get { TransportTables(server: serverTables, client: clientTables) }
        set {
            serverTables = newValue.server
            clientTables = newValue.client
        }
    }
}
