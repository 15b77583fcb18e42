// Helpers shared by the Noise tests: hex, deterministic bytes, the fixture and ../shared paths, an
// in-memory handshake, and python3-dissononce as a peer process (Fixtures/noise_peer.py) or as a
// vector checker (Fixtures/noise_vectors.py).

import Foundation
import XCTest

@testable import Noise

func hex(_ text: String) -> [UInt8] {
    var out: [UInt8] = []
    var iterator = text.utf8.makeIterator()
    func nibble(_ c: UInt8) -> UInt8 {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: fatalError("bad hex digit")
        }
    }
    while let hi = iterator.next(), let lo = iterator.next() {
        out.append(nibble(hi) << 4 | nibble(lo))
    }
    return out
}

func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    return (0..<count).map { _ in
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return UInt8(truncatingIfNeeded: state)
    }
}

/// The 8 Curve25519 suites upstream accepts, as they end a protocol name ("ChaChaPoly_BLAKE2s", ...).
let allSuites: [String] = NoiseCipher.allCases.flatMap { c in NoiseHash.allCases.map { "\(c.rawValue)_\($0.rawValue)" } }

let testsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
let repositoryRoot = testsDirectory.deletingLastPathComponent().deletingLastPathComponent()
let sharedDirectory = repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared")

/// A file in ../shared (the vectors, the recorded sessions). CI always has it: a missing file is a
/// failure, as in the transcript tests, never a skip that would hide it.
func sharedFile(_ relative: String) throws -> URL {
    let url = sharedDirectory.appendingPathComponent(relative)
    guard FileManager.default.fileExists(atPath: url.path) else {
        throw MissingSharedFile(path: url.path)
    }
    return url
}

struct MissingSharedFile: Error, CustomStringConvertible {
    let path: String
    var description: String { "shared file \(path) is missing (shared/ must sit beside the repository, as in CI)" }
}

/// Runs a full handshake between two in-memory sessions.
func connectedPair(
    _ name: String = NoiseProtocol.defaultName, initiatorStatic: NoiseKeyPair? = nil,
    responderStatic: NoiseKeyPair? = nil
) throws -> (initiator: NoiseSession, responder: NoiseSession) {
    let i = try NoiseSession(
        protocolName: name, role: .initiator, localStaticKey: initiatorStatic,
        remoteStaticKey: responderStatic?.publicKey)
    let r = try NoiseSession(
        protocolName: name, role: .responder, localStaticKey: responderStatic,
        remoteStaticKey: initiatorStatic?.publicKey)
    while !(i.isHandshakeComplete && r.isHandshakeComplete) {
        if i.isMyTurnToWrite {
            try r.readHandshakeMessage(i.nextHandshakeMessage())
        } else if r.isMyTurnToWrite {
            try i.readHandshakeMessage(r.nextHandshakeMessage())
        } else {
            XCTFail("handshake stuck")
            break
        }
    }
    return (i, r)
}

// MARK: - A peer process running python3-dissononce

final class DissononcePeer {
    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let errors = Pipe()

    static func pythonExecutable() throws -> String {
        // Debian's python3-dissononce lives in the system interpreter; a python3 earlier on PATH (pyenv,
        // venv) may not see it.
        let candidates =
            ["/usr/bin/python3"]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "")
            .split(separator: ":").map { "\($0)/python3" }
        for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate) {
            let check = Process()
            check.executableURL = URL(fileURLWithPath: candidate)
            check.arguments = ["-c", "import dissononce"]
            check.standardOutput = FileHandle.nullDevice
            check.standardError = FileHandle.nullDevice
            try check.run()
            check.waitUntilExit()
            if check.terminationStatus == 0 { return candidate }
        }
        throw NSError(
            domain: "NoiseTests", code: 1,
            userInfo: [
                NSLocalizedDescriptionKey:
                    "python3-dissononce is not installed: no python3 can `import dissononce` (apt-get install python3-dissononce)"
            ])
    }

    /// noise_peer.py's arguments for one session (or ["--sessions"] for several, see `startSession`).
    static func sessionArguments(protocolName: String, role: NoiseRole, localPrivate: [UInt8]?, remotePublic: [UInt8]?) -> [String] {
        [
            protocolName, role == .initiator ? "initiator" : "responder",
            localPrivate.map(hexString) ?? "-", remotePublic.map(hexString) ?? "-",
        ]
    }

    init(arguments: [String]) throws {
        signal(SIGPIPE, SIG_IGN)
        process.executableURL = URL(fileURLWithPath: try Self.pythonExecutable())
        process.arguments = [testsDirectory.appendingPathComponent("Fixtures/noise_peer.py").path] + arguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Never hang the suite on a stuck peer.
        let watched = process
        DispatchQueue.global().asyncAfter(deadline: .now() + 120) {
            if watched.isRunning { watched.terminate() }
        }
    }

    /// In --sessions mode: announces the next session.
    func startSession(_ arguments: [String]) throws {
        try send(Array((arguments.joined(separator: " ") + "\n").utf8))
    }

    func send(_ bytes: [UInt8]) throws {
        try input.fileHandleForWriting.write(contentsOf: Data(bytes))
    }

    /// Whatever the peer has written next (at least one byte), or [] at end of stream.
    func receiveChunk() -> [UInt8] {
        [UInt8](output.fileHandleForReading.availableData)
    }

    func finish() -> (status: Int32, stderr: String) {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (process.terminationStatus, text)
    }
}

/// Our side of the application exchange with noise_peer.py.
final class PeerConversation {
    let session: NoiseSession
    let peer: DissononcePeer
    private var plaintext: [UInt8] = []

    init(session: NoiseSession, peer: DissononcePeer) {
        self.session = session
        self.peer = peer
    }

    func handshake() throws {
        while !session.isHandshakeComplete {
            if session.isMyTurnToWrite {
                try peer.send(session.nextHandshakeMessage())
            } else {
                let chunk = peer.receiveChunk()
                guard !chunk.isEmpty else { throw NoiseError.malformedMessage("peer closed during the handshake") }
                try session.readHandshakeMessage(chunk)
            }
        }
        if session.bufferedInputCount > 0 { plaintext += try session.open([]) }
    }

    func receive(_ count: Int) throws -> [UInt8] {
        while plaintext.count < count {
            let chunk = peer.receiveChunk()
            guard !chunk.isEmpty else { throw NoiseError.malformedMessage("peer closed the stream") }
            plaintext += try session.open(chunk)
        }
        let out = Array(plaintext[..<count])
        plaintext.removeFirst(count)
        return out
    }

    /// One application message: u32 LE length, body, BLAKE2s(body); returns the body after checking it.
    func receiveMessage() throws -> [UInt8] {
        let header = try receive(4)
        let length = Int(header[0]) | Int(header[1]) << 8 | Int(header[2]) << 16 | Int(header[3]) << 24
        let body = try receive(length)
        let digest = try receive(32)
        XCTAssertEqual(digest, NoiseHash.blake2s.hash(body), "digest of a \(length)-byte message from the peer")
        return body
    }

    func sendMessage(_ body: [UInt8]) throws {
        let n = UInt32(body.count)
        var message = [
            UInt8(truncatingIfNeeded: n), UInt8(truncatingIfNeeded: n >> 8),
            UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 24),
        ]
        message += body
        message += NoiseHash.blake2s.hash(body)
        try peer.send(session.seal(message))
    }

    func sendEnd() throws {
        try peer.send(session.seal([0xFF, 0xFF, 0xFF, 0xFF]))
    }
}

/// Runs Fixtures/noise_vectors.py verify with `json` on its stdin: (exit status, stdout, stderr).
func dissononceVerify(_ json: Data) throws -> (status: Int32, output: String, errors: String) {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent(
        "noise-vectors-\(getpid())-\(UInt32.random(in: 0 ... .max)).json")
    try json.write(to: file)
    defer { try? FileManager.default.removeItem(at: file) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try DissononcePeer.pythonExecutable())
    process.arguments = [testsDirectory.appendingPathComponent("Fixtures/noise_vectors.py").path, "verify"]
    let output = Pipe(), errors = Pipe()
    process.standardInput = try FileHandle(forReadingFrom: file)
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    // The script prints one number, and at most one line of error: neither pipe can fill up.
    let out = output.fileHandleForReading.readDataToEndOfFile()
    let err = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}
