import Foundation
import XCTest

@testable import TLS

/// TLS material generated once per test run by Tests/ControlPlaneTests/Fixtures/make-test-certs.sh
/// (it stays there: the end-to-end tests and perf/transports.sh use it too).
private struct TLSTestCerts: Sendable {
    static let password = "p12 sécret"
    let dir: String
    var ca: String { dir + "/ca.pem" }
    var otherCA: String { dir + "/other-ca.pem" }
    var p12: String { dir + "/server.p12" }
    var legacyP12: String { dir + "/server-legacy.p12" }

    static let shared: Result<TLSTestCerts, TLSTestSetupError> = {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("ControlPlaneTests/Fixtures/make-test-certs.sh").path
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("rathole-tls-tests-\(getpid())").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = [script, dir, password]
        do {
            try p.run()
        } catch {
            return .failure(TLSTestSetupError(message: "cannot run \(script): \(error)"))
        }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            return .failure(TLSTestSetupError(message: "\(script) exited with \(p.terminationStatus)"))
        }
        return .success(TLSTestCerts(dir: dir))
    }()
}

private struct TLSTestSetupError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

final class TLSTests: XCTestCase {
    private func certs() throws -> TLSTestCerts { try TLSTestCerts.shared.get() }

    override class func tearDown() {
        if case .success(let certs) = TLSTestCerts.shared {
            try? FileManager.default.removeItem(atPath: certs.dir)
        }
        super.tearDown()
    }

    private func serverContext() throws -> TLSServerContext {
        try TLSServerContext(pkcs12Path: certs().p12, password: TLSTestCerts.password)
    }

    private func clientContext(hostname: String = "localhost", trust: String? = nil) throws -> TLSClientContext {
        try TLSClientContext(trustedRootPath: trust ?? certs().ca, hostname: hostname)
    }

    /// Moves everything one side has to send into the other (in uneven pieces, through both input paths).
    private func move(from a: TLSSession, to b: TLSSession) throws {
        var toggle = false
        while a.hasPendingOutput {
            let chunk = a.pendingOutput
            let n = min(chunk.count, 70_001)
            if toggle {
                let space = try b.reserveInput(minimumCapacity: n)
                space.copyMemory(from: UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
                b.commitInput(n)
            } else {
                try b.feed(UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
            }
            a.consumeOutput(n)
            toggle.toggle()
        }
    }

    /// Runs both handshakes against each other; returns each side's error, if any.
    private func runHandshake(_ c: TLSSession, _ s: TLSSession) -> (client: TLSError?, server: TLSError?) {
        var ce: TLSError?
        var se: TLSError?
        for _ in 0..<10 {
            if ce == nil {
                do { _ = try c.handshake() } catch { ce = error }
            }
            try! move(from: c, to: s)
            if se == nil {
                do { _ = try s.handshake() } catch { se = error }
            }
            try! move(from: s, to: c)
            let cDone = ce != nil || c.isHandshakeComplete
            let sDone = se != nil || s.isHandshakeComplete
            if cDone && sDone && !c.hasPendingOutput && !s.hasPendingOutput { break }
        }
        return (ce, se)
    }

    private func connectedPair(hostname: String = "localhost") throws -> (TLSSession, TLSSession) {
        let c = try TLSSession(context: clientContext(hostname: hostname))
        let s = try TLSSession(context: serverContext())
        let (ce, se) = runHandshake(c, s)
        XCTAssertNil(ce)
        XCTAssertNil(se)
        XCTAssertTrue(c.isHandshakeComplete)
        XCTAssertTrue(s.isHandshakeComplete)
        return (c, s)
    }

    /// Reads everything currently decryptable.
    private func readAvailable(_ s: TLSSession, into out: inout [UInt8]) throws -> TLSReadResult {
        var buf = [UInt8](repeating: 0, count: 50_000)
        while true {
            let r = try buf.withUnsafeMutableBytes { try s.read(into: $0) }
            guard case .bytes(let n) = r else { return r }
            out.append(contentsOf: buf[0..<n])
        }
    }

    private func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
        var x = seed | 1
        return [UInt8](unsafeUninitializedCapacity: count) { buf, n in
            let words = count / 8
            let raw = UnsafeMutableRawPointer(buf.baseAddress!)
            for i in 0..<words {
                x ^= x << 13
                x ^= x >> 7
                x ^= x << 17
                raw.storeBytes(of: x, toByteOffset: i * 8, as: UInt64.self)
            }
            for i in (words * 8)..<count { buf[i] = UInt8(truncatingIfNeeded: i) }
            n = count
        }
    }

    // MARK: Handshake

    func testHandshakeSucceedsAndSendsSNI() throws {
        let (c, s) = try connectedPair()
        XCTAssertEqual(c.protocolVersion, "TLSv1.3")
        XCTAssertEqual(s.serverName, "localhost")
        XCTAssertFalse(c.cipherName.isEmpty)
    }

    func testIPLiteralHostnamesVerifyAgainstIPSANs() throws {
        for host in ["127.0.0.1", "::1", "[::1]"] {
            let c = try TLSSession(context: clientContext(hostname: host))
            let s = try TLSSession(context: serverContext())
            let (ce, se) = runHandshake(c, s)
            XCTAssertNil(ce, host)
            XCTAssertNil(se, host)
            XCTAssertNil(s.serverName, "no SNI for an IP literal (\(host))")
        }
    }

    func testHostnameMismatchIsRefused() throws {
        for host in ["example.com", "10.0.0.1"] {
            let c = try TLSSession(context: clientContext(hostname: host))
            let s = try TLSSession(context: serverContext())
            let (ce, se) = runHandshake(c, s)
            XCTAssertEqual(ce, .hostnameMismatch(expected: host))
            XCTAssertTrue(ce?.description.contains("'\(host)'") ?? false, "\(String(describing: ce))")
            XCTAssertNotNil(se)
        }
    }

    func testUntrustedCAIsRefused() throws {
        let c = try TLSSession(context: clientContext(trust: certs().otherCA))
        let s = try TLSSession(context: serverContext())
        let (ce, se) = runHandshake(c, s)
        XCTAssertEqual(ce, .untrustedCertificate(reason: "unable to get local issuer certificate"))
        XCTAssertEqual(
            ce?.description,
            "TLS: the server's certificate is not trusted: unable to get local issuer certificate")
        // The client's alert reaches the server, which reports the rejection.
        guard case .handshakeFailed(let reason)? = se else { return XCTFail("server: \(String(describing: se))") }
        XCTAssertTrue(reason.contains("unknown ca"), reason)
    }

    func testSystemRootsAloneDoNotTrustPrivateCA() throws {
        let c = try TLSSession(context: TLSClientContext(trustedRootPath: nil, hostname: "localhost"))
        let s = try TLSSession(context: serverContext())
        let (ce, _) = runHandshake(c, s)
        guard case .untrustedCertificate? = ce else { return XCTFail("\(String(describing: ce))") }
    }

    func testLegacyPKCS12Loads() throws {
        let path = try certs().legacyP12
        try XCTSkipUnless(FileManager.default.fileExists(atPath: path), "openssl cannot write -legacy archives")
        let c = try TLSSession(context: clientContext())
        let s = try TLSSession(context: TLSServerContext(pkcs12Path: path, password: TLSTestCerts.password))
        let (ce, se) = runHandshake(c, s)
        XCTAssertNil(ce)
        XCTAssertNil(se)
    }

    // MARK: Configuration errors

    func testWrongPKCS12PasswordIsNamed() throws {
        let path = try certs().p12
        XCTAssertThrowsError(try TLSServerContext(pkcs12Path: path, password: "wrong")) { error in
            XCTAssertEqual(error as? TLSError, .wrongPKCS12Password(path: path))
            XCTAssertEqual(
                "\(error)", "TLS: wrong pkcs12_password for '\(path)' (the archive's MAC does not verify)")
        }
    }

    func testMissingFilesAreNamed() throws {
        let missing = "/nonexistent/dir/identity.pfx"
        XCTAssertThrowsError(try TLSServerContext(pkcs12Path: missing, password: "x")) { error in
            XCTAssertEqual(error as? TLSError, .fileNotFound(key: "pkcs12", path: missing))
            XCTAssertEqual("\(error)", "TLS: pkcs12 file '\(missing)' does not exist")
        }
        let missingCA = "/nonexistent/rootCA.crt"
        XCTAssertThrowsError(try TLSClientContext(trustedRootPath: missingCA, hostname: "localhost")) { error in
            XCTAssertEqual(error as? TLSError, .fileNotFound(key: "trusted_root", path: missingCA))
            XCTAssertEqual("\(error)", "TLS: trusted_root file '\(missingCA)' does not exist")
        }
    }

    func testFilesOfTheWrongKindAreRefused() throws {
        let certs = try certs()
        XCTAssertThrowsError(try TLSServerContext(pkcs12Path: certs.ca, password: "x")) { error in
            guard case .invalidPKCS12(let path, _)? = error as? TLSError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, certs.ca)
        }
        XCTAssertThrowsError(try TLSClientContext(trustedRootPath: certs.p12, hostname: "localhost")) { error in
            guard case .invalidTrustedRoot(let path, _)? = error as? TLSError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, certs.p12)
        }
        XCTAssertThrowsError(try TLSClientContext(trustedRootPath: certs.ca, hostname: "")) { error in
            XCTAssertEqual(error as? TLSError, .invalidHostname(""))
        }
    }

    // MARK: Data

    func testSixteenMiBEachWayArrivesIntact() throws {
        let (c, s) = try connectedPair()
        let size = 16 << 20
        let up = pattern(size, seed: 0x1234_5678)
        let down = pattern(size, seed: 0x9abc_def0)
        var gotUp: [UInt8] = []
        var gotDown: [UInt8] = []
        gotUp.reserveCapacity(size)
        gotDown.reserveCapacity(size)
        var sent = 0
        let step = 300_007
        while gotUp.count < size || gotDown.count < size {
            if sent < size {
                let n = min(step, size - sent)
                try up.withUnsafeBytes { try c.write(UnsafeRawBufferPointer(rebasing: $0[sent..<sent + n])) }
                try down.withUnsafeBytes { try s.write(UnsafeRawBufferPointer(rebasing: $0[sent..<sent + n])) }
                sent += n
            }
            try move(from: c, to: s)
            try move(from: s, to: c)
            XCTAssertEqual(try readAvailable(s, into: &gotUp), .wantInput)
            XCTAssertEqual(try readAvailable(c, into: &gotDown), .wantInput)
            XCTAssertEqual(s.pendingInputCount, 0)
        }
        XCTAssertTrue(gotUp == up, "client -> server data differs")
        XCTAssertTrue(gotDown == down, "server -> client data differs")
    }

    func testOutputPointerSurvivesLaterWrites() throws {
        let (c, s) = try connectedPair()
        try c.write([UInt8](repeating: 1, count: 1000))
        let first = c.pendingOutput
        let copy = [UInt8](first)
        try c.write([UInt8](repeating: 2, count: 500_000))  // appended, never moves the first run
        XCTAssertEqual([UInt8](UnsafeRawBufferPointer(start: first.baseAddress, count: copy.count)), copy)
        try move(from: c, to: s)
        var got: [UInt8] = []
        XCTAssertEqual(try readAvailable(s, into: &got), .wantInput)
        XCTAssertEqual(got, [UInt8](repeating: 1, count: 1000) + [UInt8](repeating: 2, count: 500_000))
    }

    func testTamperedRecordIsDetectedAndNothingCorruptIsDelivered() throws {
        // Flip one byte in the body of the first record: no plaintext at all.
        do {
            let (c, s) = try connectedPair()
            try c.write([UInt8](repeating: 7, count: 1000))
            var wire = c.takeOutput()
            wire[wire.count / 2] ^= 0x01
            try s.feed(wire)
            var buf = [UInt8](repeating: 0, count: 4096)
            XCTAssertThrowsError(try buf.withUnsafeMutableBytes { try s.read(into: $0) }) { error in
                guard case .peerSentGarbage(let reason)? = error as? TLSError else { return XCTFail("\(error)") }
                XCTAssertTrue(reason.contains("bad record mac"), reason)
            }
            // The failure sticks, and the server has an alert to send.
            XCTAssertThrowsError(try buf.withUnsafeMutableBytes { try s.read(into: $0) })
            XCTAssertTrue(s.hasPendingOutput)
        }
        // Flip a byte in the second record: exactly the first record's plaintext, then the error.
        do {
            let (c, s) = try connectedPair()
            let data = pattern(40_000, seed: 42)
            try c.write(data)
            var wire = c.takeOutput()
            wire[16_384 + 22 + 5 + 100] ^= 0x80
            try s.feed(wire)
            var got: [UInt8] = []
            XCTAssertThrowsError(try readAvailable(s, into: &got)) { error in
                guard case .peerSentGarbage? = error as? TLSError else { return XCTFail("\(error)") }
            }
            XCTAssertEqual(got, Array(data[0..<16_384]))
        }
    }

    func testGarbageInsteadOfTLSIsReported() throws {
        let s = try TLSSession(context: serverContext())
        try s.feed(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        XCTAssertThrowsError(try s.handshake()) { error in
            guard case .peerSentGarbage? = error as? TLSError else { return XCTFail("\(error)") }
        }
        // A client talking to a plain (non-TLS) rathole server.
        let c = try TLSSession(context: clientContext())
        XCTAssertEqual(try c.handshake(), .wantInput)
        XCTAssertTrue(c.hasPendingOutput)  // the ClientHello
        try c.feed([UInt8](repeating: 0, count: 64) + [1, 2, 3])
        XCTAssertThrowsError(try c.handshake()) { error in
            guard case .peerSentGarbage(let reason)? = error as? TLSError else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("wrong version number"), reason)
        }
    }

    func testEOFDuringHandshake() throws {
        let s = try TLSSession(context: serverContext())
        XCTAssertEqual(try s.handshake(), .wantInput)
        s.feedEOF()
        XCTAssertThrowsError(try s.handshake()) { error in
            XCTAssertEqual(error as? TLSError, .closedDuringHandshake)
        }
        let c = try TLSSession(context: clientContext())
        _ = c.takeOutput()
        XCTAssertEqual(try c.handshake(), .wantInput)
        c.feedEOF()
        XCTAssertThrowsError(try c.handshake()) { error in
            XCTAssertEqual(error as? TLSError, .closedDuringHandshake)
        }
    }

    // MARK: Closing

    func testCloseNotifyIsACleanCloseAndHalfCloseWorks() throws {
        let (c, s) = try connectedPair()
        try c.write(Array("last words".utf8))
        c.shutdown()
        XCTAssertThrowsError(try c.write([1])) { error in
            guard case .misuse? = error as? TLSError else { return XCTFail("\(error)") }
        }
        try move(from: c, to: s)
        var got: [UInt8] = []
        XCTAssertEqual(try readAvailable(s, into: &got), .closed(cleanly: true))
        XCTAssertEqual(String(decoding: got, as: UTF8.self), "last words")
        XCTAssertTrue(s.receivedCloseNotify)
        // Still closed on the next read.
        XCTAssertEqual(try readAvailable(s, into: &got), .closed(cleanly: true))

        // The other direction stays open until the server closes it too.
        try s.write(Array("reply".utf8))
        s.shutdown()
        try move(from: s, to: c)
        var back: [UInt8] = []
        XCTAssertEqual(try readAvailable(c, into: &back), .closed(cleanly: true))
        XCTAssertEqual(String(decoding: back, as: UTF8.self), "reply")
    }

    func testTransportEOFWithoutCloseNotifyIsAnUncleanClose() throws {
        let (c, s) = try connectedPair()
        try c.write(Array("abc".utf8))
        try move(from: c, to: s)
        s.feedEOF()
        var got: [UInt8] = []
        XCTAssertEqual(try readAvailable(s, into: &got), .closed(cleanly: false))
        XCTAssertEqual(got, Array("abc".utf8))
        XCTAssertFalse(s.receivedCloseNotify)
    }

    func testMisuseIsReported() throws {
        let c = try TLSSession(context: clientContext())
        XCTAssertThrowsError(try c.write([1, 2, 3])) { error in
            XCTAssertEqual(error as? TLSError, .misuse("write before the handshake completed"))
        }
    }
}
