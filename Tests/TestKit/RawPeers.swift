// The rathole protocol written out byte by byte: a client to act as a (misbehaving) client against
// the server under test, and a server's side of the handshake to drive the client under test.
import ControlPlane

public enum RawClient {
    /// A Hello: u32 LE tag (0 control channel, 1 data channel), version 1, a 32-byte digest.
    public static func hello(tag: UInt32, digest: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: tag.littleEndian) { Array($0) } + [1] + digest
    }

    public static func controlHello(service: String) -> [UInt8] {
        hello(tag: 0, digest: Digest.service(named: service).bytes)
    }

    public static func authDigest(token: String, nonce: [UInt8]) -> [UInt8] {
        Digest.sha256(Array(token.utf8) + nonce).bytes
    }

    /// Control channel handshake for `service`; returns the connection, the Ack and the session key.
    public static func handshake(port: UInt16, service: String, token: String) throws -> (conn: Conn, ack: UInt32, sessionKey: [UInt8]) {
        let c = try Conn.connect(port: port)
        try c.send(controlHello(service: service))
        let reply = try c.readExact(37, timeout: 10)
        guard reply[0..<5] == [0, 0, 0, 0, 1] else { throw TestFailure("unexpected server Hello \(hexString(reply))") }
        let key = authDigest(token: token, nonce: Array(reply[5...]))
        try c.send(key)
        let ack = try c.readExact(4, timeout: 10)
        return (c, ack.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }, key)
    }

    /// A data channel: the Hello with the session key.
    public static func dataChannel(port: UInt16, sessionKey: [UInt8]) throws -> Conn {
        let c = try Conn.connect(port: port)
        try c.send(hello(tag: 1, digest: sessionKey))
        return c
    }

    /// A UDP frame as the protocol lays it out: u8 12, u32 tag 0, IPv4 address bytes, u16 LE port,
    /// u16 LE length, payload.
    public static func ipv4Frame(port: UInt16, length: UInt16? = nil, payload: [UInt8]) -> [UInt8] {
        let len = length ?? UInt16(payload.count)
        return [12, 0, 0, 0, 0, 127, 0, 0, 1, UInt8(port & 0xff), UInt8(port >> 8), UInt8(len & 0xff), UInt8(len >> 8)] + payload
    }
}

public enum RawServer {
    /// Accepts the client's control channel on `listener` for `service` (checking its Hello and
    /// its Auth against `token`), answers Ack Ok and asks for `channels` data channels. Returns the
    /// control connection and the session key the data channels will carry.
    public static func acceptControlChannel(
        on listener: Listener, service: String, token: String, channels: Int,
        timeout: Double = 20
    ) throws -> (conn: Conn, sessionKey: [UInt8]) {
        guard let c = listener.accept(timeout: timeout) else { throw TestFailure("the client never connected") }
        let hello = try c.readExact(37, timeout: 10)
        guard hello == RawClient.controlHello(service: service) else { throw TestFailure("unexpected client Hello \(hexString(hello))") }
        let nonce = patternBytes(count: 32, seed: UInt64(monoNow() * 1e6))
        try c.send([0, 0, 0, 0, 1] + nonce)
        let auth = try c.readExact(32, timeout: 10)
        let key = RawClient.authDigest(token: token, nonce: nonce)
        guard auth == key else { throw TestFailure("the client's Auth does not match the token") }
        try c.send([0, 0, 0, 0] + [UInt8](repeating: 0, count: 4 * channels))
        return (c, key)
    }

    /// Accepts a data channel carrying `sessionKey` and sends it `command` (StartForwardTcp 0,
    /// StartForwardUdp 1).
    public static func acceptDataChannel(on listener: Listener, sessionKey: [UInt8], command: UInt32, timeout: Double = 20) throws -> Conn {
        guard let d = listener.accept(timeout: timeout) else { throw TestFailure("the client opened no data channel") }
        let hello = try d.readExact(37, timeout: 10)
        guard hello == RawClient.hello(tag: 1, digest: sessionKey) else {
            throw TestFailure("unexpected data channel Hello \(hexString(hello))")
        }
        try d.send(withUnsafeBytes(of: command.littleEndian) { Array($0) })
        return d
    }
}
