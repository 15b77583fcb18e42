// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "rathole",
    products: [
        .executable(name: "rathole", targets: ["rathole"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // Thin C shim over liburing: ring setup, the splice relay, the pipe pool.
        .target(
            name: "CRatholeRing",
            cSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("uring")]
        ),
        // Thin C shim over libsodium and OpenSSL: what the transports and the protocol need.
        .target(
            name: "CRatholeCrypto",
            linkerSettings: [.linkedLibrary("sodium"), .linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        .target(name: "DataPlane", dependencies: ["CRatholeRing"]),
        .target(
            name: "ControlPlane",
            dependencies: [
                "DataPlane",
                "CRatholeCrypto",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        .executableTarget(
            name: "rathole",
            dependencies: [
                "ControlPlane",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Benchmark helper for perf/: a chain of relays between two ports.
        .executableTarget(name: "relaybench", dependencies: ["DataPlane"], path: "perf/relaybench"),
        .testTarget(name: "DataPlaneTests", dependencies: ["DataPlane"]),
        .testTarget(name: "ControlPlaneTests", dependencies: ["ControlPlane"], exclude: ["Fixtures"]),
        .testTarget(name: "EndToEndTests", dependencies: ["DataPlane", "ControlPlane"]),
    ]
)
