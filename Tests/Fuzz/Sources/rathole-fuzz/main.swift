import CFuzzSupport
import Glibc

// `rathole-fuzz` is a libFuzzer binary (SwiftPM's --sanitize=fuzzer links libFuzzer's main). It
// runs one target, named by the binary's name (`fuzz-<target>`, a symlink scripts/fuzz makes) or
// by RATHOLE_FUZZ_TARGET; the arguments are libFuzzer's. RATHOLE_FUZZ_TARGET=list prints the targets.

let targets: [FuzzTarget] = [
    wireTarget,
    udpTarget,
    proxyTarget,
    webSocketFramesTarget,
    webSocketUpgradeTarget,
    noiseHandshakeTarget,
    noiseTransportTarget,
    tlsTarget,
    configTarget,
    addressesTarget,
    apiBodyTarget,
]

nonisolated(unsafe) var selected: FuzzTarget?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    var name: String?
    if let env = getenv("RATHOLE_FUZZ_TARGET") {
        name = String(cString: env)
    } else if let program = argv.pointee?.pointee {
        let base = String(cString: program).split(separator: "/").last.map(String.init) ?? ""
        if base.hasPrefix("fuzz-") { name = String(base.dropFirst(5)) }
    }
    if name == "list" {
        for t in targets { print("\(t.name)\t\(t.summary)") }
        exit(0)
    }
    guard let name, let target = targets.first(where: { $0.name == name }) else {
        print("usage: fuzz-<target> [libFuzzer options] [corpus...]  (or RATHOLE_FUZZ_TARGET=<target> rathole-fuzz ...)")
        print("targets: \(targets.map(\.name).joined(separator: " "))")
        exit(2)
    }
    selected = target
    rf_install_hooks()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selected!.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
