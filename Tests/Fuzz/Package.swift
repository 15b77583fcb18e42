// swift-tools-version:6.0
// The fuzzers: one libFuzzer binary whose targets test the parsers that read bytes from outside.
// Built and run by scripts/fuzz (with --sanitize=fuzzer --sanitize=address), never by the main
// package's `swift build`.
import PackageDescription

let package = Package(
    name: "rathole-fuzz",
    dependencies: [
        .package(name: "rathole", path: "../..")
    ],
    targets: [
        // libFuzzer's driver entry point and ASan's allocation hooks.
        .target(name: "CFuzzSupport"),
        .executableTarget(
            name: "rathole-fuzz",
            dependencies: ["CFuzzSupport", .product(name: "RatholeParsers", package: "rathole")]
        ),
    ]
)
