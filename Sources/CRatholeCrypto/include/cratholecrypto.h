// Thin shim over libsodium and OpenSSL. Swift imports both libraries directly through this header
// (Noise, TLS, the protocol's digests); the functions below exist only for what Swift cannot call:
// OpenSSL macros.
#ifndef CRATHOLECRYPTO_H
#define CRATHOLECRYPTO_H

#include <stddef.h>
#include <stdint.h>
#include <sodium.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>
#include <openssl/sha.h>
#include <openssl/rand.h>
#include <openssl/provider.h>

// --- TLS (OpenSSL) ---
// Implemented in tls.c.

// Settings shared by every context: TLS 1.2 minimum, no renegotiation, read-ahead, and (server) no
// session tickets. Returns 1 on success, 0 on failure (details on the OpenSSL error queue).
int rc_tls_ctx_configure(SSL_CTX *ctx, int is_server);

// SNI (SSL_set_tlsext_host_name is a macro). Returns 1 on success.
int rc_tls_set_sni(SSL *ssl, const char *hostname);

// Frees a certificate chain returned by PKCS12_parse (sk_X509_pop_free is a macro).
void rc_tls_free_cert_chain(STACK_OF(X509) *chain);

#endif
