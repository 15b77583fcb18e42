import ControlPlane
import Noise
import TLS

// The Noise transport as rathole frames it (u16 LE length + message), read by NoiseSession the way
// NoiseSecureSession drives it.
//
// noise-handshake: our side (responder: the server; or initiator: the client) in any supported
// pattern reads a stranger's bytes. Input: pattern byte, role byte, split seed, the bytes.
// Properties: every split ends the same (handshake state, messages processed, the error); a failed
// session stays failed with the same error; transport data is refused before the handshake
// completes; heap grows with the bytes, never with a length field.
//
// noise-transport: a real handshake between two in-memory sessions (fixed keys), then messages
// sealed by one side and opened by the other in any split and into any buffer size; input bytes
// may also edit one byte of the stream. Input: pattern byte, split seed, edit (position, xor), then
// message lengths. Properties: unedited, the handshake completes and the plaintext comes out
// exactly; edited, what comes out is a prefix of the plaintext and the session either fails with
// a NoiseError or waits for more bytes, never yielding different bytes; sealedSize is what seal
// writes; heap stays within the bytes in flight.

enum NoiseFixtures {
    /// The server's key from ../shared/wire/06-noise-nk.keys.txt, so that the recorded client's
    /// first handshake message (a seed) is one our responder accepts.
    static let server = try! NoiseKeyPair(base64PrivateKey: "9loWbcY+DQrEXYfQcYwVqKdvttfzU5vz+1Jku0vs8nI=")
    static let client = try! NoiseKeyPair(privateKey: [UInt8](repeating: 0x11, count: 32))
    static let serverEphemeral = try! NoiseKeyPair(privateKey: [UInt8](repeating: 0x22, count: 32))
    static let clientEphemeral = try! NoiseKeyPair(privateKey: [UInt8](repeating: 0x33, count: 32))
    static let patterns = NoiseHandshakePattern.all

    static func session(_ pattern: NoiseHandshakePattern, _ role: NoiseRole) -> NoiseSession {
        let local = role == .responder ? server : client
        let remote = role == .responder ? client : server
        let proto = try! NoiseProtocol(name: "Noise_\(pattern.name)_25519_ChaChaPoly_BLAKE2s")
        return try! NoiseSession(
            protocol: proto, role: role, localStaticKey: local,
            remoteStaticKey: pattern.needsRemoteStaticUpFront(role) ? remote.publicKey : nil,
            fixedEphemeral: role == .responder ? serverEphemeral : clientEphemeral)
    }
}

let noiseHandshakeTarget = FuzzTarget(
    name: "noise-handshake",
    summary: "NoiseSession handshake (every pattern, both roles) reading a stranger's bytes in any split"
) { data in
    var input = FuzzInput(data)
    let pattern = NoiseFixtures.patterns[Int(input.byte()) % NoiseFixtures.patterns.count]
    let role: NoiseRole = input.byte() & 1 == 0 ? .responder : .initiator
    var splitter = Splitter(seed: input.byte())
    let stream = input.rest()
    let whole = boundedHeap(input: stream.count, fixed: 256 << 10, "Noise handshake") {
        NoiseChecks.handshake(pattern, role, [stream[...]])
    }
    let split = NoiseChecks.handshake(pattern, role, splitter.chunks(stream))
    require(whole == split, "\(pattern.name) \(role): whole \(whole), split \(split)")
}

struct NoiseHandshakeOutcome: Equatable {
    var complete = false
    var processed = 0
    var error: NoiseError?
    var plaintext: [UInt8] = []
}

enum NoiseChecks {
    static func open(_ session: NoiseSession, _ input: [UInt8], into out: inout [UInt8]) throws(NoiseError) -> (consumed: Int, written: Int)
    {
        try input.withUnsafeBytes { raw in
            out.withUnsafeMutableBytes { o in Result { () throws(NoiseError) in try session.open(raw, into: o) } }
        }.get()
    }

    static func handshake(_ pattern: NoiseHandshakePattern, _ role: NoiseRole, _ chunks: [ArraySlice<UInt8>]) -> NoiseHandshakeOutcome {
        let session = NoiseFixtures.session(pattern, role)
        var out = NoiseHandshakeOutcome()
        var out64 = [UInt8](repeating: 0, count: NoiseConstants.maxPlaintextLength)
        func fail(_ e: NoiseError) {
            requireOneLine(e.description, "NoiseError")
            out.error = e
            // Dead for good: the same error from then on.
            let again = Result { () throws(NoiseError) in try session.readHandshakeMessage([0, 0]) }
            let sealed = Result { () throws(NoiseError) in try session.seal([1]) }
            if !session.isHandshakeComplete {
                require(again == .failure(e), "after \(e), readHandshakeMessage gives \(again)")
            }
            require(sealed == .failure(e), "after \(e), seal gives \(sealed)")
        }
        do throws(NoiseError) {
            for chunk in chunks {
                if session.isHandshakeComplete {
                    let r = try NoiseChecks.open(session, Array(chunk), into: &out64)
                    out.plaintext += out64[..<r.written]
                    continue
                }
                // As NoiseSecureSession.advanceHandshake: write when it is our turn, read until a
                // read processes nothing (the chunk goes in once; what it leaves is buffered).
                var fresh = Array(chunk)
                while !session.isHandshakeComplete {
                    if session.isMyTurnToWrite {
                        _ = try session.nextHandshakeMessage()
                        continue
                    }
                    let before = session.bufferedInputCount
                    let n = try session.readHandshakeMessage(fresh)
                    require(session.bufferedInputCount <= before + fresh.count, "buffered more than it was given")
                    fresh = []
                    out.processed += n
                    if n == 0 { break }
                }
                if !session.isHandshakeComplete {
                    let early = Result { () throws(NoiseError) in try session.open([]) }
                    require(early == .failure(.handshakeNotComplete), "open before the handshake completed: \(early)")
                } else if session.bufferedInputCount > 0 {
                    // Bytes that followed the last handshake message come out of the next open.
                    let r = try NoiseChecks.open(session, [], into: &out64)
                    out.plaintext += out64[..<r.written]
                }
            }
        } catch {
            fail(error)
        }
        out.complete = session.isHandshakeComplete
        return out
    }
}

let noiseTransportTarget = FuzzTarget(
    name: "noise-transport",
    summary: "NoiseSession frames between two real sessions: any split and buffer size, one edited byte"
) { data in
    var input = FuzzInput(data)
    let pattern = NoiseFixtures.patterns[Int(input.byte()) % NoiseFixtures.patterns.count]
    var splitter = Splitter(seed: input.byte())
    let outSizes = [NoiseConstants.maxPlaintextLength, 1, 17, 1000, 65_536, 200_000]
    let outSize = outSizes[Int(input.byte()) % outSizes.count]
    let editOn = input.byte()
    let editAt = Int(input.u32())
    let editXor = input.byte() | 1
    let toResponder = input.byte() & 1 == 0
    var lengths: [Int] = []
    while !input.isEmpty && lengths.count < 16 {
        let b = input.byte()
        lengths.append(b & 0x80 != 0 ? Int(input.u16()) % (b & 0x40 != 0 ? 140_000 : 2000) : Int(b))
    }

    let initiator = NoiseFixtures.session(pattern, .initiator)
    let responder = NoiseFixtures.session(pattern, .responder)
    // editOn: 0-63 no edit; 64-127 an edit in the handshake; 128-255 an edit in the transport stream.
    var handshakeEdit: (Int, UInt8)? = (64..<128).contains(editOn) ? (editAt, editXor) : nil
    var failure: NoiseError?
    do throws(NoiseError) {
        var turn = 0
        while !(initiator.isHandshakeComplete && responder.isHandshakeComplete) {
            let (writer, reader) = initiator.isMyTurnToWrite ? (initiator, responder) : (responder, initiator)
            require(writer.isMyTurnToWrite && !reader.isMyTurnToWrite, "\(pattern.name): no one's turn at message \(turn)")
            var message = try writer.nextHandshakeMessage()
            if let (at, x) = handshakeEdit, at % 4096 < message.count + 1 {
                if at % 4096 < message.count { message[at % 4096] ^= x }
                handshakeEdit = nil
            } else if let (at, x) = handshakeEdit {
                handshakeEdit = (at - message.count, x)
            }
            var processed = 0
            for chunk in splitter.chunks(message) { processed += try reader.readHandshakeMessage(Array(chunk)) }
            if processed == 0 {
                // An edited length field: the reader waits for bytes that will never come.
                require((64..<128).contains(editOn) && handshakeEdit == nil, "\(pattern.name): message \(turn) was not processed")
                return
            }
            turn += 1
            require(turn <= pattern.messages.count, "\(pattern.name): more messages than the pattern has")
        }
    } catch {
        failure = error
    }
    if let failure {
        require((64..<128).contains(editOn), "\(pattern.name): an unedited handshake failed: \(failure)")
        return
    }
    require(initiator.handshakeHash == responder.handshakeHash, "\(pattern.name): handshake hashes differ")

    let (sender, receiver) = toResponder ? (initiator, responder) : (responder, initiator)
    var plaintext: [UInt8] = []
    var stream: [UInt8] = []
    for (i, n) in lengths.enumerated() {
        let p = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) }
        let sealed = try! sender.seal(p)
        require(
            sealed.count == NoiseSession.sealedSize(plaintextCount: n),
            "sealed \(sealed.count) bytes for \(n), sealedSize says \(NoiseSession.sealedSize(plaintextCount: n))")
        plaintext += p
        stream += sealed
    }
    let edited = editOn >= 128 && !stream.isEmpty
    if edited { stream[editAt % stream.count] ^= editXor }

    // The receiver: unconsumed input stays and is offered again. A buffer too small for the next
    // frame gets nothing; then, as NoiseSecureSession does, a frame-sized one is offered.
    var received: [UInt8] = []
    var pending: [UInt8] = []
    var out = [UInt8](repeating: 0, count: outSize)
    var big = [UInt8](repeating: 0, count: NoiseConstants.maxPlaintextLength)
    var error: NoiseError?
    reading: for chunk in splitter.chunks(stream) {
        pending += chunk
        while true {
            let input = pending
            do throws(NoiseError) {
                let (c, w) = try boundedHeap(input: input.count, fixed: 160 << 10, "NoiseSession.open") {
                    Result { () throws(NoiseError) in try NoiseChecks.open(receiver, input, into: &out) }
                }.get()
                require(c <= input.count && w <= outSize, "open: consumed \(c) of \(input.count), wrote \(w)")
                received += out[..<w]
                pending.removeFirst(c)
                if w > 0 { continue }
                let rest = pending
                let (c2, w2) = try NoiseChecks.open(receiver, rest, into: &big)
                received += big[..<w2]
                pending.removeFirst(c2)
                if w2 > 0 { continue }
                require(pending.isEmpty, "a frame-sized buffer got nothing and \(pending.count) bytes were left unconsumed")
                continue reading
            } catch let e {
                error = e
                break reading
            }
        }
    }
    if edited {
        require(plaintext.starts(with: received), "an edited stream yielded bytes that were not sent")
    } else {
        require(error == nil, "\(pattern.name): unedited stream failed: \(String(describing: error))")
        require(received == plaintext, "\(pattern.name): received \(received.count) bytes, sent \(plaintext.count)")
    }
    if let error { requireOneLine(error.description, "NoiseError") }
}
