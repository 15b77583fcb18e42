// One relay hop for perf/relay.sh: accepts on --listen, connects each connection to --connect and
// relays with the zero-copy splice relay (or the user-space CopyRelay with --copy).
import DataPlane
import Glibc

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
    case "--listen": listen = args.next().flatMap(SocketAddress.init)
    case "--connect": target = args.next().flatMap(SocketAddress.init)
    case "--copy": copy = true
    case "--threads": threads = args.next().flatMap { Int($0) }
    default: usage()
    }
}
guard let listen, let target else { usage() }
let useCopy = copy

Socket.raiseOpenFileLimit()
let group = try RingGroup(threads: threads)
for ring in group.executors {
    let listener = try Socket.listen(listen)
    Task(executorPreference: ring) {
        while true {
            let fd: Int32
            do {
                fd = try await ring.accept(listener)
            } catch IOError.cancelled {
                return
            } catch {
                continue
            }
            Task(executorPreference: ring) {
                guard let upstream = try? await Socket.connect(to: target, on: ring, timeout: .seconds(5)) else {
                    Socket.close(fd)
                    return
                }
                Socket.setNoDelay(fd, true)
                Socket.setNoDelay(upstream, true)
                if useCopy {
                    _ = await CopyRelay.run(SocketStream(fd: fd, ring: ring), SocketStream(fd: upstream, ring: ring), on: ring)
                } else {
                    ring.startRelay(fd, upstream) { _ in }
                }
            }
        }
    }
}
print("ready")
fflush(nil)
while true { pause() }
