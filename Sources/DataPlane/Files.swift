import Glibc

/// Small whole-file reads (configs, keys, certificates), done once at start or reload.
public enum Files {
    /// The file's bytes, or the errno that stopped the read (ENOENT, EACCES, EISDIR, EFBIG...).
    public static func read(_ path: String, limit: Int = 16 << 20) -> Result<[UInt8], Errno> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(.current) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(.current)
            }
            if n == 0 { return .success(bytes) }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > limit { return .failure(Errno(EFBIG)) }
        }
    }
}
