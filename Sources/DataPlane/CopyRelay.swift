import CRatholeRing
import Glibc

/// Relays between two ByteStreams through user-space buffers, for streams that cannot be spliced
/// (encrypted or framed). Each direction borrows a shared buffer only while it holds bytes.
/// FIN on one side becomes `shutdownWrite` on the other; an error closes both.
public enum CopyRelay {
    /// How long a finished relay waits for a peer's last bytes before closing anyway.
    public static let lingerGrace: Duration = .seconds(2)

    /// Runs until both directions have ended or one failed; closes both streams. Call with the
    /// ring as the task's executor preference.
    public static func run(_ a: ByteStream, _ b: ByteStream, on ring: RingExecutor) async -> RelayResult {
        let outcome = await withTaskGroup(of: (Int, UInt64, IOError?).self) { group in
            group.addTask(executorPreference: ring) { await pump(from: a, to: b, index: 0, ring: ring) }
            group.addTask(executorPreference: ring) { await pump(from: b, to: a, index: 1, ring: ring) }
            var bytes: (UInt64, UInt64) = (0, 0)
            var failure: IOError?
            for await (index, moved, error) in group {
                if index == 0 { bytes.0 = moved } else { bytes.1 = moved }
                if let error, failure == nil {
                    failure = error
                    group.cancelAll()
                    a.close()
                    b.close()
                }
            }
            return (bytes, failure)
        }
        if outcome.1 == nil {
            async let first: Void = a.closeWhenPeerDone(grace: lingerGrace)
            await b.closeWhenPeerDone(grace: lingerGrace)
            await first
        } else {
            a.close()
            b.close()
        }
        var result = RelayResult(Completion(result: 0, flags: 0, bytes: outcome.0))
        switch outcome.1 {
        case .system(let e, _)?: result.error = e
        case .cancelled?: result.stopped = true
        case .some: result.error = Errno(ECONNABORTED)
        case nil: break
        }
        return result
    }

    private static func pump(from src: ByteStream, to dst: ByteStream, index: Int, ring: RingExecutor) async -> (Int, UInt64, IOError?) {
        var moved: UInt64 = 0
        let pool = ring.bufferPool
        do {
            while true {
                try await src.waitReadable()
                let buffer = pool.borrow()
                let n: Int
                do {
                    n = try await src.read(into: buffer)
                    if n > 0 { try await dst.write(UnsafeRawBufferPointer(rebasing: buffer[..<n])) }
                } catch {
                    pool.giveBack(buffer)
                    throw error
                }
                pool.giveBack(buffer)
                if n == 0 {
                    await dst.shutdownWrite()
                    return (index, moved, nil)
                }
                moved += UInt64(n)
            }
        } catch let error as IOError {
            return (index, moved, error)
        } catch {
            return (index, moved, .cancelled)
        }
    }
}
