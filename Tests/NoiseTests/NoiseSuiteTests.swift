// The primitives of each suite against values from an independent source (Python's hashlib, hmac and
// cryptography packages): HASH, HMAC-HASH with the hash's own block length, HKDF's chaining, and
// the byte order of each cipher's nonce.

import XCTest

@testable import Noise

final class NoiseSuiteTests: XCTestCase {
    func testBlake2sAndHmacPrimitives() throws {
        // BLAKE2s-256 of "abc" (RFC 7693, appendix B).
        XCTAssertEqual(
            hexString(NoiseHash.blake2s.hash(Array("abc".utf8))),
            "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
        // Streaming two parts equals hashing the concatenation.
        XCTAssertEqual(NoiseHash.blake2s.hash(Array("ab".utf8), Array("c".utf8)), NoiseHash.blake2s.hash(Array("abc".utf8)))
        // HMAC-BLAKE2s (block length 64), value from Python's hmac + hashlib.blake2s.
        XCTAssertEqual(
            hexString(NoiseHash.blake2s.hmac(key: (0..<32).map { UInt8($0) }, data: Array("abc".utf8))),
            "82623be5bc0a391b24dce53e67d028eff92d586de0485ac37822e597d049c74f")
        // HKDF outputs chain as the spec says: output2 = HMAC(temp, output1 || 0x02).
        let ck = pseudoRandomBytes(32, seed: 1)
        let ikm = pseudoRandomBytes(32, seed: 2)
        let out = NoiseHash.blake2s.hkdf(chainingKey: ck, inputKeyMaterial: ikm, outputs: 3)
        let temp = NoiseHash.blake2s.hmac(key: ck, data: ikm)
        XCTAssertEqual(out[0], NoiseHash.blake2s.hmac(key: temp, data: [1]))
        XCTAssertEqual(out[1], NoiseHash.blake2s.hmac(key: temp, data: out[0] + [2]))
        XCTAssertEqual(out[2], NoiseHash.blake2s.hmac(key: temp, data: out[1] + [3]))
    }

    /// HASH("abc") and HMAC-HASH with a 100-byte key: longer than BLAKE2s's and SHA256's 64-byte block
    /// (so hashed first) and shorter than BLAKE2b's and SHA512's 128 (so only padded). A wrong block
    /// length gives another value.
    func testEachHash() throws {
        let expected: [(NoiseHash, Int, String, String)] = [
            (
                .blake2s, 32, "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982",
                "c1b751501db12b753069a918627b623179be55c8cc7ca5c4e14bdf32274ac656"
            ),
            (
                .blake2b, 64,
                "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923",
                "97a3698e5b6dc30cf4a3e51dd3542945d671d2eb3c021027fcb7b3c4b60053c07f88d3d7091685246cfbc525bb50ad126c04d67400a76f22af47563144c1a65b"
            ),
            (
                .sha256, 32, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                "26046d5e7422f9d5acc772ba5b517d0a88b955ad808252129bca3889b5155029"
            ),
            (
                .sha512, 64,
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
                "c277ac32c51079656a010db2495a176b975ebcf70cf3a83f36e7386f70bd6685623f5d96665dfe1dbe09e6348af8baeb01a82c5a50da9b87e209a359534bd90d"
            ),
        ]
        let key = (0..<100).map { UInt8($0) }
        for (hash, length, digest, mac) in expected {
            XCTAssertEqual(hash.hashLength, length, "\(hash)")
            XCTAssertEqual(hexString(hash.hash(Array("abc".utf8))), digest, "\(hash)")
            XCTAssertEqual(hexString(hash.hmac(key: key, data: Array("abc".utf8))), mac, "HMAC-\(hash)")
            let outputs = hash.hkdf(chainingKey: pseudoRandomBytes(length, seed: 3), inputKeyMaterial: [], outputs: 2)
            XCTAssertEqual(outputs.map(\.count), [length, length], "HKDF-\(hash)")
        }
    }

    /// ENCRYPT(k, n, "ad", "Noise") with n = 0x0102030405060708: AESGCM puts n big-endian after 32 zero
    /// bits, ChaChaPoly little-endian (values from Python's cryptography AESGCM and ChaCha20Poly1305).
    func testNonceByteOrderOfEachCipher() throws {
        let key = (0..<32).map { UInt8($0) }
        let expected: [(NoiseCipher, String)] = [
            (.aesGCM, "4a3e0c7db8b8650a1654447605bdce1ece223ca908"),
            (.chaChaPoly, "be26c497ce59042eb08d9766c5f32b2e59fde91c13"),
        ]
        for (cipher, sealed) in expected {
            let sender = NoiseCipherState(cipher: cipher, key: key)
            sender.setNonce(0x0102_0304_0506_0708)
            XCTAssertEqual(hexString(try sender.encryptWithAd(Array("ad".utf8), Array("Noise".utf8))), sealed, "\(cipher)")
            let receiver = NoiseCipherState(cipher: cipher, key: key)
            receiver.setNonce(0x0102_0304_0506_0708)
            XCTAssertEqual(try receiver.decryptWithAd(Array("ad".utf8), hex(sealed)), Array("Noise".utf8), "\(cipher)")
            XCTAssertEqual(receiver.nonce, 0x0102_0304_0506_0709)
        }
    }

    /// Sessions of every suite, a few patterns: frames both ways (empty, one byte, a full frame, a
    /// message cut into frames), and a flipped byte refused with nothing of its plaintext left behind.
    func testSessionsOfEverySuite() throws {
        for suite in allSuites {
            for pattern in ["NN", "NK", "XX", "KK", "IK", "X1K1"] {
                let name = "Noise_\(pattern)_25519_\(suite)"
                let (i, r) = try connectedPair(name, initiatorStatic: .generate(), responderStatic: .generate())
                XCTAssertEqual(i.handshakeHash, r.handshakeHash, name)
                XCTAssertEqual(i.handshakeHash?.count, try NoiseProtocol(name: name).hash.hashLength, name)
                for size in [0, 1, NoiseConstants.maxPlaintextLength, 200_000] {
                    let a = pseudoRandomBytes(size, seed: UInt64(size + 1))
                    XCTAssertEqual(try r.open(i.seal(a)), a, "\(name), \(size) bytes")
                    XCTAssertEqual(try i.open(r.seal(a)), a, "\(name), \(size) bytes")
                }
            }
            // Tampering: the bad frame's plaintext must not be left in the output buffer.
            let (i, r) = try connectedPair("Noise_NK_25519_\(suite)", responderStatic: .generate())
            let secret = [UInt8](repeating: 0x5A, count: 1000)
            var frame = try i.seal(secret)
            frame[500] ^= 0x01
            var out = [UInt8](repeating: 0, count: 2000)
            XCTAssertThrowsError(
                try frame.withUnsafeBytes { input in
                    try out.withUnsafeMutableBytes { try r.open(input, into: $0) }
                }, suite
            ) { XCTAssertEqual($0 as? NoiseError, .decryptFailed, suite) }
            XCTAssertEqual(out.filter { $0 != 0 }.count, 0, "\(suite): bytes of the refused frame's plaintext were left behind")
        }
    }

    func testRekeyOfEachCipher() throws {
        for cipher in NoiseCipher.allCases {
            let key = pseudoRandomBytes(32, seed: 6)
            let a = NoiseCipherState(cipher: cipher, key: key)
            let b = NoiseCipherState(cipher: cipher, key: key)
            a.rekey()
            b.rekey()
            let sealed = try a.encryptWithAd([], [1, 2, 3])
            XCTAssertEqual(try b.decryptWithAd([], sealed), [1, 2, 3], "\(cipher)")
            XCTAssertThrowsError(try NoiseCipherState(cipher: cipher, key: key).decryptWithAd([], sealed), "\(cipher)")
        }
    }
}
