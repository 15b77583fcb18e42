// TLS helpers: what Swift cannot call (OpenSSL macros).
#include "cratholecrypto.h"

int rc_tls_ctx_configure(SSL_CTX *ctx, int is_server) {
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) return 0;
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    // Our BIO never refuses a write, so SSL_write always completes; AUTO_RETRY keeps SSL_read going
    // past non-application records (session tickets, key updates); RELEASE_BUFFERS frees the record
    // buffers of idle connections (no measurable cost in bulk transfers).
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    if (is_server) {
        // Sessions are never resumed by rathole clients: do not spend a record on tickets.
        if (!SSL_CTX_set_num_tickets(ctx, 0)) return 0;
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    return 1;
}

int rc_tls_set_sni(SSL *ssl, const char *hostname) {
    return (int)SSL_set_tlsext_host_name(ssl, hostname);
}

void rc_tls_free_cert_chain(STACK_OF(X509) *chain) {
    sk_X509_pop_free(chain, X509_free);
}
