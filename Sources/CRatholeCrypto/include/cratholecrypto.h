// Thin shim over libsodium and OpenSSL. Swift imports these libraries directly through this
// header; the functions below exist only where a macro or a multi-call sequence is awkward from Swift.
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

// Initialise libsodium once (safe to call many times). Returns 0 on success.
int rc_init(void);

// SHA-256 of one buffer.
void rc_sha256(const void *data, size_t len, uint8_t out[32]);

// Fill buf with cryptographically secure random bytes.
void rc_random(void *buf, size_t len);

// --- Noise (BLAKE2s from OpenSSL) ---

// --- TLS (OpenSSL) ---

#endif
