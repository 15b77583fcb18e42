// The BIO that connects an SSL object to its TLSByteQueues: one BIO serves as both rbio and wbio.
// Writes never fail for lack of room (the output grows), reads say "retry" when the input is empty
// and the peer has not ended the transport.

import CRatholeCrypto

/// BIO_clear_retry_flags (a macro): the read, write and special-I/O flags, and "should retry".
private let tlsRetryFlags = BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY

/// The BIO method, made once per process. Its functions are C callbacks: they find the queues in
/// the BIO's data pointer, which holds a retained reference released when the BIO is freed.
nonisolated(unsafe) private let tlsMemoryBIOMethod: OpaquePointer? = {
    guard let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "rathole tls io") else { return nil }
    let ok =
        BIO_meth_set_write_ex(method) { bio, data, count, written in
            BIO_clear_flags(bio, tlsRetryFlags)
            guard let data, TLSMemoryBIO.withQueues(bio, { $0.append(data, count: count) }) else {
                written?.pointee = 0
                return 0
            }
            written?.pointee = count
            return 1
        } == 1
        && BIO_meth_set_read_ex(method) { bio, data, count, read in
            BIO_clear_flags(bio, tlsRetryFlags)
            guard let data else { return 0 }
            let (n, ended) = TLSMemoryBIO.withQueues(bio) { ($0.read(into: data, count: count), $0.inputEnded) }
            read?.pointee = n
            if n > 0 { return 1 }
            if !ended { BIO_set_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY) }
            return 0
        } == 1
        && BIO_meth_set_ctrl(method) { bio, command, _, _ in
            switch command {
            case BIO_CTRL_FLUSH: return 1
            case BIO_CTRL_PENDING: return TLSMemoryBIO.withQueues(bio) { $0.inputPending }
            case BIO_CTRL_WPENDING: return TLSMemoryBIO.withQueues(bio) { $0.outputPending }
            case BIO_CTRL_EOF: return TLSMemoryBIO.withQueues(bio) { $0.inputEnded && $0.inputPending == 0 } ? 1 : 0
            default: return 0
            }
        } == 1
        && BIO_meth_set_create(method) { bio in
            BIO_set_init(bio, 1)
            return 1
        } == 1
        && BIO_meth_set_destroy(method) { bio in
            if let data = BIO_get_data(bio) {
                Unmanaged<TLSByteQueues>.fromOpaque(data).release()
                BIO_set_data(bio, nil)
            }
            return 1
        } == 1
    guard ok else {
        BIO_meth_free(method)
        return nil
    }
    return method
}()

enum TLSMemoryBIO {
    /// Installs a new BIO on `ssl` (which then owns it: SSL_free frees it) and returns its queues;
    /// nil when OpenSSL cannot allocate it.
    static func attach(to ssl: OpaquePointer) -> TLSByteQueues? {
        guard let method = tlsMemoryBIOMethod, let bio = BIO_new(method) else { return nil }
        let queues = TLSByteQueues()
        BIO_set_data(bio, Unmanaged.passRetained(queues).toOpaque())
        // One BIO for both directions: SSL_set_bio takes a single reference when rbio == wbio.
        SSL_set_bio(ssl, bio, bio)
        return queues
    }

    /// Runs `body` on the queues of `bio` (kept alive by the BIO's own reference: no retain and
    /// release per call, which OpenSSL makes several times per record).
    @inline(__always)
    fileprivate static func withQueues<R>(_ bio: OpaquePointer?, _ body: (TLSByteQueues) -> R) -> R {
        Unmanaged<TLSByteQueues>.fromOpaque(BIO_get_data(bio)!)._withUnsafeGuaranteedRef(body)
    }
}
