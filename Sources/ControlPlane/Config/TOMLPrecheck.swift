// Inputs toml++ (inside TOMLKit 0.6.0) trips an assertion on instead of refusing: rathole aborts
// on them in debug builds, and with NDEBUG the assertion becomes an optimizer assumption. Found by
// the config fuzz target (Tests/Fuzz). Refused here first, at the same line and column, so the
// parser only ever sees text these cannot occur in. Nothing valid TOML allows is refused.

struct TOMLPrecheckFailure: Error, Equatable {
    let line: Int
    let column: Int
    let message: String
}

enum TOMLPrecheck {
    /// The first such input in `text`, or nil.
    static func check(_ text: String) -> TOMLPrecheckFailure? {
        var scanner = Scanner(Array(text.utf8))
        return scanner.run()
    }

    /// Walks the text as TOML's lexer would, far enough to know where table headers start: outside
    /// strings, comments and values, a '[' first on its line.
    private struct Scanner {
        let b: [UInt8]
        var i = 0
        var line = 1
        var lineStart = 0
        /// Open '[' and '{' of values (arrays and inline tables may span lines), innermost last.
        var open: [UInt8] = []

        init(_ bytes: [UInt8]) { b = bytes }

        /// 1-based, in characters (UTF-8 continuation bytes do not start one).
        func column(_ at: Int) -> Int {
            1 + b[lineStart..<at].reduce(0) { $0 + ($1 & 0xC0 == 0x80 ? 0 : 1) }
        }

        func fail(_ at: Int, _ message: String) -> TOMLPrecheckFailure {
            TOMLPrecheckFailure(line: line, column: column(at), message: message)
        }

        mutating func newline() {
            line += 1
            lineStart = i + 1
        }

        mutating func run() -> TOMLPrecheckFailure? {
            var atLineStart = true
            // A byte order mark is skipped, as toml++ skips it.
            if b.starts(with: [0xEF, 0xBB, 0xBF]) {
                i = 3
                lineStart = 3
            }
            while i < b.count {
                let c = b[i]
                // TOML allows no control character but tab, LF and CR (in CRLF) anywhere.
                if (c < 0x20 && c != 0x09 && c != 0x0A && c != 0x0D) || c == 0x7F {
                    let hex = String(c, radix: 16, uppercase: true)
                    return fail(i, "control character U+\(hex.count < 2 ? "000" : "00")\(hex) is not allowed")
                }
                switch c {
                case 0x0A:
                    newline()
                    atLineStart = true
                    i += 1
                    continue
                case 0x20 where isDateShapedValueBeforeOneDigit(space: i):
                    // toml++ asserts here (fuzzer find: `n=1234-56-78 9 `), while looking for a
                    // date and time separated by a space; a time is never one digit.
                    return fail(i + 1, "expected a time (HH:MM:SS) after the date")
                case 0x20, 0x09, 0x0D:
                    i += 1
                    continue
                case UInt8(ascii: "#"):
                    skipComment()
                case UInt8(ascii: "\""), UInt8(ascii: "'"):
                    if let failure = skipString() { return failure }
                case UInt8(ascii: "[") where atLineStart && open.isEmpty:
                    if let failure = tableHeader() { return failure }
                case UInt8(ascii: "["), UInt8(ascii: "{"):
                    open.append(c)
                    i += 1
                case UInt8(ascii: "]"), UInt8(ascii: "}"):
                    // A '}' where an array's value is due trips toml++'s assertion (fuzzer find:
                    // `a = [}`); a closing bracket of the other kind is never valid TOML.
                    let opening = c == UInt8(ascii: "]") ? UInt8(ascii: "[") : UInt8(ascii: "{")
                    if let innermost = open.popLast(), innermost != opening {
                        let (closing, opened) = (Character(Unicode.Scalar(c)), Character(Unicode.Scalar(innermost)))
                        return fail(i, "'\(closing)' does not close the '\(opened)' before it")
                    }
                    i += 1
                default:
                    i += 1
                }
                atLineStart = false
            }
            return nil
        }

        /// Whether the space at `space` follows a 10-character value shaped like a date (a digit
        /// first, '-' fifth and eighth; characters are code points and underscores are not
        /// counted, as toml++ counts: fuzzer find `n=4n=n--(-\u{FFFD}r 9 `) and precedes a
        /// single digit and then the value's end. The value may hold '=' (toml++ reads `n=4a=b`
        /// as key `n`, value `4a=b`), so it may start after any '=' of the bare run before it.
        func isDateShapedValueBeforeOneDigit(space: Int) -> Bool {
            func endsValue(_ at: Int) -> Bool {
                at >= b.count || [0x20, 0x09, 0x0A, 0x0D, 0x2C, 0x5D, 0x7D, 0x23].contains(b[at])
            }
            guard space + 1 < b.count, (0x30...0x39).contains(b[space + 1]), endsValue(space + 2) else { return false }
            var start = space
            while start > 0, !endsValue(start - 1), b[start - 1] != UInt8(ascii: "["), b[start - 1] != UInt8(ascii: "{") {
                start -= 1
            }
            let run = b[start..<space]
            let starts = [start] + run.indices.filter { b[$0] == UInt8(ascii: "=") }.map { $0 + 1 }
            return starts.contains { first in
                // One entry per code point: UTF-8 continuation bytes are not counted.
                let chars = b[first..<space].filter { $0 != UInt8(ascii: "_") && $0 & 0xC0 != 0x80 }
                return chars.count == 10 && (0x30...0x39).contains(chars[0])
                    && chars[4] == UInt8(ascii: "-") && chars[7] == UInt8(ascii: "-")
            }
        }

        /// Up to the end of the line (the newline itself is left to the caller).
        mutating func skipComment() {
            while i < b.count, b[i] != 0x0A {
                if b[i] < 0x20 && b[i] != 0x09 && b[i] != 0x0D || b[i] == 0x7F { return }  // reported by run()
                i += 1
            }
        }

        /// A string starting at `i`: basic or literal, single- or multi-line. An unterminated
        /// single-line string ends at its line's end (toml++ reports it).
        mutating func skipString() -> TOMLPrecheckFailure? {
            let quote = b[i]
            let basic = quote == UInt8(ascii: "\"")
            if i + 2 < b.count, b[i + 1] == quote, b[i + 2] == quote {
                i += 3
                while i < b.count {
                    let c = b[i]
                    if (c < 0x20 && c != 0x09 && c != 0x0A && c != 0x0D) || c == 0x7F { return nil }  // reported by run()
                    if c == 0x0A { newline() }
                    if basic && c == UInt8(ascii: "\\") {
                        if i + 1 < b.count, b[i + 1] == 0x0A {
                            i += 1
                            newline()
                        }
                        i += 2
                        continue
                    }
                    if c == quote, i + 2 < b.count, b[i + 1] == quote, b[i + 2] == quote {
                        // Up to two more quotes belong to the content: """a""""" is a"".
                        var n = 3
                        while n < 5, i + n < b.count, b[i + n] == quote { n += 1 }
                        i += n
                        return nil
                    }
                    i += 1
                }
                return nil
            }
            i += 1
            while i < b.count {
                let c = b[i]
                if c == 0x0A || (c < 0x20 && c != 0x09) || c == 0x7F { return nil }
                if basic && c == UInt8(ascii: "\\") {
                    i += 2
                    continue
                }
                i += 1
                if c == quote { return nil }
            }
            return nil
        }

        /// `[` or `[[` first on its line, outside any value: a key must follow (toml++ asserts
        /// that it starts with a bare key character or a quote). Skips the rest of the header.
        mutating func tableHeader() -> TOMLPrecheckFailure? {
            i += 1
            if i < b.count, b[i] == UInt8(ascii: "[") { i += 1 }
            while i < b.count, b[i] == 0x20 || b[i] == 0x09 { i += 1 }
            if i < b.count, b[i] >= 0x20 || b[i] == 0x0A || b[i] == 0x0D, b[i] != 0x7F {  // control characters: run() reports them
                let c = b[i]
                let keyStart =
                    (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                    || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: "\"") || c == UInt8(ascii: "'")
                    || c == UInt8(ascii: "]")
                if !keyStart {
                    let shown =
                        c >= 0x21 && c < 0x7F
                        ? "'\(Character(Unicode.Scalar(c)))'" : c < 0x80 ? "the end of the line" : "a non-ASCII character"
                    return fail(i, "expected a table name after '[', found \(shown)")
                }
            }
            // The rest of the header and what follows it on the line: names, dots, a comment.
            while i < b.count, b[i] != 0x0A {
                switch b[i] {
                case UInt8(ascii: "\""), UInt8(ascii: "'"):
                    if let failure = skipString() { return failure }
                case UInt8(ascii: "#"):
                    skipComment()
                    return nil
                default:
                    let c = b[i]
                    if (c < 0x20 && c != 0x09 && c != 0x0D) || c == 0x7F { return nil }  // reported by run()
                    i += 1
                }
            }
            return nil
        }
    }
}
