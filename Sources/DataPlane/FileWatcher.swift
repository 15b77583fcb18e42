import CRatholeRing
import Glibc

/// Watches one file for replacement or rewrite through inotify, read on a ring. It watches the
/// file's directory, so editors that save by writing a new file and renaming it over the old one
/// are seen too.
public final class FileWatcher: @unchecked Sendable {
    public let path: String
    private let fd: Int32
    private let name: String
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 8)

    public init(path: String) throws(IOError) {
        self.path = path
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw .system(.current, operation: "inotify_init1") }
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM)
        guard inotify_add_watch(fd, directory.isEmpty ? "/" : directory, mask) >= 0 else {
            let e = Errno.current
            Glibc.close(fd)
            throw .system(e, operation: "inotify_add_watch \(directory)")
        }
    }

    deinit {
        Glibc.close(fd)
        buffer.deallocate()
    }

    /// Waits until the file changes, then until no further change came for `quiet` (editors write
    /// in bursts). Throws `.cancelled` when the task is cancelled.
    public func nextChange(on ring: RingExecutor, quiet: Duration = .milliseconds(300)) async throws(IOError) {
        while try await !readEvents(on: ring, timeout: nil) {}
        while true {
            do {
                _ = try await readEvents(on: ring, timeout: quiet)
            } catch .timedOut {
                return
            }
        }
    }

    /// Reads one batch of events; true when one concerns our file.
    private func readEvents(on ring: RingExecutor, timeout: Duration?) async throws(IOError) -> Bool {
        _ = try await ring.poll(fd, events: Int32(POLLIN), timeout: timeout)
        var concernsFile = false
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n <= 0 { break }
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= n {
                let event = buffer.baseAddress!.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                let nameStart = offset + MemoryLayout<inotify_event>.size
                if event.len > 0 {
                    let raw = UnsafeRawBufferPointer(rebasing: buffer[nameStart..<nameStart + Int(event.len)])
                    let bytes = raw.prefix { $0 != 0 }
                    if String(decoding: bytes, as: UTF8.self) == name { concernsFile = true }
                }
                offset = nameStart + Int(event.len)
            }
        }
        return concernsFile
    }
}
