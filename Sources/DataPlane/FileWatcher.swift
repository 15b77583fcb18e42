import CRatholeRing
import Glibc

/// Watches one file for replacement or rewrite through inotify, read on a ring. It watches the
/// file's directory, so editors that save by writing a new file and renaming it over the old one
/// are seen too.
///
/// Used by one task at a time (the instance's watcher); the read buffer is not shared.
public final class FileWatcher: Sendable {
    public let path: String
    private let descriptor: FileDescriptor
    private var fd: Int32 { descriptor.rawValue }
    private let name: String

    public init(path: String) throws(IOError) {
        self.path = path
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let inotify = FileDescriptor(adopting: try systemCall("inotify_init1") { inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC)) })
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM)
        _ = try systemCall("inotify_add_watch \(directory)") {
            inotify_add_watch(inotify.rawValue, directory.isEmpty ? "/" : directory, mask)
        }
        descriptor = inotify
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
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 8)
        defer { buffer.deallocate() }
        var concernsFile = false
        while true {
            guard let n = try nonBlockingCall("read inotify", { read(fd, buffer.baseAddress, buffer.count) }), n > 0 else { break }
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
