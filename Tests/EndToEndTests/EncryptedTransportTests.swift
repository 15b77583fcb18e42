// Noise (NK, XX, KK; NK with AESGCM_SHA256; every other suite) and TLS transports end to end:
// echo, 64 MiB hashed, 50 concurrent connections; refusals with nothing forwarded (wrong server
// key, untrusted certificate) or at start (patterns upstream refuses too); and a
// relay between client and server that flips one byte of ciphertext mid-transfer: that connection
// dies and what was delivered is a clean prefix of what was sent.
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class EncryptedTransportTests: EndToEndCase {
    /// A tunnel with `secure` for `services`; the client reaches the server through `remotePort`
    /// (a relay) when given.
    private func secureConfig(
        _ secure: TransportTables, services: [ServiceSpec], controlPort: UInt16 = Ports.free(),
        remotePort: UInt16? = nil
    ) -> TunnelConfig {
        var config = TunnelConfig(controlPort: controlPort, services: services)
        config.transport = secure
        if let remotePort { config.remoteAddr = "127.0.0.1:\(remotePort)" }
        return config
    }

    private func transport(_ kind: TransportKind) throws -> TransportTables { try Transports.tables(kind, dir: dir) }

    // MARK: Echo, 64 MiB, 50 concurrent connections

    private func checkTransport(_ kind: TransportKind) throws {
        let echo = keep(try LocalService.echo())
        let publicPort = Ports.free()
        let (server, client) = try start(
            secureConfig(try transport(kind), services: [ServiceSpec("secure", port: publicPort, localPort: echo.port)]))
        XCTAssertFalse(client.log.contains("WARN") || client.log.contains("ERROR"), "\(kind): the client complained:\n\(client.log)")

        for (i, size) in [1, 5000, 200_000].enumerated() {
            try echoOnce(port: publicPort, payload: patternBytes(count: size, seed: UInt64(i + 1)))
        }
        XCTAssertNoThrow(try echoTransfer(port: publicPort, data: bigPattern), "\(kind): 64 MiB")
        let failures = concurrentEchoes(port: publicPort, count: 50)
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
        let suites = [
            "ChaChaPoly_BLAKE2b", "ChaChaPoly_SHA256", "ChaChaPoly_SHA512",
            "AESGCM_BLAKE2s", "AESGCM_BLAKE2b", "AESGCM_SHA512",
        ]
        let echo = keep(try LocalService.echo())
        for (n, suite) in suites.enumerated() {
            let secure: TransportTables
            if n % 2 == 0 {
                let pattern = "Noise_NK_25519_\(suite)", s = try Programs.genkey()
                secure = TransportTables(
                    server: Transports.noise("server", pattern: pattern, privateKey: s.privateKey),
                    client: Transports.noise("client", pattern: pattern, remotePublic: s.publicKey))
            } else {
                let pattern = "Noise_XX_25519_\(suite)"
                secure = TransportTables(
                    server: Transports.noise("server", pattern: pattern),
                    client: Transports.noise("client", pattern: pattern))
            }
            let publicPort = Ports.free()
            let (server, client) = try start(
                secureConfig(secure, services: [ServiceSpec("secure", port: publicPort, localPort: echo.port)]),
                serverName: "server-\(n)", clientName: "client-\(n)")
            for (i, size) in [1, 5000, 200_000].enumerated() {
                try echoOnce(port: publicPort, payload: patternBytes(count: size, seed: UInt64(n * 10 + i + 1)))
            }
            XCTAssertNoThrow(try echoTransfer(port: publicPort, data: Array(bigPattern.prefix(8 << 20))), "\(suite): 8 MiB")
            let failures = concurrentEchoes(port: publicPort, count: 10)
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
        // Under a sanitizer VmData is its allocator's (ASan keeps 256 MiB of freed memory in its
        // quarantine) and shadow's, not ours.
        try XCTSkipIf(
            ProcessInfo.processInfo.environment["RATHOLE_SANITIZER"] != nil,
            "VmData measures the sanitizer's allocator here, not ours")
        let echo = keep(try LocalService.echo())
        let publicPort = Ports.free()
        let (server, client) = try start(
            secureConfig(try transport(.noiseNK), services: [ServiceSpec("secure", port: publicPort, localPort: echo.port)]))
        func connections(_ rounds: Int) {
            for round in 0..<rounds {
                let failures = concurrentEchoes(port: publicPort, count: 50, bytesEach: 1000, resetting: round % 2 == 1)
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
        let real = try Programs.genkey()
        let other = try Programs.genkey()
        let local = keep(try LocalService.echo())
        let publicPort = Ports.free()
        let config = secureConfig(
            TransportTables(
                server: Transports.noise("server", privateKey: real.privateKey),
                client: Transports.noise("client", remotePublic: other.publicKey)),
            services: [ServiceSpec("secure", port: publicPort, localPort: local.port)])
        let server = rathole("server", config: config.serverText)
        let client = rathole("client", config: config.clientText)
        try server.start()
        try waitServerReady(server, config)
        try client.start()
        XCTAssertTrue(client.waitForLog("noise handshake", count: 2, timeout: 10), "the client logs the failed handshake, and retries")
        let line = client.lines(containing: "noise handshake").first ?? ""
        XCTAssertTrue(line.contains("ERROR") && line.contains("secure") && line.contains("retrying"), "a clear error line: \(line)")
        try assertNothingForwarded(publicPort: publicPort, local: local)
        XCTAssertEqual(client.occurrences(of: "control channel established"), 0)
        XCTAssertEqual(server.occurrences(of: "established"), 0)
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    /// Patterns upstream refuses too: rathole exits 1 with a line naming the key and the refused part.
    func testRefusedNoisePatternsNameTheKey() throws {
        let key = try Programs.genkey()
        let cases: [(side: String, pattern: String, part: String)] = [
            ("server", "Noise_NK_25519_XChaChaPoly_BLAKE2s", "cipher 'XChaChaPoly'"),
            ("server", "Noise_NK_448_AESGCM_SHA256", "DH function '448'"),
            ("server", "Noise_NKpsk0_25519_AESGCM_SHA256", "pattern modifier 'psk0'"),
            ("client", "Noise_N_25519_AESGCM_SHA512", "one-way pattern 'N'"),
            ("client", "Noise_NK_25519_AESGCM_SHA3", "hash 'SHA3'"),
        ]
        for (n, c) in cases.enumerated() {
            var config = TunnelConfig(services: [ServiceSpec("secure", port: Ports.free(), localPort: Ports.free())])
            config.serverTables = Transports.noise("server", pattern: c.pattern, privateKey: key.privateKey)
            config.clientTables = Transports.noise("client", pattern: c.pattern, remotePublic: key.publicKey)
            let p = rathole("refused-\(n)", config: c.side == "server" ? config.serverText : config.clientText)
            try p.start()
            XCTAssertEqual(p.waitForExit(timeout: 10), .exited(1), c.pattern)
            let line = p.lines(containing: "\(c.side).transport.noise.pattern").first ?? ""
            XCTAssertTrue(line.contains(c.pattern) && line.contains(c.part), "\(c.pattern): one line naming the key: \(p.log)")
        }
    }

    /// TLS with a client that trusts another CA: the handshake fails, nothing is forwarded.
    func testTLSUntrustedCertificateRefused() throws {
        let d = try Transports.certs(in: dir)
        let local = keep(try LocalService.echo())
        let publicPort = Ports.free()
        var secure = try transport(.tls)
        secure.client = Transports.tlsClient(trustedRoot: d + "/other-ca.pem")
        let config = secureConfig(secure, services: [ServiceSpec("secure", port: publicPort, localPort: local.port)])
        let server = rathole("server", config: config.serverText)
        let client = rathole("client", config: config.clientText)
        try server.start()
        try waitServerReady(server, config)
        try client.start()
        XCTAssertTrue(client.waitForLog("tls handshake", count: 2, timeout: 10), "the client logs the failed handshake, and retries")
        let line = client.lines(containing: "tls handshake").first ?? ""
        XCTAssertTrue(
            line.contains("ERROR") && line.contains("secure") && line.lowercased().contains("certificate"),
            "a clear error line naming the certificate problem: \(line)")
        try assertNothingForwarded(publicPort: publicPort, local: local)
        XCTAssertEqual(client.occurrences(of: "control channel established"), 0)
        XCTAssertEqual(server.occurrences(of: "established"), 0)
        XCTAssertTrue(server.isRunning && client.isRunning)
    }

    // MARK: Tampering

    /// A relay between client and server flips one byte at 200 KiB + 77 of ciphertext in the
    /// direction that carries the bulk: an upload (server to client) and a download (client to
    /// server). Each time that connection dies, and the receiver got a clean prefix of the data.
    private func checkTampering(_ kind: TransportKind) throws {
        let data = patternBytes(count: 2 << 20, seed: 0x7A3)
        let flipOffset = 200 * 1024 + 77
        let recorder = try Recorder()
        keep(recorder.service)
        let source = keep(try LocalService.source(data))
        let echo = keep(try LocalService.echo())
        let control = Ports.free()
        let upPort = Ports.free()
        let downPort = Ports.free()
        let echoPort = Ports.free()
        // One relay per direction of bulk transfer, so each flips only its own.
        let upRelay = try TCPRelay(targetPort: control, flipAt: (.fromTarget, flipOffset))
        cleanup { upRelay.stop() }
        let services = [
            ServiceSpec("up", port: upPort, localPort: recorder.service.port),
            ServiceSpec("down", port: downPort, localPort: source.port),
            ServiceSpec("echo", port: echoPort, localPort: echo.port),
        ]
        let secure = try transport(kind)
        let config = secureConfig(secure, services: services, controlPort: control, remotePort: upRelay.port)
        let (server, client) = try start(config)

        // Upload: the visitor sends 2 MiB; the client receives the tampered ciphertext.
        let visitor = try Conn.connect(port: upPort)
        spawnThread { try? visitor.send(data) }
        XCTAssertNotNil(visitor.waitClosed(timeout: 20), "\(kind) upload: the visitor's connection must be closed")
        visitor.close()
        XCTAssertTrue(waitUntil(timeout: 10) { recorder.finished.get == 1 }, "\(kind) upload: the local connection must end")
        let got = recorder.received.get.first ?? []
        XCTAssertEqual(upRelay.flips.count, 1, "\(kind) upload: flipped \(upRelay.flips)")
        XCTAssertLessThan(got.count, data.count, "\(kind) upload: the whole transfer went through despite the flipped byte")
        XCTAssertNil(
            firstMismatch(got, prefixOf: data),
            "\(kind) upload: corrupt byte delivered at offset \(firstMismatch(got, prefixOf: data) ?? -1) of \(got.count)")
        XCTAssertEqual(recorder.received.get.count, 1)

        // The tunnel itself is fine: other visitors are served.
        XCTAssertNoThrow(try echoOnce(port: echoPort, payload: Array("\(kind) after the upload".utf8)))

        // Download: the source sends 2 MiB; the server receives the tampered ciphertext. The client
        // must reach the server through a relay that flips the other direction: switch the client
        // over by restarting it against a second relay.
        let downRelay = try TCPRelay(targetPort: control, flipAt: (.toTarget, flipOffset))
        cleanup { downRelay.stop() }
        let before = channels(of: server, config)
        client.killNow()
        var config2 = config
        config2.remoteAddr = "127.0.0.1:\(downRelay.port)"
        let client2 = rathole("client2", config: config2.clientText)
        try client2.start()
        try waitClientReady(client2, server: server, config2, since: before)
        let down = try Conn.connect(port: downPort)
        var received: [UInt8] = []
        var closed = false
        let deadline = monoNow() + 20
        loop: while monoNow() < deadline {
            switch down.readSome(max: 1 << 20, timeout: max(0, deadline - monoNow())) {
            case .data(let d): received += d
            case .eof, .error:
                closed = true
                break loop
            case .timeout: break loop
            }
        }
        down.close()
        XCTAssertTrue(closed, "\(kind) download: the visitor's connection must be closed")
        XCTAssertEqual(downRelay.flips.count, 1, "\(kind) download: flipped \(downRelay.flips)")
        XCTAssertLessThan(received.count, data.count, "\(kind) download: the whole transfer went through despite the flipped byte")
        XCTAssertNil(
            firstMismatch(received, prefixOf: data),
            "\(kind) download: corrupt byte delivered at offset \(firstMismatch(received, prefixOf: data) ?? -1) of \(received.count)")
        XCTAssertNoThrow(try echoOnce(port: echoPort, payload: Array("\(kind) after the download".utf8)))
        XCTAssertTrue(server.isRunning && client2.isRunning)
    }

    func testTamperedCiphertextNoiseNK() throws { try checkTampering(.noiseNK) }
    func testTamperedCiphertextNoiseXX() throws { try checkTampering(.noiseXX) }
    func testTamperedCiphertextNoiseKK() throws { try checkTampering(.noiseKK) }
    func testTamperedCiphertextNoiseAESGCM() throws { try checkTampering(.noiseNKAESGCM) }
    func testTamperedCiphertextTLS() throws { try checkTampering(.tls) }
}
