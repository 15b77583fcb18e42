// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "rathole",
    products: [
        .executable(name: "rathole", targets: ["rathole"]),
        // The parsers, for the fuzzers' package in Tests/Fuzz (built only by scripts/fuzz).
        .library(name: "RatholeParsers", targets: ["ControlPlane", "Noise", "TLS", "AdminAPIBodies"]),
    ],
    traits: [
        // The HTTP API and Prometheus metrics (Hummingbird, SwiftNIO: about 8 MiB of the binary).
        // `swift build --disable-default-traits` leaves them out, for small devices.
        .trait(name: "AdminAPI", description: "HTTP API for configuration and Prometheus metrics ([server.api], [client.api])"),
        .default(enabledTraits: ["AdminAPI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        // Without its default traits: FullFoundation links all of Foundation and ICU's data (+44 MB).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // Thin C shim over liburing: ring setup, the splice relay, the pipe pool.
        .target(
            name: "CRatholeRing",
            cSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("uring")]
        ),
        // Thin C shim over libsodium and OpenSSL: the headers, plus what Swift cannot call (macros).
        .target(
            name: "CRatholeCrypto",
            linkerSettings: [.linkedLibrary("sodium"), .linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        .target(name: "DataPlane", dependencies: ["CRatholeRing"]),
        // The Noise protocol framework as rathole frames it: pure, bytes in and bytes out.
        .target(name: "Noise", dependencies: ["CRatholeCrypto"]),
        // TLS sessions over OpenSSL as state machines (ciphertext in, plaintext out); DataPlane for
        // reading the configured files through its one syscall path.
        .target(name: "TLS", dependencies: ["CRatholeCrypto", "DataPlane"]),
        .target(
            name: "ControlPlane",
            dependencies: [
                "DataPlane",
                "Noise",
                "TLS",
                "CRatholeCrypto",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            // TOMLKit imports Foundation; without this, Foundation's extension members (its
            // StringProtocol.contains, say) are visible here without an import, win overload
            // resolution, and link Foundation and ICU: 42 MB more.
            swiftSettings: [.enableUpcomingFeature("MemberImportVisibility")]
        ),
        // The HTTP API's bodies: its JSON, service definitions, path segments and token check. Pure
        // (bytes in, values out), apart from the server so the fuzzers build it without SwiftNIO.
        .target(
            name: "AdminAPIBodies",
            dependencies: ["ControlPlane"],
            swiftSettings: [.enableUpcomingFeature("MemberImportVisibility")]
        ),
        // The HTTP API: routing, auth, the Prometheus text. Served by HummingbirdCore
        // (Hummingbird's HTTP server without its router, file I/O and Foundation coders: 1.5 MiB
        // less) on one NIO event-loop thread of its own, off the io_uring workers.
        .target(
            name: "AdminAPI",
            dependencies: [
                "AdminAPIBodies",
                "ControlPlane",
                "DataPlane",
                .product(name: "HummingbirdCore", package: "hummingbird", condition: .when(traits: ["AdminAPI"])),
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["AdminAPI"])),
                .product(name: "NIOPosix", package: "swift-nio", condition: .when(traits: ["AdminAPI"])),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: .when(traits: ["AdminAPI"])),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.enableUpcomingFeature("MemberImportVisibility")]
        ),
        .executableTarget(
            name: "rathole",
            dependencies: [
                "ControlPlane",
                "Noise",
                .target(name: "AdminAPI", condition: .when(traits: ["AdminAPI"])),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Benchmark helper for perf/: a chain of relays between two ports.
        .executableTarget(name: "relaybench", dependencies: ["DataPlane", "ControlPlane"], path: "perf/relaybench"),
        // pidfd_open/pidfd_getfd for the tests (not in the Glibc module).
        .systemLibrary(name: "CPidfd", path: "Tests/CPidfd"),
        // What the test suites share: waiting, threads, sockets, processes, local services, configs,
        // a raw protocol client, UDP, ring fixtures.
        .target(name: "TestKit", dependencies: ["DataPlane", "ControlPlane", "CPidfd"], path: "Tests/TestKit"),
        .testTarget(name: "DataPlaneTests", dependencies: ["DataPlane", "TestKit"]),
        .testTarget(name: "NoiseTests", dependencies: ["Noise"], exclude: ["Fixtures"]),
        .testTarget(name: "TLSTests", dependencies: ["TLS"]),
        .testTarget(name: "ControlPlaneTests", dependencies: ["ControlPlane", "TestKit"], exclude: ["Fixtures"]),
        .testTarget(name: "EndToEndTests", dependencies: ["DataPlane", "ControlPlane", "TestKit"]),
        .testTarget(name: "AdminAPITests", dependencies: ["AdminAPI", "AdminAPIBodies", "ControlPlane"]),
    ]
)
