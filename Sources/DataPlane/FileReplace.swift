// Only for the HTTP API: left out of builds without the AdminAPI package trait.
#if AdminAPI

import Glibc

extension Files {
    /// Replaces the file at `path` with `bytes` so that a crash or power loss leaves either the old
    /// file or the new one, never a mix: a temporary file beside it is written, fsynced and renamed
    /// over it, then the directory is fsynced. The file's permission bits (and, as root, its owner)
    /// are kept. A symbolic link is followed: its target is replaced and the link stays.
    public static func replace(_ path: String, with bytes: [UInt8]) throws(IOError) {
        guard let resolved = realpath(path, nil) else { throw .system(.current, operation: "realpath \(path)") }
        let target = String(cString: resolved)
        free(resolved)
        var info = stat()
        _ = try systemCall("stat \(target)") { stat(target, &info) }
        let slash = target.lastIndex(of: "/")!
        let directory = slash == target.startIndex ? "/" : String(target[..<slash])
        let name = String(target[target.index(after: slash)...])
        // Dot-prefixed and unique: a file watcher looking for `name` ignores it.
        let temporary = "\(directory)/.\(name).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let mode = info.st_mode & 0o7777
        do throws(IOError) {
            let file = FileDescriptor(
                adopting: try systemCall("create \(temporary)") {
                    open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
                })
            // The mode given to open is filtered by the umask: set it exactly.
            _ = try systemCall("fchmod \(temporary)") { fchmod(file.rawValue, mode) }
            if getuid() == 0 { _ = try systemCall("fchown \(temporary)") { fchown(file.rawValue, info.st_uid, info.st_gid) } }
            var written = 0
            while written < bytes.count {
                let rest = bytes.count - written
                let start = written
                written += try systemCall("write \(temporary)") {
                    bytes.withUnsafeBytes { write(file.rawValue, $0.baseAddress! + start, rest) }
                }
            }
            _ = try systemCall("fsync \(temporary)") { fsync(file.rawValue) }
            _ = consume file
            _ = try systemCall("rename \(temporary) to \(target)") { rename(temporary, target) }
        } catch {
            unlink(temporary)
            throw error
        }
        if let dir = try? systemCall("open \(directory)", { open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }) {
            let handle = FileDescriptor(adopting: dir)
            _ = fsync(handle.rawValue)
        }
    }
}

#endif
