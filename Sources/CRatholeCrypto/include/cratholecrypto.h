// Thin shim over libsodium and OpenSSL. Swift imports both libraries directly through this header
// (Noise, TLS, the protocol's digests); the functions below exist only for what Swift cannot call:
// macros, and the BIO that OpenSSL calls back into.
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
// Implemented in tls.c. Swift calls OpenSSL directly; these cover macros and the in-memory BIO.

// Settings shared by every context: TLS 1.2 minimum, no renegotiation, read-ahead, and (server) no
// session tickets. Returns 1 on success, 0 on failure (details on the OpenSSL error queue).
int rc_tls_ctx_configure(SSL_CTX *ctx, int is_server);

// SNI (SSL_set_tlsext_host_name is a macro). Returns 1 on success.
int rc_tls_set_sni(SSL *ssl, const char *hostname);

// Frees a certificate chain returned by PKCS12_parse (sk_X509_pop_free is a macro).
void rc_tls_free_cert_chain(STACK_OF(X509) *chain);

// Byte queues behind one custom BIO that serves as both rbio and wbio of an SSL. Ciphertext received
// from the network is fed into the input queue; ciphertext OpenSSL produces lands in the output queue,
// a list of segments that are never moved or reallocated while they hold data, so a pointer returned
// by rc_tls_io_output_peek stays valid (even if more output is appended) until that data is consumed.
// The io is owned by the BIO, hence by the SSL: SSL_free releases it.
typedef struct rc_tls_io rc_tls_io;

// Creates the BIO and installs it on ssl. NULL on allocation failure.
rc_tls_io *rc_tls_io_attach(SSL *ssl);

// Input: copy in; or reserve space, fill it, commit. Reserve returns NULL on allocation failure;
// otherwise *available >= min_capacity. The reserved pointer is valid until the next call on this
// io's input side (feed, reserve, or any SSL call that reads). Feed returns 1, or 0 on allocation failure.
int rc_tls_io_feed(rc_tls_io *io, const void *data, size_t len);
void *rc_tls_io_reserve(rc_tls_io *io, size_t min_capacity, size_t *available);
void rc_tls_io_commit(rc_tls_io *io, size_t len);
// The peer ended the transport: once the input queue is empty, reads report end of file.
void rc_tls_io_set_eof(rc_tls_io *io);
size_t rc_tls_io_input_pending(const rc_tls_io *io);

// Output: total pending bytes; the first contiguous run (NULL/0 when empty); consume from the front;
// copy out (and consume) up to cap bytes, returning how many.
size_t rc_tls_io_output_pending(const rc_tls_io *io);
const void *rc_tls_io_output_peek(const rc_tls_io *io, size_t *len);
void rc_tls_io_output_consume(rc_tls_io *io, size_t len);
size_t rc_tls_io_output_copy(rc_tls_io *io, void *dst, size_t cap);


#endif
