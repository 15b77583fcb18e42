// Noise (NK, XX, KK; NK with AESGCM_SHA256; every other suite) and TLS transports end to end:
// echo, 64 MiB hashed, 50 concurrent connections; refusals with nothing forwarded (wrong server key, untrusted certificate); and a
// relay between client and server that flips one byte of ciphertext mid-transfer: that connection
// dies and what was delivered is a clean prefix of what was sent.
import ControlPlane
import Foundation
import Glibc
import XCTest

final class EncryptedTransportTests: FeatureTestCase {
    enum Kind: String {
        case noiseNK, noiseXX, noiseKK, noiseNKAESGCM, tls
    }

    /// The `[server.transport]` and `[client.transport]` tables of a transport.
    struct Secure {
        var server: String
        var client: String
    }

    static let p12Password = "p12 pass-word"
    static let xx = "Noise_XX_25519_ChaChaPoly_BLAKE2s"
    static let kk = "Noise_KK_25519_ChaChaPoly_BLAKE2s"
    static let nkAESGCM = "Noise_NK_25519_AESGCM_SHA256"

    private func certs() throws -> String {
        let certDir = dir + "/certs"
        if !FileManager.default.fileExists(atPath: certDir + "/server.p12") {
            try FeatureSupport.makeCerts(in: certDir, password: Self.p12Password)
        }
        return certDir
    }

    private func noise(_ side: String, pattern: String? = nil, privateKey: String? = nil, remotePublic: String? = nil) -> String {
        var t = "[\(side).transport]\ntype = \"noise\"\n\n[\(side).transport.noise]\n"
        if let pattern { t += "pattern = \"\(pattern)\"\n" }
        if let privateKey { t += "local_private_key = \"\(privateKey)\"\n" }
        if let remotePublic { t += "remote_public_key = \"\(remotePublic)\"\n" }
        return t
    }

    private func tlsClient(trustedRoot: String, hostname: String? = "localhost") -> String {
        var t = "[client.transport]\ntype = \"tls\"\n\n[client.transport.tls]\ntrusted_root = \"\(trustedRoot)\"\n"
        if let hostname { t += "hostname = \"\(hostname)\"\n" }
        return t
    }

    private func transport(_ kind: Kind) throws -> Secure {
        switch kind {
        case .noiseNK:
            let s = try FeatureSupport.genkey()
            return Secure(server: noise("server", privateKey: s.privateKey), client: noise("client", remotePublic: s.publicKey))
        case .noiseXX:
            return Secure(server: noise("server", pattern: Self.xx), client: noise("client", pattern: Self.xx))
        case .noiseNKAESGCM:
            let s = try FeatureSupport.genkey()
            return Secure(server: noise("server", pattern: Self.nkAESGCM, privateKey: s.privateKey),
                          client: noise("client", pattern: Self.nkAESGCM, remotePublic: s.publicKey))
        case .noiseKK:
            let s = try FeatureSupport.genkey()
            let c = try FeatureSupport.genkey()
            return Secure(server: noise("server", pattern: Self.kk, privateKey: s.privateKey, remotePublic: c.publicKey),
                          client: noise("client", pattern: Self.kk, privateKey: c.privateKey, remotePublic: s.publicKey))
        case .tls:
            let d = try certs()
            return Secure(
                server: "[server.transport]\ntype = \"tls\"\n\n[server.transport.tls]\npkcs12 = \"\(d)/server.p12\"\npkcs12_password = \"\(Self.p12Password)\"\n",
                client: tlsClient(trustedRoot: d + "/ca.pem"))
        }
    }

    /// Starts a server and a client with `secure`; the client reaches the server through
    /// `remotePort` (a relay) when given.
    private func startSecure(_ secure: Secure, services: [FeatureService], control: UInt16, remotePort: UInt16? = nil)
        throws -> (server: RatholeProcess, client: RatholeProcess)
    {
        let server = rathole("server", config: FeatureConfig.server(controlPort: control, services: services, tables: secure.server))
        let client = rathole("client", config: FeatureConfig.client(remotePort: remotePort ?? control, services: services, tables: secure.client))
        try server.start()
        for s in services { try waitServerReady(server, service: s.name) }
        try client.start()
        for s in services { try waitClientReady(client, service: s.name) }
        return (server, client)
    }

    // MARK: Echo, 64 MiB, 50 concurrent connections

    private func checkTransport(_ kind: Kind) throws {
        let echo = keep(try LocalService.echo())
        let control = Ports.free()
        let publicPort = Ports.free()
        let (server, client) = try startSecure(try transport(kind), services: [FeatureService("secure", port: publicPort, localPort: echo.port)],
                                               control: control)
        XCTAssertFalse(client.log.contains("WARN") || client.log.contains("ERROR"), "\(kind): the client complained:\n\(client.log)")

        for (i, size) in [1, 5000, 200_000].enumerated() {
            try echoOnce(port: publicPort, payload: patternBytes(count: size, seed: UInt64(i + 1)))
        }
        XCTAssertNoThrow(try FeatureSupport.echoTransfer(port: publicPort, data: FeatureSupport.big), "\(kind): 64 MiB")
        let failures = FeatureSupport.concurrentEchoes(port: publicPort, count: 50)
        XCTAssertEqual(failures, [], "\(kind): \(failures.count) of 50 concurrent connections failed")
        XCTAssertEqual(echo.accepted, 3 + 1 + 50, "\(kind): one local connection per visitor")
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    func testNoiseNK() throws { try checkTransport(.noiseNK) }
    func testNoiseXX() throws { try checkTransport(.noiseXX) }
    func testNoiseKK() throws { try checkTransport(.noiseKK) }
    func testNoiseNKAESGCMSHA256() throws { try checkTransport(.noiseNKAESGCM) }
    func testTLS() throws { try checkTransport(.tls) }

    /// The 6 suites not tested above (ChaChaPoly_BLAKE2s and AESGCM_SHA256 are), NK and XX in turn:
    /// echoes, 8 MiB hashed and 10 concurrent connections through each.
    func testEveryOtherNoiseSuite() throws {
        let suites = ["ChaChaPoly_BLAKE2b", "ChaChaPoly_SHA256", "ChaChaPoly_SHA512",
                      "AESGCM_BLAKE2s", "AESGCM_BLAKE2b", "AESGCM_SHA512"]
        let echo = keep(try LocalService.echo())
        for (n, suite) in suites.enumerated() {
            let secure: Secure
            if n % 2 == 0 {
                let pattern = "Noise_NK_25519_\(suite)", s = try FeatureSupport.genkey()
                secure = Secure(server: noise("server", pattern: pattern, privateKey: s.privateKey),
                                client: noise("client", pattern: pattern, remotePublic: s.publicKey))
            } else {
                let pattern = "Noise_XX_25519_\(suite)"
                secure = Secure(server: noise("server", pattern: pattern), client: noise("client", pattern: pattern))
            }
            let publicPort = Ports.free()
            let (server, client) = try startSecure(secure, services: [FeatureService("secure", port: publicPort, localPort: echo.port)],
                                                   control: Ports.free())
            for (i, size) in [1, 5000, 200_000].enumerated() {
                try echoOnce(port: publicPort, payload: patternBytes(count: size, seed: UInt64(n * 10 + i + 1)))
            }
            XCTAssertNoThrow(try FeatureSupport.echoTransfer(port: publicPort, data: Array(FeatureSupport.big.prefix(8 << 20))),
                             "\(suite): 8 MiB")
            let failures = FeatureSupport.concurrentEchoes(port: publicPort, count: 10)
            XCTAssertEqual(failures, [], "\(suite): \(failures.count) of 10 concurrent connections failed")
            XCTAssertFalse(client.log.contains("WARN") || client.log.contains("ERROR"), "\(suite): the client complained:\n\(client.log)")
            XCTAssertTrue(server.isRunning && client.isRunning, suite)
            client.killNow()
            server.killNow()
        }
        XCTAssertEqual(echo.accepted, suites.count * (3 + 1 + 10), "one local connection per visitor")
    }

    // MARK: Refusals

    /// NK with a client that expects another server key: the handshake fails, nothing is forwarded.
    /// Connections that come and go leave no memory behind: 1,600 more short connections through a
    /// Noise tunnel (half of them reset by the visitor), after a warm-up, grow neither process's heap by more than a few MiB (a read
    /// buffer kept by each closed connection would add 64 KiB apiece, 100 MiB in all; untouched,
    /// so VmData shows it where RSS would not).
    func testClosedNoiseConnectionsLeaveNoMemoryBehind() throws {
        let echo = keep(try LocalService.echo())
        let control = Ports.free()
        let publicPort = Ports.free()
        let (server, client) = try startSecure(try transport(.noiseNK), services: [FeatureService("secure", port: publicPort, localPort: echo.port)],
                                               control: control)
        func connections(_ rounds: Int) {
            for round in 0..<rounds {
                let failures = FeatureSupport.concurrentEchoes(port: publicPort, count: 50, bytesEach: 1000, resetting: round % 2 == 1)
                XCTAssertEqual(failures, [], "round \(round)")
            }
        }
        connections(8)
        let before = (server: try XCTUnwrap(server.dataKiB), client: try XCTUnwrap(client.dataKiB))
        connections(32)
        let after = (server: try XCTUnwrap(server.dataKiB), client: try XCTUnwrap(client.dataKiB))
        XCTAssertLessThan(after.server - before.server, 8 << 10, "server VmData \(before.server) KiB -> \(after.server) KiB")
        XCTAssertLessThan(after.client - before.client, 8 << 10, "client VmData \(before.client) KiB -> \(after.client) KiB")
    }

    func testNoiseWrongServerKeyRefused() throws {
        let real = try FeatureSupport.genkey()
        let other = try FeatureSupport.genkey()
        let local = keep(try LocalService.echo())
        let control = Ports.free()
        let publicPort = Ports.free()
        let svc = FeatureService("secure", port: publicPort, localPort: local.port)
        let server = rathole("server", config: FeatureConfig.server(controlPort: control, services: [svc],
                                                                     tables: noise("server", privateKey: real.privateKey)))
        let client = rathole("client", config: FeatureConfig.client(remotePort: control, services: [svc],
                                                                     tables: noise("client", remotePublic: other.publicKey)))
        try server.start()
        try waitServerReady(server, service: "secure")
        try client.start()
        XCTAssertTrue(client.waitForLog("noise handshake", count: 2, timeout: 10), "the client logs the failed handshake, and retries")
        let line = FeatureSupport.lines(of: client.log, containing: "noise handshake").first ?? ""
        XCTAssertTrue(line.contains("ERROR") && line.contains("secure") && line.contains("retrying"), "a clear error line: \(line)")
        try featureAssertNothingForwarded(publicPort: publicPort, local: local)
        XCTAssertEqual(client.occurrences(of: "control channel established"), 0)
        XCTAssertEqual(server.occurrences(of: "established"), 0)
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    /// Patterns upstream refuses too: rathole exits 1 with a line naming the key and the refused part.
    func testRefusedNoisePatternsNameTheKey() throws {
        let key = try FeatureSupport.genkey()
        let cases: [(side: String, pattern: String, part: String)] = [
            ("server", "Noise_NK_25519_XChaChaPoly_BLAKE2s", "cipher 'XChaChaPoly'"),
            ("server", "Noise_NK_448_AESGCM_SHA256", "DH function '448'"),
            ("server", "Noise_NKpsk0_25519_AESGCM_SHA256", "pattern modifier 'psk0'"),
            ("client", "Noise_N_25519_AESGCM_SHA512", "one-way pattern 'N'"),
            ("client", "Noise_NK_25519_AESGCM_SHA3", "hash 'SHA3'"),
        ]
        for (n, c) in cases.enumerated() {
            let svc = FeatureService("secure", port: Ports.free(), localPort: Ports.free())
            let config = c.side == "server"
                ? FeatureConfig.server(controlPort: Ports.free(), services: [svc],
                                       tables: noise("server", pattern: c.pattern, privateKey: key.privateKey))
                : FeatureConfig.client(remotePort: Ports.free(), services: [svc],
                                       tables: noise("client", pattern: c.pattern, remotePublic: key.publicKey))
            let p = rathole("refused-\(n)", config: config)
            try p.start()
            XCTAssertEqual(p.waitForExit(timeout: 10), .exited(1), c.pattern)
            let line = FeatureSupport.lines(of: p.log, containing: "\(c.side).transport.noise.pattern").first ?? ""
            XCTAssertTrue(line.contains(c.pattern) && line.contains(c.part), "\(c.pattern): one line naming the key: \(p.log)")
        }
    }

    /// TLS with a client that trusts another CA: the handshake fails, nothing is forwarded.
    func testTLSUntrustedCertificateRefused() throws {
        let d = try certs()
        let local = keep(try LocalService.echo())
        let control = Ports.free()
        let publicPort = Ports.free()
        let svc = FeatureService("secure", port: publicPort, localPort: local.port)
        var secure = try transport(.tls)
        secure.client = tlsClient(trustedRoot: d + "/other-ca.pem")
        let server = rathole("server", config: FeatureConfig.server(controlPort: control, services: [svc], tables: secure.server))
        let client = rathole("client", config: FeatureConfig.client(remotePort: control, services: [svc], tables: secure.client))
        try server.start()
        try waitServerReady(server, service: "secure")
        try client.start()
        XCTAssertTrue(client.waitForLog("tls handshake", count: 2, timeout: 10), "the client logs the failed handshake, and retries")
        let line = FeatureSupport.lines(of: client.log, containing: "tls handshake").first ?? ""
        XCTAssertTrue(line.contains("ERROR") && line.contains("secure") && line.lowercased().contains("certificate"),
                      "a clear error line naming the certificate problem: \(line)")
        try featureAssertNothingForwarded(publicPort: publicPort, local: local)
        XCTAssertEqual(client.occurrences(of: "control channel established"), 0)
        XCTAssertEqual(server.occurrences(of: "established"), 0)
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    // MARK: Tampering

    /// A relay between client and server flips one byte at 200 KiB + 77 of ciphertext in the
    /// direction that carries the bulk: an upload (server to client) and a download (client to
    /// server). Each time that connection dies, and the receiver got a clean prefix of the data.
    private func checkTampering(_ kind: Kind) throws {
        let data = patternBytes(count: 2 << 20, seed: 0x7A3)
        let flipOffset = 200 * 1024 + 77
        let recorder = try FeatureRecorder()
        _ = keep(recorder.service)
        let source = keep(try LocalService.source(data))
        let echo = keep(try LocalService.echo())
        let control = Ports.free()
        let upPort = Ports.free()
        let downPort = Ports.free()
        let echoPort = Ports.free()
        // One relay per direction of bulk transfer, so each flips only its own.
        let upRelay = try FeatureRelay(targetPort: control, flipAt: (.fromTarget, flipOffset))
        featureCleanup { upRelay.stop() }
        let services = [FeatureService("up", port: upPort, localPort: recorder.service.port),
                        FeatureService("down", port: downPort, localPort: source.port),
                        FeatureService("echo", port: echoPort, localPort: echo.port)]
        let secure = try transport(kind)
        let (server, client) = try startSecure(secure, services: services, control: control, remotePort: upRelay.port)

        // Upload: the visitor sends 2 MiB; the client receives the tampered ciphertext.
        let visitor = try Conn.connect(port: upPort)
        let sender = Thread {
            try? visitor.send(data)
        }
        sender.start()
        XCTAssertNotNil(visitor.waitClosed(timeout: 20), "\(kind) upload: the visitor's connection must be closed")
        visitor.close()
        XCTAssertTrue(waitUntil(timeout: 10) { recorder.finished.get == 1 }, "\(kind) upload: the local connection must end")
        let got = recorder.received.get.first ?? []
        XCTAssertEqual(upRelay.flips.count, 1, "\(kind) upload: flipped \(upRelay.flips)")
        XCTAssertLessThan(got.count, data.count, "\(kind) upload: the whole transfer went through despite the flipped byte")
        XCTAssertNil(FeatureSupport.firstMismatch(got, prefixOf: data),
                     "\(kind) upload: corrupt byte delivered at offset \(FeatureSupport.firstMismatch(got, prefixOf: data) ?? -1) of \(got.count)")
        XCTAssertEqual(recorder.received.get.count, 1)

        // The tunnel itself is fine: other visitors are served.
        XCTAssertNoThrow(try echoOnce(port: echoPort, payload: Array("\(kind) after the upload".utf8)))

        // Download: the source sends 2 MiB; the server receives the tampered ciphertext. The client
        // must reach the server through a relay that flips the other direction: switch the client
        // over by restarting it against a second relay.
        let downRelay = try FeatureRelay(targetPort: control, flipAt: (.toTarget, flipOffset))
        featureCleanup { downRelay.stop() }
        client.killNow()
        let client2 = rathole("client2", config: FeatureConfig.client(remotePort: downRelay.port, services: services, tables: secure.client))
        try client2.start()
        for s in services { try waitClientReady(client2, service: s.name) }
        let down = try Conn.connect(port: downPort)
        var received: [UInt8] = []
        var closed = false
        let deadline = monoNow() + 20
        loop: while monoNow() < deadline {
            switch down.readSome(max: 1 << 20, timeout: max(0, deadline - monoNow())) {
            case .data(let d): received += d
            case .eof, .error: closed = true; break loop
            case .timeout: break loop
            }
        }
        down.close()
        XCTAssertTrue(closed, "\(kind) download: the visitor's connection must be closed")
        XCTAssertEqual(downRelay.flips.count, 1, "\(kind) download: flipped \(downRelay.flips)")
        XCTAssertLessThan(received.count, data.count, "\(kind) download: the whole transfer went through despite the flipped byte")
        XCTAssertNil(FeatureSupport.firstMismatch(received, prefixOf: data),
                     "\(kind) download: corrupt byte delivered at offset \(FeatureSupport.firstMismatch(received, prefixOf: data) ?? -1) of \(received.count)")
        XCTAssertNoThrow(try echoOnce(port: echoPort, payload: Array("\(kind) after the download".utf8)))
        XCTAssertTrue(server.isRunning && client2.isRunning)
    }

    func testTamperedCiphertextNoiseNK() throws { try checkTampering(.noiseNK) }
    func testTamperedCiphertextNoiseXX() throws { try checkTampering(.noiseXX) }
    func testTamperedCiphertextNoiseKK() throws { try checkTampering(.noiseKK) }
    func testTamperedCiphertextNoiseAESGCM() throws { try checkTampering(.noiseNKAESGCM) }
    func testTamperedCiphertextTLS() throws { try checkTampering(.tls) }
}
