#include "cratholecrypto.h"

int rc_init(void) {
    return sodium_init() < 0 ? -1 : 0;
}

void rc_sha256(const void *data, size_t len, uint8_t out[32]) {
    crypto_hash_sha256(out, data, len);
}

void rc_random(void *buf, size_t len) {
    randombytes_buf(buf, len);
}
