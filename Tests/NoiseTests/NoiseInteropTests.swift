// Interop with an independent implementation: python3-dissononce as a peer process
// (Fixtures/noise_peer.py) speaking rathole's framing, every pattern, and every suite.

import Foundation
import XCTest

@testable import Noise

final class NoiseInteropTests: XCTestCase {
    /// Full handshake and transport exchange with noise_peer.py, our side in `ourRole`: in a process of
    /// its own, or as the next session of `sharedPeer` (started with --sessions).
    /// `suite` ends the protocol name (ChaChaPoly_BLAKE2s, AESGCM_SHA256, ...).
    private func interop(
        pattern: String, suite: String = "ChaChaPoly_BLAKE2s", ourRole: NoiseRole, sizes: [Int],
        sharedPeer: DissononcePeer? = nil
    ) throws {
        let name = "Noise_\(pattern)_25519_\(suite)"
        let context = "\(name), we are the \(ourRole)"
        let ours = NoiseKeyPair.generate()
        let theirs = NoiseKeyPair.generate()
        let noiseProtocol = try NoiseProtocol(name: name)
        let session = try NoiseSession(
            protocol: noiseProtocol, role: ourRole,
            localStaticKey: ours, remoteStaticKey: theirs.publicKey)
        let peerRole: NoiseRole = ourRole == .initiator ? .responder : .initiator
        let arguments = DissononcePeer.sessionArguments(
            protocolName: name, role: peerRole,
            localPrivate: theirs.privateKey, remotePublic: ours.publicKey)
        let peer: DissononcePeer
        if let sharedPeer {
            peer = sharedPeer
            try peer.startSession(arguments)
        } else {
            peer = try DissononcePeer(arguments: arguments)
        }
        let conversation = PeerConversation(session: session, peer: peer)
        do {
            try conversation.handshake()
            // The peer's first message: its handshake hash, then the remote static key it knows.
            let hello = try conversation.receiveMessage()
            let hashLength = noiseProtocol.hash.hashLength
            XCTAssertEqual(Array(hello.prefix(hashLength)), session.handshakeHash, "handshake hash, \(context)")
            let patternObject = noiseProtocol.pattern
            if patternObject.needsLocalStatic(ourRole) {
                XCTAssertEqual(Array(hello.dropFirst(hashLength)), ours.publicKey, "our static key as the peer learnt it, \(context)")
            } else {
                XCTAssertEqual(hello.count, hashLength, context)
            }
            if patternObject.needsLocalStatic(peerRole) {
                XCTAssertEqual(session.remoteStaticKey, theirs.publicKey, "the peer's static key, \(context)")
            }
            for (n, size) in sizes.enumerated() {
                let body = pseudoRandomBytes(size, seed: UInt64(size * 31 + n + 7))
                try conversation.sendMessage(body)
                let reply = try conversation.receiveMessage()
                XCTAssertEqual(reply.count, size, context)
                XCTAssertTrue(reply.elementsEqual(body.reversed()), "echo of \(size) bytes, \(context)")
            }
            try conversation.sendEnd()
        } catch {
            let (status, stderr) = peer.finish()
            XCTFail("\(context): \(error); peer exit \(status): \(stderr)")
            throw error
        }
        if sharedPeer == nil {
            let (status, stderr) = peer.finish()
            XCTAssertEqual(status, 0, "\(context): noise_peer.py failed: \(stderr)")
        }
    }

    private let largeSizes = [
        0, 1, 5, 1000, NoiseConstants.maxPlaintextLength - 36,
        NoiseConstants.maxPlaintextLength, 200_000, 1_500_000,
    ]

    func testInteropNK() throws {
        try interop(pattern: "NK", ourRole: .initiator, sizes: largeSizes)
        try interop(pattern: "NK", ourRole: .responder, sizes: largeSizes)
    }

    func testInteropXX() throws {
        try interop(pattern: "XX", ourRole: .initiator, sizes: largeSizes)
        try interop(pattern: "XX", ourRole: .responder, sizes: largeSizes)
    }

    func testInteropKK() throws {
        try interop(pattern: "KK", ourRole: .initiator, sizes: largeSizes)
        try interop(pattern: "KK", ourRole: .responder, sizes: largeSizes)
    }

    /// Every other pattern of the table, both roles, against dissononce's own pattern definitions
    /// (one peer process, one session after another).
    func testInteropAllOtherPatterns() throws {
        let peer = try DissononcePeer(arguments: ["--sessions"])
        var sessions = 0
        for pattern in NoiseHandshakePattern.all where !["NK", "XX", "KK"].contains(pattern.name) {
            try interop(pattern: pattern.name, ourRole: .initiator, sizes: [3, 70_000], sharedPeer: peer)
            try interop(pattern: pattern.name, ourRole: .responder, sizes: [3, 70_000], sharedPeer: peer)
            sessions += 2
        }
        XCTAssertEqual(sessions, 2 * (NoiseHandshakePattern.all.count - 3))
        let (status, stderr) = peer.finish()
        XCTAssertEqual(status, 0, "noise_peer.py failed: \(stderr)")
    }

    /// NK (rathole's default) and XX (static keys sent, 64-byte hashes carried through them) with
    /// each of the 7 suites other than ChaChaPoly_BLAKE2s, both roles (one peer process).
    func testInteropAllOtherSuites() throws {
        let peer = try DissononcePeer(arguments: ["--sessions"])
        var sessions = 0
        for suite in allSuites where suite != "ChaChaPoly_BLAKE2s" {
            for pattern in ["NK", "XX"] {
                try interop(pattern: pattern, suite: suite, ourRole: .initiator, sizes: [0, 3, 65519, 200_000], sharedPeer: peer)
                try interop(pattern: pattern, suite: suite, ourRole: .responder, sizes: [0, 3, 65519, 200_000], sharedPeer: peer)
                sessions += 2
            }
        }
        XCTAssertEqual(sessions, 7 * 2 * 2)
        let (status, stderr) = peer.finish()
        XCTAssertEqual(status, 0, "noise_peer.py failed: \(stderr)")
    }
}
