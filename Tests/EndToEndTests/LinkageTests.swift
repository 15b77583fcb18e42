// The binary under test uses nothing of Foundation's internationalization: String(format:),
// DateFormatter or .formatted() would bring ICU and its data (about 40 MB) into the static release
// binary. A debug build names libFoundation.so (TOMLKit imports Foundation) but must take no symbol
// from it; scripts/package checks the static release binary for ICU as well (scripts/size-report).
import Foundation
import TestKit
import XCTest

final class LinkageTests: XCTestCase {
    func testNothingFromFoundationOrICU() throws {
        // Under a sanitizer the binary is an instrumented build (under ASan, a wrapper script that
        // turns leak checking on), not what ships; the plain run checks the shipped linkage.
        try XCTSkipIf(ProcessInfo.processInfo.environment["RATHOLE_SANITIZER"] != nil, "sanitized build")
        let (status, symbols) = try Programs.run(["nm", Paths.binary], timeout: 120)
        XCTAssertEqual(status, 0)
        XCTAssertGreaterThan(symbols.count, 100_000, "nm read the binary's symbols")
        // Mangled Swift names carry their module as <length><name>: 10Foundation is the full
        // Foundation module (FoundationEssentials is 20FoundationEssentials).
        let patterns = [#"(^|[^0-9])10Foundation"#, "30FoundationInternationalization", #"icudt[0-9]+_dat"#, #"icu_[0-9]+"#]
        let hits = symbols.split(separator: "\n").filter { line in
            patterns.contains { line.range(of: $0, options: .regularExpression) != nil }
        }
        XCTAssertEqual(hits.count, 0, "symbols from Foundation or ICU:\n\(hits.prefix(10).joined(separator: "\n"))")
    }
}
