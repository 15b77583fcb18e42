import ArgumentParser
import ControlPlane
import DataPlane
import Glibc
import Logging
import Noise

struct Rathole: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rathole",
        abstract: "A reverse proxy for NAT traversal, compatible with rathole.",
        version: "rathole-swift \(ratholeVersion) (rathole protocol v1)"
    )

    @Argument(help: "The configuration file (or, with --genkey, the curve: x25519).")
    var config: String?

    @Flag(name: .shortAndLong, help: "Run as a server (needed when the file has both [server] and [client]).")
    var server = false

    @Flag(name: .shortAndLong, help: "Run as a client (needed when the file has both [server] and [client]).")
    var client = false

    @Flag(help: "Generate a Noise key pair (x25519) and print it.")
    var genkey = false

    func validate() throws {
        if server && client { throw ValidationError("--server and --client cannot be used together") }
        if !genkey && config == nil { throw ValidationError("missing the configuration file: rathole [--server|--client] CONFIG") }
    }

    func run() throws {
        if genkey {
            let curve = config ?? "x25519"
            guard curve == "x25519" else { throw ValidationError("--genkey: unsupported curve '\(curve)' (supported: x25519)") }
            print(NoiseKeys.genkeyOutput(), terminator: "")
            return
        }
        let level = logLevel(fromRustLog: getenv("RUST_LOG").map { String(cString: $0) })
        LoggingSystem.bootstrap { RatholeLogHandler(label: $0, logLevel: level) }
        let code = Process.run(configPath: config!, forced: server ? .server : client ? .client : nil)
        throw ExitCode(code)
    }
}

Rathole.main()
