/// The API's token, checked against each request's `Authorization: Bearer <token>` in constant
/// time: how long a comparison takes says nothing about how much of a guess was right.
public struct BearerToken: Sendable {
    private let expected: [UInt8]

    public init(_ token: String) { expected = Array(token.utf8) }

    /// True when `header` (the Authorization field's value) carries the token.
    public func accepts(_ header: String?) -> Bool {
        guard let header else { return false }
        let bytes = Array(header.utf8)
        let scheme = Array("bearer ".utf8)
        guard bytes.count >= scheme.count,
            zip(bytes, scheme).allSatisfy({ Self.asciiLowercased($0) == $1 })
        else { return false }
        var offered = bytes[scheme.count...]
        while offered.first == UInt8(ascii: " ") { offered = offered.dropFirst() }
        return Self.constantTimeEqual(Array(offered), expected)
    }

    private static func asciiLowercased(_ b: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b) ? b | 0x20 : b
    }

    /// Looks at every byte of the longer input whatever differs, so the time depends on the
    /// lengths only.
    @inline(never)
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt(a.count ^ b.count)
        for i in 0..<max(a.count, b.count) {
            let x = i < a.count ? a[i] : 0
            let y = i < b.count ? b[i] : 0
            difference |= UInt(x ^ y)
        }
        return difference == 0
    }
}
