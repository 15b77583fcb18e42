import ControlPlane
import Glibc
import Noise
import TLS

// TLS record intake as our code drives it: the server's TLSSession is handed ciphertext in chunks
// (copied with feed, or received in place with reserveInput/commitInput), advances the handshake
// and reads. Input: mode byte, split seed, then
//   mode even: a stranger's bytes (the seed corpus holds real ClientHellos);
//   mode odd: a real client's bytes (handshake, then application data) with one byte edited,
//             given as edit position (u32), xor byte, then message lengths.
//
// Properties: every failure is a TLSError whose description is one line, and the session stays
// failed with the same error; the input it holds never exceeds what it was given; heap stays
// within a fixed budget plus the bytes fed; a real client's unedited bytes complete the handshake
// and deliver exactly what was written; edited ones deliver a prefix of it at most.

let tlsTarget = FuzzTarget(
    name: "tls",
    summary: "TLSSession server intake: strangers' bytes and a real client's with one edited byte"
) { data in
    var input = FuzzInput(data)
    let mode = input.byte()
    var splitter = Splitter(seed: input.byte())
    if mode & 1 == 0 {
        let stream = input.rest()
        let session = try! TLSSession(context: TLSFixtures.server)
        _ = boundedHeap(input: stream.count, perByte: 8, fixed: 1 << 20, "TLS intake") {
            TLSChecks.serve(session, splitter.chunks(stream), useReserve: mode & 2 != 0)
        }
    } else {
        TLSChecks.realClient(&input, &splitter, useReserve: mode & 2 != 0)
    }
}

enum TLSFixtures {
    /// Certificates from Tests/ControlPlaneTests/Fixtures/make-test-certs.sh, made once per machine
    /// in RATHOLE_FUZZ_WORK (scripts/fuzz sets it) or /tmp.
    static let directory: String = {
        let work = getenv("RATHOLE_FUZZ_WORK").map { String(cString: $0) } ?? "/tmp/rathole-fuzz"
        let dir = work + "/tls-certs"
        if access(dir + "/server.p12", R_OK) != 0 {
            let script = "\(#filePath)".split(separator: "/").dropLast(4).joined(separator: "/")
            let command = "sh /\(script)/ControlPlaneTests/Fixtures/make-test-certs.sh \(dir) fuzz >/dev/null 2>&1"
            precondition(system(command) == 0, "cannot make test certificates: \(command)")
        }
        return dir
    }()
    static let server = try! TLSServerContext(pkcs12Path: directory + "/server.p12", password: "fuzz")
    static let client = try! TLSClientContext(trustedRootPath: directory + "/ca.pem", hostname: "localhost")
}

struct TLSOutcome {
    var complete = false
    var plaintext: [UInt8] = []
    var error: TLSError?
}

enum TLSChecks {
    static func deliver(_ session: TLSSession, _ chunk: ArraySlice<UInt8>, useReserve: Bool) {
        let before = session.pendingInputCount
        if useReserve {
            let space = try! session.reserveInput(minimumCapacity: chunk.count)
            require(space.count >= chunk.count, "reserveInput gave \(space.count) bytes for \(chunk.count)")
            chunk.withUnsafeBytes { space.copyMemory(from: $0) }
            session.commitInput(chunk.count)
        } else {
            try! session.feed(Array(chunk))
        }
        require(session.pendingInputCount <= before + chunk.count, "input grew by more than was fed")
    }

    /// Feeds the chunks, advancing the handshake and reading after each.
    static func serve(
        _ session: TLSSession, _ chunks: [ArraySlice<UInt8>], useReserve: Bool, eof: Bool = true,
        keepOutput: Bool = false
    ) -> TLSOutcome {
        var out = TLSOutcome()
        var buffer = [UInt8](repeating: 0, count: 20_000)
        func step() throws(TLSError) {
            if !session.isHandshakeComplete {
                guard try session.handshake() == .complete else { return }
                out.complete = true
            }
            while true {
                let r = try buffer.withUnsafeMutableBytes { b in Result { () throws(TLSError) in try session.read(into: b) } }.get()
                guard case .bytes(let n) = r, n > 0 else { return }
                out.plaintext += buffer[..<n]
            }
        }
        do throws(TLSError) {
            for chunk in chunks {
                deliver(session, chunk, useReserve: useReserve)
                try step()
                if !keepOutput { _ = session.takeOutput() }
            }
            if eof {
                session.feedEOF()
                try step()
            }
        } catch {
            requireOneLine(error.description, "TLSError")
            out.error = error
            let again = Result { () throws(TLSError) in try session.handshake() }
            if !session.isHandshakeComplete { require(again == .failure(error), "after \(error), handshake gives \(again)") }
        }
        return out
    }

    static func realClient(_ input: inout FuzzInput, _ splitter: inout Splitter, useReserve: Bool) {
        let editAt = Int(input.u32())
        let editXor = input.byte()
        var lengths: [Int] = []
        while !input.isEmpty && lengths.count < 8 {
            let b = input.byte()
            lengths.append(b & 0x80 != 0 ? Int(input.u16()) % 50_000 : Int(b))
        }
        let client = try! TLSSession(context: TLSFixtures.client)
        let server = try! TLSSession(context: TLSFixtures.server)
        var plaintext: [UInt8] = []
        var stream: [UInt8] = []
        var edited = false
        // Handshake: the client's flights go through the edit, the server's straight back.
        var rounds = 0
        var serverOutcome = TLSOutcome()
        while !client.isHandshakeComplete && rounds < 10 {
            rounds += 1
            guard (try? client.handshake()) != nil else { break }
            var flight = client.takeOutput()
            if !edited, editXor != 0, editAt % 4096 < stream.count + flight.count, editAt % 4096 >= stream.count {
                flight[editAt % 4096 - stream.count] ^= editXor
                edited = true
            }
            stream += flight
            let o = serve(server, splitter.chunks(flight), useReserve: useReserve, eof: false, keepOutput: true)
            serverOutcome.complete = serverOutcome.complete || o.complete
            if let e = o.error {
                serverOutcome.error = e
                break
            }
            try? client.feed(server.takeOutput())
        }
        guard client.isHandshakeComplete, serverOutcome.error == nil else {
            require(edited, "an unedited handshake failed: \(String(describing: serverOutcome.error))")
            return
        }
        for (i, n) in lengths.enumerated() {
            let p = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ i) }
            try! client.write(p)
            plaintext += p
        }
        client.shutdown()
        var records = client.takeOutput()
        if !edited, editXor != 0, !records.isEmpty {
            records[editAt % records.count] ^= editXor
            edited = true
        }
        let o = serve(server, splitter.chunks(records), useReserve: useReserve)
        let received = serverOutcome.plaintext + o.plaintext
        if edited {
            require(plaintext.starts(with: received), "an edited stream delivered bytes that were not sent")
        } else {
            require(
                o.error == nil && received == plaintext,
                "unedited: \(received.count) of \(plaintext.count) bytes, \(String(describing: o.error))")
        }
    }
}
