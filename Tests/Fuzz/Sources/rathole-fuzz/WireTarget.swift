import ControlPlane

// The rathole v1 handshake and command stream as WireDecoder cuts it, in any split, on each side:
//   role 0: a server reading a client: Hello, then Auth after a control channel hello (a data
//           channel hello is followed by the visitor's bytes);
//   role 1: a client on its control channel: Hello (the nonce), Ack, then commands;
//   role 2: a client on a data channel: a DataChannelCmd, then UDP frames after StartForwardUdp.
// Input: role byte, split seed byte, the stream.
//
// Properties: every split decodes to the same messages, error and leftover as the whole stream;
// each message re-encodes to exactly the bytes it came from; a failed decode consumes nothing; the
// error is the one the message's layout calls for; the decoder never waits with a whole message
// buffered; heap grows with the bytes fed only.

let wireTarget = FuzzTarget(
    name: "wire",
    summary: "WireDecoder: hellos, auth, acks, commands and UDP frames in any split, both sides"
) { data in
    var input = FuzzInput(data)
    let role = Int(input.byte() % 3)
    var splitter = Splitter(seed: input.byte())
    let stream = input.rest()

    let whole = boundedHeap(input: stream.count, fixed: 64 << 10, "WireDecoder") {
        WireScript.run(role: role, chunks: [stream[...]], stream: stream)
    }
    let split = WireScript.run(role: role, chunks: splitter.chunks(stream), stream: stream)
    require(whole == split, "split \(split) differs from whole \(whole) for role \(role), stream \(hex(stream))")
}

enum WireMessage: Equatable {
    case hello(Hello), auth(Auth), ack(Ack), controlCmd(ControlChannelCmd), dataCmd(DataChannelCmd), udp(UdpFrame)

    var encoded: [UInt8] {
        switch self {
        case .hello(let m): return m.encode()
        case .auth(let m): return m.encode()
        case .ack(let m): return m.encode()
        case .controlCmd(let m): return m.encode()
        case .dataCmd(let m): return m.encode()
        case .udp(let f):
            do { return try f.encode() } catch {
                require(false, "a decoded frame does not encode: \(error)")
                return []
            }
        }
    }
}

struct WireOutcome: Equatable {
    var messages: [WireMessage] = []
    var error: ProtocolError?
    /// The bytes the script stopped reading at (a data channel's payload), as the decoder hands them over.
    var leftover: [UInt8]?
}

enum WireScript {
    enum State { case serverHello, serverAuth, clientHello, clientAck, clientCommands, dataCmd, udpFrames, done }

    static func run(role: Int, chunks: [ArraySlice<UInt8>], stream: [UInt8]) -> WireOutcome {
        var decoder = WireDecoder()
        var state: State = [.serverHello, .clientHello, .dataCmd][role]
        var out = WireOutcome()
        var fed = 0
        var consumed = 0

        /// One message of type M: nil when more bytes are needed (or after an error).
        func next<M: ControlPlane.WireMessage>(_ type: M.Type, _ wrap: (M) -> WireMessage) -> M? {
            let before = decoder.bufferedCount
            do {
                guard let m = try decoder.next(M.self) else {
                    require(before < M.size, "\(M.self): nil with \(before) bytes buffered")
                    return nil
                }
                record(wrap(m), size: M.size)
                require((try? M(decoding: m.encode())).map { wrap($0) } == wrap(m), "\(M.self) \(m) does not round-trip")
                return m
            } catch {
                require(decoder.bufferedCount == before, "\(M.self): a failed decode consumed bytes")
                require(
                    error == expectedError(M.self, stream[consumed..<consumed + M.size]),
                    "\(M.self): error \(error) for \(hex(stream[consumed..<consumed + M.size]))")
                requireOneLine(error.description, "ProtocolError")
                out.error = error
                state = .done
                return nil
            }
        }

        func record(_ m: WireMessage, size: Int) {
            let bytes = Array(stream[consumed..<consumed + size])
            require(m.encoded == bytes, "\(m) re-encodes to \(hex(m.encoded)), came from \(hex(bytes))")
            out.messages.append(m)
            consumed += size
            require(
                fed - consumed == decoder.bufferedCount, "buffered count \(decoder.bufferedCount) after \(fed) fed, \(consumed) consumed")
        }

        func step() -> Bool {
            switch state {
            case .serverHello:
                guard let h = next(Hello.self, WireMessage.hello) else { return false }
                if case .controlChannel = h { state = .serverAuth } else { state = .done }
            case .serverAuth:
                guard next(Auth.self, WireMessage.auth) != nil else { return false }
                state = .done
            case .clientHello:
                guard next(Hello.self, WireMessage.hello) != nil else { return false }
                state = .clientAck
            case .clientAck:
                guard let a = next(Ack.self, WireMessage.ack) else { return false }
                state = a == .ok ? .clientCommands : .done
            case .clientCommands:
                guard next(ControlChannelCmd.self, WireMessage.controlCmd) != nil else { return false }
            case .dataCmd:
                guard let c = next(DataChannelCmd.self, WireMessage.dataCmd) else { return false }
                state = c == .startForwardUdp ? .udpFrames : .done
            case .udpFrames:
                let before = decoder.bufferedCount
                do {
                    guard let f = try decoder.nextUdpFrame() else {
                        let complete = decoder.withBufferedBytes { raw in (try? UdpFrame.parse(raw)) ?? nil }
                        require(complete == nil, "nextUdpFrame: nil with a whole frame buffered")
                        return false
                    }
                    record(.udp(f), size: f.encodedSize)
                } catch {
                    require(decoder.bufferedCount == before, "UDP frame: a failed decode consumed bytes")
                    requireOneLine(error.description, "ProtocolError")
                    out.error = error
                    state = .done
                    return false
                }
            case .done:
                return false
            }
            return true
        }

        for chunk in chunks {
            decoder.feed(chunk)
            fed += chunk.count
            while step() {}
            if state == .done { break }
        }
        if state == .done && out.error == nil {
            let rest = decoder.takeBuffered()
            // Bytes not fed yet are the caller's too; what the decoder hands over is what it was given.
            require(rest == Array(stream[consumed..<fed]), "takeBuffered gave \(rest.count) bytes, expected \(fed - consumed)")
            out.leftover = Array(stream[consumed...])
        }
        return out
    }

    /// The error a fixed-size message's bytes call for, from its layout alone.
    static func expectedError<M>(_ type: M.Type, _ bytes: ArraySlice<UInt8>) -> ProtocolError? {
        let b = Array(bytes)
        let tag = UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
        switch type {
        case is Hello.Type:
            if tag > 1 { return .unknownTag(message: "Hello", tag: tag) }
            return b[4] == 1 ? nil : .unsupportedVersion(b[4])
        case is Auth.Type: return nil
        case is Ack.Type: return tag <= 2 ? nil : .unknownTag(message: "Ack", tag: tag)
        case is ControlChannelCmd.Type: return tag <= 1 ? nil : .unknownTag(message: "ControlChannelCmd", tag: tag)
        case is DataChannelCmd.Type: return tag <= 1 ? nil : .unknownTag(message: "DataChannelCmd", tag: tag)
        default: return nil
        }
    }
}
