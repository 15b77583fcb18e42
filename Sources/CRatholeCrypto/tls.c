// TLS helpers: what Swift cannot call (macros) and the in-memory BIO that connects an SSL object to
// byte queues the caller fills from, and drains to, its sockets.
#include "cratholecrypto.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

// ---------------------------------------------------------------------------------------------------
// Byte queues.

// Every buffer (input buffer, output segment) is one standard size unless a single piece of data is
// larger. Buffers are released as soon as they are empty, so an idle connection holds none; a small
// per-thread cache of standard buffers makes that churn cheap on busy connections (no malloc/free
// and, above all, no fresh pages to fault in for each batch of records).
#define RC_BUF_SIZE (128 * 1024)
#define RC_CACHE_MAX 8

struct rc_buf_cache {
    int count;
    void *bufs[RC_CACHE_MAX];
};

static _Thread_local struct rc_buf_cache rc_cache;
static pthread_key_t rc_cache_key;
static pthread_once_t rc_cache_once = PTHREAD_ONCE_INIT;

static void cache_destroy(void *arg) {
    struct rc_buf_cache *c = arg;
    while (c->count > 0) free(c->bufs[--c->count]);
}

static void cache_key_init(void) {
    (void)pthread_key_create(&rc_cache_key, cache_destroy);
}

static void *buf_get(size_t size) {
    if (size == RC_BUF_SIZE && rc_cache.count > 0) return rc_cache.bufs[--rc_cache.count];
    return malloc(size);
}

static void buf_put(void *p, size_t size) {
    if (!p) return;
    if (size == RC_BUF_SIZE && rc_cache.count < RC_CACHE_MAX) {
        if (rc_cache.count == 0) {
            // Free the cache when this thread exits.
            pthread_once(&rc_cache_once, cache_key_init);
            (void)pthread_setspecific(rc_cache_key, &rc_cache);
        }
        rc_cache.bufs[rc_cache.count++] = p;
        return;
    }
    free(p);
}

struct rc_seg {
    struct rc_seg *next;
    size_t head, tail, cap;
    unsigned char data[];
};

struct rc_tls_io {
    unsigned char *in;
    size_t in_head, in_tail, in_cap;
    int in_eof;
    struct rc_seg *out_first, *out_last;
    size_t out_pending;
};

static size_t seg_alloc_size(const struct rc_seg *s) {
    return sizeof(struct rc_seg) + s->cap;
}

static void io_free(rc_tls_io *io) {
    if (!io) return;
    buf_put(io->in, io->in_cap);
    struct rc_seg *s = io->out_first;
    while (s) {
        struct rc_seg *n = s->next;
        buf_put(s, seg_alloc_size(s));
        s = n;
    }
    free(io);
}

static int out_append(rc_tls_io *io, const unsigned char *data, size_t len) {
    while (len > 0) {
        struct rc_seg *t = io->out_last;
        if (t && t->tail < t->cap) {
            size_t n = t->cap - t->tail;
            if (n > len) n = len;
            memcpy(t->data + t->tail, data, n);
            t->tail += n;
            io->out_pending += n;
            data += n;
            len -= n;
            continue;
        }
        size_t cap = RC_BUF_SIZE - sizeof(struct rc_seg);
        if (len > cap) cap = len;
        struct rc_seg *s = buf_get(sizeof(struct rc_seg) + cap);
        if (!s) return 0;
        s->next = NULL;
        s->head = s->tail = 0;
        s->cap = cap;
        if (t) t->next = s; else io->out_first = s;
        io->out_last = s;
    }
    return 1;
}

size_t rc_tls_io_output_pending(const rc_tls_io *io) {
    return io->out_pending;
}

const void *rc_tls_io_output_peek(const rc_tls_io *io, size_t *len) {
    struct rc_seg *s = io->out_first;
    if (!s || s->tail == s->head) {
        *len = 0;
        return NULL;
    }
    *len = s->tail - s->head;
    return s->data + s->head;
}

void rc_tls_io_output_consume(rc_tls_io *io, size_t len) {
    if (len > io->out_pending) len = io->out_pending;
    io->out_pending -= len;
    while (io->out_first) {
        struct rc_seg *s = io->out_first;
        size_t avail = s->tail - s->head;
        size_t n = len < avail ? len : avail;
        s->head += n;
        len -= n;
        if (s->head < s->tail) break;
        // Empty: release it (an idle connection keeps no output memory).
        io->out_first = s->next;
        if (!io->out_first) io->out_last = NULL;
        buf_put(s, seg_alloc_size(s));
        if (len == 0) break;
    }
}

size_t rc_tls_io_output_copy(rc_tls_io *io, void *dst, size_t cap) {
    size_t done = 0;
    unsigned char *d = dst;
    while (done < cap) {
        size_t len;
        const void *p = rc_tls_io_output_peek(io, &len);
        if (!p) break;
        if (len > cap - done) len = cap - done;
        memcpy(d + done, p, len);
        rc_tls_io_output_consume(io, len);
        done += len;
    }
    return done;
}

void *rc_tls_io_reserve(rc_tls_io *io, size_t min_capacity, size_t *available) {
    if (io->in_cap - io->in_tail < min_capacity) {
        size_t used = io->in_tail - io->in_head;
        if (io->in && io->in_cap - used >= min_capacity) {
            memmove(io->in, io->in + io->in_head, used);
        } else {
            size_t cap = io->in_cap ? io->in_cap : RC_BUF_SIZE;
            while (cap - used < min_capacity) cap *= 2;
            unsigned char *buf = buf_get(cap);
            if (!buf) return NULL;
            if (used) memcpy(buf, io->in + io->in_head, used);
            buf_put(io->in, io->in_cap);
            io->in = buf;
            io->in_cap = cap;
        }
        io->in_head = 0;
        io->in_tail = used;
    }
    *available = io->in_cap - io->in_tail;
    return io->in + io->in_tail;
}

void rc_tls_io_commit(rc_tls_io *io, size_t len) {
    if (len > io->in_cap - io->in_tail) len = io->in_cap - io->in_tail;
    io->in_tail += len;
}

int rc_tls_io_feed(rc_tls_io *io, const void *data, size_t len) {
    if (len == 0) return 1;
    size_t avail;
    void *p = rc_tls_io_reserve(io, len, &avail);
    if (!p) return 0;
    memcpy(p, data, len);
    io->in_tail += len;
    return 1;
}

void rc_tls_io_set_eof(rc_tls_io *io) {
    io->in_eof = 1;
}

size_t rc_tls_io_input_pending(const rc_tls_io *io) {
    return io->in_tail - io->in_head;
}

// ---------------------------------------------------------------------------------------------------
// The BIO.

static int bio_write_ex(BIO *b, const char *data, size_t len, size_t *written) {
    rc_tls_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!out_append(io, (const unsigned char *)data, len)) {
        *written = 0;
        return 0;
    }
    *written = len;
    return 1;
}

static int bio_read_ex(BIO *b, char *data, size_t len, size_t *readbytes) {
    rc_tls_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    size_t avail = io->in_tail - io->in_head;
    if (avail == 0) {
        *readbytes = 0;
        if (!io->in_eof) BIO_set_retry_read(b);
        return 0;
    }
    size_t n = len < avail ? len : avail;
    memcpy(data, io->in + io->in_head, n);
    io->in_head += n;
    if (io->in_head == io->in_tail) {
        // Drained: release the buffer so an idle connection holds no input memory.
        buf_put(io->in, io->in_cap);
        io->in = NULL;
        io->in_head = io->in_tail = io->in_cap = 0;
    }
    *readbytes = n;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)num;
    (void)ptr;
    rc_tls_io *io = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return (long)(io->in_tail - io->in_head);
    case BIO_CTRL_WPENDING:
        return (long)io->out_pending;
    case BIO_CTRL_EOF:
        return io->in_eof && io->in_tail == io->in_head;
    default:
        return 0;
    }
}

static int bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

static int bio_destroy(BIO *b) {
    io_free(BIO_get_data(b));
    BIO_set_data(b, NULL);
    return 1;
}

static BIO_METHOD *rc_bio_method;
static pthread_once_t rc_bio_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "rathole tls io");
    if (!m) return;
    if (!BIO_meth_set_write_ex(m, bio_write_ex) || !BIO_meth_set_read_ex(m, bio_read_ex) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create) ||
        !BIO_meth_set_destroy(m, bio_destroy)) {
        BIO_meth_free(m);
        return;
    }
    rc_bio_method = m;
}

rc_tls_io *rc_tls_io_attach(SSL *ssl) {
    pthread_once(&rc_bio_once, bio_method_init);
    if (!rc_bio_method) return NULL;
    rc_tls_io *io = calloc(1, sizeof(*io));
    if (!io) return NULL;
    BIO *b = BIO_new(rc_bio_method);
    if (!b) {
        free(io);
        return NULL;
    }
    BIO_set_data(b, io);
    // One BIO for both directions: SSL_set_bio takes a single reference when rbio == wbio.
    SSL_set_bio(ssl, b, b);
    return io;
}
