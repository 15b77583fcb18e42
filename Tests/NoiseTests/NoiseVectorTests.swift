// Test vectors in the cacophony format, each of the 8 Curve25519 suites, checked both ways: our
// implementation reproduces the published ChaChaPoly/BLAKE2s vectors (../shared/vectors) and the
// vectors python3-dissononce made for the 7 other suites (Fixtures/noise-vectors-25519-other-suites.json,
// made by Fixtures/noise_vectors.py generate); and dissononce reproduces, byte for byte, vectors that
// our implementation makes from fresh random keys and payloads for every suite and pattern.

import Foundation
import XCTest

@testable import Noise

final class NoiseVectorTests: XCTestCase {
    private func loadVectors(_ url: URL) throws -> [[String: Any]] {
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        return try XCTUnwrap(root["vectors"] as? [[String: Any]])
    }

    /// Runs our HandshakeState and transport CipherStates on a vector's inputs (keys, prologues,
    /// payloads): each message as written (and read back by the other side, which must get the
    /// payload), and the handshake hash both sides end with.
    private func runOurs(_ vector: [String: Any]) throws -> (ciphertexts: [[UInt8]], handshakeHash: [UInt8]) {
        let name = try XCTUnwrap(vector["protocol_name"] as? String)
        func key(_ field: String) -> [UInt8]? { (vector[field] as? String).map(hex) }
        let proto = try NoiseProtocol(name: name)
        let initiator = try NoiseHandshakeState(
            protocol: proto, role: .initiator, prologue: key("init_prologue") ?? [],
            localStatic: try key("init_static").map { try NoiseKeyPair(privateKey: $0) },
            remoteStatic: key("init_remote_static"),
            fixedEphemeral: try key("init_ephemeral").map { try NoiseKeyPair(privateKey: $0) })
        let responder = try NoiseHandshakeState(
            protocol: proto, role: .responder, prologue: key("resp_prologue") ?? [],
            localStatic: try key("resp_static").map { try NoiseKeyPair(privateKey: $0) },
            remoteStatic: key("resp_remote_static"),
            fixedEphemeral: try key("resp_ephemeral").map { try NoiseKeyPair(privateKey: $0) })
        let messages = try XCTUnwrap(vector["messages"] as? [[String: String]])
        let handshakeCount = proto.pattern.messages.count
        XCTAssertGreaterThan(messages.count, handshakeCount, name)
        var ciphertexts: [[UInt8]] = []
        var ciphers:
            (
                i: (send: NoiseCipherState, receive: NoiseCipherState),
                r: (send: NoiseCipherState, receive: NoiseCipherState)
            )?
        for (index, message) in messages.enumerated() {
            let payload = hex(try XCTUnwrap(message["payload"]))
            let initiatorSends = index % 2 == 0
            if index < handshakeCount {
                let (writer, reader) = initiatorSends ? (initiator, responder) : (responder, initiator)
                XCTAssertTrue(writer.isMyTurnToWrite, "\(name) message \(index)")
                let written = try writer.writeMessage(payload: payload)
                XCTAssertEqual(try reader.readMessage(written), payload, "\(name) handshake payload \(index)")
                ciphertexts.append(written)
                continue
            }
            if ciphers == nil {
                XCTAssertTrue(initiator.isComplete && responder.isComplete, name)
                XCTAssertEqual(initiator.handshakeHash, responder.handshakeHash, "\(name) handshake hash")
                ciphers = (try initiator.transportCiphers(), try responder.transportCiphers())
            }
            let (sender, receiver) =
                initiatorSends
                ? (ciphers!.i.send, ciphers!.r.receive)
                : (ciphers!.r.send, ciphers!.i.receive)
            let sealed = try sender.encryptWithAd([], payload)
            XCTAssertEqual(try receiver.decryptWithAd([], sealed), payload, "\(name) transport payload \(index)")
            ciphertexts.append(sealed)
        }
        return (ciphertexts, initiator.handshakeHash)
    }

    /// Every ciphertext and the handshake hash of each vector come out of our implementation as the
    /// vector has them. Returns the protocol names checked.
    private func checkReproduced(_ vectors: [[String: Any]]) throws -> Set<String> {
        var checked: Set<String> = []
        for vector in vectors {
            let name = try XCTUnwrap(vector["protocol_name"] as? String)
            let (ours, handshakeHash) = try runOurs(vector)
            let messages = try XCTUnwrap(vector["messages"] as? [[String: String]])
            for (index, (message, ciphertext)) in zip(messages, ours).enumerated() {
                XCTAssertEqual(hexString(ciphertext), message["ciphertext"], "\(name) message \(index)")
            }
            if let h = vector["handshake_hash"] as? String {
                XCTAssertEqual(hexString(handshakeHash), h, "\(name) handshake hash")
            }
            checked.insert(name)
        }
        return checked
    }

    func testCacophonyVectors() throws {
        let vectors = try loadVectors(sharedFile("vectors/noise-cacophony-25519-chachapoly-blake2s.json"))
        let tested = try checkReproduced(vectors)
        let patterns = Set(try tested.map { try NoiseProtocol(name: $0).pattern.name })
        XCTAssertTrue(patterns.isSuperset(of: ["NN", "NK", "XX", "KK"]), "vectors tested: \(tested.sorted())")
    }

    func testDissononceVectorsForTheOtherSuites() throws {
        let url = testsDirectory.appendingPathComponent("Fixtures/noise-vectors-25519-other-suites.json")
        let tested = try checkReproduced(try loadVectors(url))
        var expected: Set<String> = []
        for suite in allSuites where suite != "ChaChaPoly_BLAKE2s" {
            for pattern in ["NN", "NK", "XX", "KK"] { expected.insert("Noise_\(pattern)_25519_\(suite)") }
        }
        XCTAssertEqual(tested, expected)
    }

    /// A vector from our implementation: fresh keys, prologue and payloads; the keys each side
    /// needs for the pattern; the handshake messages then three transport messages.
    private func ourVector(_ name: String) throws -> [String: Any] {
        let pattern = try NoiseProtocol(name: name).pattern
        let prologue = hexString(pseudoRandomBytes(Int.random(in: 0...20), seed: .random(in: 1 ... .max)))
        var vector: [String: Any] = [
            "protocol_name": name, "init_prologue": prologue, "resp_prologue": prologue,
            "init_ephemeral": hexString(NoiseKeyPair.generate().privateKey),
            "resp_ephemeral": hexString(NoiseKeyPair.generate().privateKey),
        ]
        let initiatorStatic = NoiseKeyPair.generate(), responderStatic = NoiseKeyPair.generate()
        if pattern.needsLocalStatic(.initiator) { vector["init_static"] = hexString(initiatorStatic.privateKey) }
        if pattern.needsLocalStatic(.responder) { vector["resp_static"] = hexString(responderStatic.privateKey) }
        if pattern.needsRemoteStaticUpFront(.initiator) { vector["init_remote_static"] = hexString(responderStatic.publicKey) }
        if pattern.needsRemoteStaticUpFront(.responder) { vector["resp_remote_static"] = hexString(initiatorStatic.publicKey) }
        var messages: [[String: String]] = (0..<(pattern.messages.count + 3)).map { _ in
            ["payload": hexString(pseudoRandomBytes(Int.random(in: 0...40), seed: .random(in: 1 ... .max)))]
        }
        vector["messages"] = messages
        let (ciphertexts, handshakeHash) = try runOurs(vector)
        for index in messages.indices { messages[index]["ciphertext"] = hexString(ciphertexts[index]) }
        vector["messages"] = messages
        vector["handshake_hash"] = hexString(handshakeHash)
        return vector
    }

    /// dissononce, given our vectors for every suite and every pattern, writes the same bytes and
    /// reads ours back to their payloads.
    func testDissononceReproducesOurVectors() throws {
        var vectors: [[String: Any]] = []
        for suite in allSuites {
            for pattern in NoiseHandshakePattern.all {
                vectors.append(try ourVector("Noise_\(pattern.name)_25519_\(suite)"))
            }
        }
        XCTAssertEqual(vectors.count, 8 * NoiseHandshakePattern.all.count)
        let json = try JSONSerialization.data(withJSONObject: ["vectors": vectors])
        let (status, output, errors) = try dissononceVerify(json)
        XCTAssertEqual(status, 0, "noise_vectors.py verify: \(errors)")
        XCTAssertEqual(output.split(separator: "\n").last.map(String.init), "\(vectors.count)")

        // The checker notices a wrong byte: the last transport message of one vector, altered.
        var altered = vectors[0]
        var messages = try XCTUnwrap(altered["messages"] as? [[String: String]])
        var last = hex(try XCTUnwrap(messages[messages.count - 1]["ciphertext"]))
        last[0] ^= 1
        messages[messages.count - 1]["ciphertext"] = hexString(last)
        altered["messages"] = messages
        let refused = try dissononceVerify(try JSONSerialization.data(withJSONObject: ["vectors": [altered]]))
        XCTAssertEqual(refused.status, 3, "an altered vector must be refused: \(refused.errors)")
    }
}
