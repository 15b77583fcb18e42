// The client side of the rathole protocol written out byte by byte, to act as a (misbehaving)
// client against the server under test.
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
