import CRatholeCrypto
import DataPlane
import Glibc

/// Reads a configured file whole, with errors that name the config key and the path.
private func readConfiguredFile(_ path: String, key: String) throws(TLSError) -> [UInt8] {
    do {
        return try Files.read(path)
    } catch .system(let e, _) where e.rawValue == ENOENT {
        throw .fileNotFound(key: key, path: path)
    } catch {
        throw .fileUnreadable(key: key, path: path)
    }
}

/// The server side of the TLS transport: the identity from a PKCS#12 archive (certificate, private
/// key, and the chain to send). Immutable once built; one context serves every session.
public final class TLSServerContext: @unchecked Sendable {
    let ctx: OpaquePointer

    /// Loads `pkcs12Path` (upstream's `pkcs12`) with `password` (upstream's `pkcs12_password`).
    public init(pkcs12Path: String, password: String) throws(TLSError) {
        let der = try readConfiguredFile(pkcs12Path, key: "pkcs12")
        ERR_clear_error()

        let p12: OpaquePointer? = der.withUnsafeBufferPointer { buf in
            var p: UnsafePointer<UInt8>? = buf.baseAddress
            return d2i_PKCS12(nil, &p, buf.count)
        }
        guard let p12 else {
            let errs = TLSOpenSSLErrors.drain()
            throw .invalidPKCS12(path: pkcs12Path, reason: errs.reason(fallback: "not DER-encoded PKCS#12"))
        }
        defer { PKCS12_free(p12) }

        // Check the password against the MAC first: a wrong password then gets its own message
        // instead of a decryption error. An empty password may have been encoded as "no password".
        if PKCS12_mac_present(p12) == 1 {
            let ok =
                PKCS12_verify_mac(p12, password, -1) == 1
                || (password.isEmpty && PKCS12_verify_mac(p12, nil, 0) == 1)
            if !ok {
                ERR_clear_error()
                throw .wrongPKCS12Password(path: pkcs12Path)
            }
        }

        var key: OpaquePointer?
        var cert: OpaquePointer?
        var chain: OpaquePointer?
        var parsed = PKCS12_parse(p12, password, &key, &cert, &chain) == 1
        if !parsed {
            // Archives made by OpenSSL 1.x (or `openssl pkcs12 -legacy`) encrypt with RC2 or 3DES,
            // which OpenSSL 3 keeps in its legacy provider. Load it (keeping the default provider) and
            // try again.
            let errs = TLSOpenSSLErrors.drain()
            if OSSL_PROVIDER_try_load(nil, "legacy", 1) != nil {
                parsed = PKCS12_parse(p12, password, &key, &cert, &chain) == 1
            }
            if !parsed {
                let again = TLSOpenSSLErrors.drain()
                let reason = TLSOpenSSLErrors.string(for: again.primary) ?? errs.reason(fallback: "cannot decode")
                throw .invalidPKCS12(path: pkcs12Path, reason: reason)
            }
        }
        defer {
            EVP_PKEY_free(key)
            X509_free(cert)
            if let chain { rc_tls_free_cert_chain(chain) }
        }
        guard let key, let cert else {
            throw .invalidPKCS12(path: pkcs12Path, reason: "it holds no certificate with its private key")
        }

        guard let ctx = SSL_CTX_new(TLS_server_method()) else {
            throw .internalError(reason: TLSOpenSSLErrors.drain().reason(fallback: "SSL_CTX_new failed"))
        }
        self.ctx = ctx
        guard rc_tls_ctx_configure(ctx, 1) == 1 else {
            throw .internalError(reason: TLSOpenSSLErrors.drain().reason(fallback: "configuring the context failed"))
        }
        guard SSL_CTX_use_cert_and_key(ctx, cert, key, chain, 1) == 1, SSL_CTX_check_private_key(ctx) == 1 else {
            let reason = TLSOpenSSLErrors.drain().reason(fallback: "the key does not match the certificate")
            throw .invalidPKCS12(path: pkcs12Path, reason: reason)
        }
    }

    deinit { SSL_CTX_free(ctx) }
}

/// The client side of the TLS transport: which CAs to trust and which host name the server's
/// certificate must carry. Immutable once built; one context serves every session.
public final class TLSClientContext: @unchecked Sendable {
    let ctx: OpaquePointer
    /// The name (or IP address) the server's certificate is verified against.
    public let hostname: String
    /// The same, as OpenSSL wants it: an IPv6 literal without brackets.
    let verifyName: String
    /// True when `hostname` is an IP literal: then it is matched against IP SANs and no SNI is sent.
    let isIPAddress: Bool

    /// `trustedRootPath` (upstream's `trusted_root`): a PEM file of CA certificates, trusted in
    /// addition to the system's default CAs (as upstream does); nil trusts only the system's CAs.
    /// `hostname` (upstream's `hostname`, which callers default to the host part of `remote_addr`).
    public init(trustedRootPath: String?, hostname: String) throws(TLSError) {
        var name = hostname
        if name.hasPrefix("["), name.hasSuffix("]"), name.count > 2 {
            name = String(name.dropFirst().dropLast())
        }
        guard !name.isEmpty, !name.utf8.contains(0) else { throw .invalidHostname(hostname) }
        self.hostname = hostname
        self.verifyName = name
        if let pem = trustedRootPath {
            // Fail early, naming the file, before OpenSSL's less precise errors.
            _ = try readConfiguredFile(pem, key: "trusted_root")
        }

        // Probe whether the name is an IP literal (a2i_IPADDRESS via the verify param).
        if let probe = X509_VERIFY_PARAM_new() {
            isIPAddress = X509_VERIFY_PARAM_set1_ip_asc(probe, name) == 1
            X509_VERIFY_PARAM_free(probe)
        } else {
            isIPAddress = false
        }

        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_client_method()) else {
            throw .internalError(reason: TLSOpenSSLErrors.drain().reason(fallback: "SSL_CTX_new failed"))
        }
        self.ctx = ctx
        guard rc_tls_ctx_configure(ctx, 0) == 1 else {
            throw .internalError(reason: TLSOpenSSLErrors.drain().reason(fallback: "configuring the context failed"))
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        // System CAs may be absent (minimal containers); that is not an error by itself.
        _ = SSL_CTX_set_default_verify_paths(ctx)
        ERR_clear_error()
        if let pem = trustedRootPath {
            guard SSL_CTX_load_verify_file(ctx, pem) == 1 else {
                let reason = TLSOpenSSLErrors.drain().reason(fallback: "no PEM certificate found")
                throw .invalidTrustedRoot(path: pem, reason: reason)
            }
        }
    }

    deinit { SSL_CTX_free(ctx) }
}
