// One relay hop for perf/relay.sh: accepts on --listen, connects each connection to --connect and
// relays with the zero-copy splice relay (or the user-space CopyRelay with --copy).
import ControlPlane
import DataPlane
import Glibc

/// `a.b.c.d:port` or `[v6]:port`, read by the config's address parser.
func ipAddress(_ text: String) -> SocketAddress? {
    HostPort(text)?.literalAddress?.socketAddress
}

func usage() -> Never {
    print("usage: relaybench --listen HOST:PORT --connect HOST:PORT [--copy] [--threads N]")
    exit(2)
}

var listen: SocketAddress?
var target: SocketAddress?
var copy = false
var threads: Int?
var args = CommandLine.arguments.dropFirst().makeIterator()
while let arg = args.next() {
    switch arg {
    case "--listen": listen = args.next().flatMap(ipAddress)
    case "--connect": target = args.next().flatMap(ipAddress)
    case "--copy": copy = true
    case "--threads": threads = args.next().flatMap { Int($0) }
    default: usage()
    }
}
guard let listen, let target else { usage() }
let useCopy = copy

Socket.raiseOpenFileLimit()
let group = try RingGroup(threads: threads)
let listener = try TCPListener(listen)
let connections = ConnectionSet()
for ring in group.executors {
    // Unstructured on purpose: a benchmark tool whose loops live as long as the process.
    Task(executorPreference: ring) {
        while true {
            let visitor: SocketStream
            do {
                visitor = try await listener.accept(on: ring)
            } catch IOError.cancelled {
                return
            } catch {
                continue
            }
            Task(executorPreference: ring) {
                guard let upstream = try? await Socket.connect(to: target, on: ring, timeout: .seconds(5)) else {
                    visitor.close()
                    return
                }
                try? visitor.setNoDelay(true)
                try? upstream.setNoDelay(true)
                if useCopy {
                    _ = await CopyRelay.run(visitor, upstream, on: ring)
                } else {
                    startSplice(visitor, upstream, on: ring, tracking: connections)
                }
            }
        }
    }
}
print("ready")
fflush(nil)
while true { pause() }
