import Glibc

/// Small whole-file reads (configs, keys, certificates), done once at start or reload.
public enum Files {
    /// The file's bytes; the error names why it could not be read (ENOENT, EACCES, EISDIR, EFBIG...).
    public static func read(_ path: String, limit: Int = 16 << 20) throws(IOError) -> [UInt8] {
        let file = FileDescriptor(adopting: try systemCall("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) })
        var bytes: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { chunk.deallocate() }
        while true {
            let n = try systemCall("read \(path)") { Glibc.read(file.rawValue, chunk.baseAddress, chunk.count) }
            if n == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > limit { throw .system(.fileTooLarge, operation: "read \(path)") }
        }
    }
}
