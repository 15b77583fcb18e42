#define _GNU_SOURCE
#include "cratholering.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/prctl.h>

// ---------------------------------------------------------------------------------------------
// Pipe pool

enum { PIPE_WANTED_SIZE = 1 << 20, POOL_KEEP_MAX = 64 };

typedef struct rr_pipe {
    int rfd, wfd;
    uint32_t cap;
} rr_pipe;

struct rr_dir;

struct rr_ring {
    struct io_uring uring;
    unsigned pending_sqes;

    rr_pipe pool[POOL_KEEP_MAX];
    unsigned pooled;
    unsigned lent;
    unsigned max_lent;
    uint32_t pipe_size;            // what F_SETPIPE_SZ last granted; lowered when refused

    struct rr_dir *pipe_waiters;   // FIFO of directions waiting for a pipe
    struct rr_dir *pipe_waiters_tail;

    rr_relay *ended;               // relays whose end is yet to be reported to Swift

    rr_counters counters;
};

static bool pipe_open(rr_ring *ring, rr_pipe *p) {
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return false;
    uint32_t size = ring->pipe_size;
    int got = -1;
    while (size >= 65536) {
        got = fcntl(fds[1], F_SETPIPE_SZ, (int)size);
        if (got > 0) break;
        size /= 2;   // refused (pipe-max-size or the user's pipe page budget): try smaller
    }
    if (got <= 0) got = fcntl(fds[1], F_GETPIPE_SZ);
    if (got <= 0) got = 65536;
    if ((uint32_t)got < ring->pipe_size) ring->pipe_size = (uint32_t)got;
    p->rfd = fds[0];
    p->wfd = fds[1];
    p->cap = (uint32_t)got;
    return true;
}

static void pipe_close(rr_pipe *p) {
    close(p->rfd);
    close(p->wfd);
}

// ---------------------------------------------------------------------------------------------
// Relay
//
// Each direction moves bytes from `in` to `out` through a borrowed pipe:
//   readable(in) -> splice in->pipe, pipe->out until EAGAIN -> empty pipe goes back to the pool.
// One-shot polls are armed for POLLIN on `in` while the pipe is empty, or POLLOUT on `out` while the
// pipe holds bytes the peer cannot take yet. io_uring polls are level-checked when armed, so a poll
// armed on an already-ready socket completes at once: no wake-up can be lost.

enum dir_state {
    DIR_WAIT_IN,     // poll for input armed (or about to be)
    DIR_WAIT_OUT,    // poll for output armed; pipe holds bytes
    DIR_WAIT_PIPE,   // queued for a pipe
    DIR_DONE,        // EOF passed on as shutdown(SHUT_WR)
};

// Budget per pump so one busy connection cannot starve the others on this ring.
enum { PUMP_BUDGET = 8 << 20 };

typedef struct rr_dir {
    int in, out;
    rr_pipe pipe;              // valid while has_pipe
    uint32_t pending;          // bytes sitting in the pipe
    uint8_t state;
    bool has_pipe;
    bool eof_in;
    bool poll_armed;
    uint8_t index;             // 0 or 1: which of its relay's directions this is
    struct rr_dir *next_waiter;
    uint64_t bytes;
} rr_dir;

struct rr_relay {
    rr_dir dir[2];            // dir[0]: a -> b, dir[1]: b -> a
    uint64_t token;
    int32_t error;            // first error, or -ECANCELED when stopped
    bool ending;
    bool queued_as_ended;
    rr_relay *next_ended;
};

static inline uint64_t relay_ud(rr_relay *r, int d) {
    return RR_UD_RELAY_BIT | (uint64_t)(uintptr_t)r | (uint64_t)d;
}

static void dir_pump(rr_ring *ring, rr_relay *r, int d);
static void hand_pipes_to_waiters(rr_ring *ring);

static rr_relay *relay_of(rr_dir *dir) {
    return (rr_relay *)(void *)((char *)(dir - dir->index) - offsetof(rr_relay, dir));
}
static void relay_fail(rr_ring *ring, rr_relay *r, int err);

static void give_pipe(rr_dir *dir, rr_pipe p) {
    dir->pipe = p;
    dir->has_pipe = true;
    dir->pending = 0;
}

static bool borrow_pipe(rr_ring *ring, rr_dir *dir) {
    if (ring->lent >= ring->max_lent) return false;
    rr_pipe p;
    if (ring->pooled > 0) {
        p = ring->pool[--ring->pooled];
    } else if (!pipe_open(ring, &p)) {
        return false;   // out of fds or pipe budget: wait until someone returns one
    }
    ring->lent++;
    give_pipe(dir, p);
    return true;
}

static void waiter_remove(rr_ring *ring, rr_dir *dir) {
    rr_dir **pp = &ring->pipe_waiters;
    rr_dir *prev = NULL;
    while (*pp) {
        if (*pp == dir) {
            *pp = dir->next_waiter;
            if (ring->pipe_waiters_tail == dir) ring->pipe_waiters_tail = prev;
            dir->next_waiter = NULL;
            return;
        }
        prev = *pp;
        pp = &(*pp)->next_waiter;
    }
}

static void return_pipe(rr_ring *ring, rr_dir *dir) {
    if (!dir->has_pipe) return;
    dir->has_pipe = false;
    ring->lent--;
    rr_pipe p = dir->pipe;
    if (dir->pending > 0) {
        // Holds bytes that will never be delivered (the relay failed): never reuse it.
        pipe_close(&p);
        dir->pending = 0;
    } else if (ring->pooled < POOL_KEEP_MAX) {
        ring->pool[ring->pooled++] = p;
    } else {
        pipe_close(&p);
    }
}

static void arm_poll(rr_ring *ring, rr_relay *r, int d, int fd, unsigned mask) {
    struct io_uring_sqe *sqe = rr_ring_sqe(ring);
    io_uring_prep_poll_add(sqe, fd, mask);
    io_uring_sqe_set_data64(sqe, relay_ud(r, d));
    r->dir[d].poll_armed = true;
}

static void relay_finish_if_done(rr_ring *ring, rr_relay *r) {
    if (r->dir[0].poll_armed || r->dir[1].poll_armed) return;
    bool done = r->ending || (r->dir[0].state == DIR_DONE && r->dir[1].state == DIR_DONE);
    if (!done) return;
    if (r->queued_as_ended) return;
    r->queued_as_ended = true;
    for (int d = 0; d < 2; d++) {
        if (r->dir[d].state == DIR_WAIT_PIPE) waiter_remove(ring, &r->dir[d]);
        return_pipe(ring, &r->dir[d]);
    }
    hand_pipes_to_waiters(ring);
    close(r->dir[0].in);
    close(r->dir[0].out);
    ring->counters.relays_active--;
    r->next_ended = ring->ended;
    ring->ended = r;
}

static void relay_fail(rr_ring *ring, rr_relay *r, int err) {
    if (!r->ending) {
        r->ending = true;
        r->error = err;
        for (int d = 0; d < 2; d++) {
            if (r->dir[d].poll_armed) {
                // An async cancel, not IORING_OP_POLL_REMOVE: a remove that meets a wakeup in
                // progress fails with EALREADY, and when that wakeup brings no event the poll
                // was asked for (our own shutdown(SHUT_WR) on the socket), the poll stays armed
                // and the relay never ends. A cancel marks the poll cancelled either way.
                struct io_uring_sqe *sqe = rr_ring_sqe(ring);
                io_uring_prep_cancel64(sqe, relay_ud(r, d), 0);
                io_uring_sqe_set_data64(sqe, RR_UD_IGNORE);
            }
        }
    }
    relay_finish_if_done(ring, r);
}

static void dir_finish(rr_ring *ring, rr_relay *r, int d) {
    rr_dir *dir = &r->dir[d];
    return_pipe(ring, dir);
    dir->state = DIR_DONE;
    // Pass the FIN on. ENOTCONN means the peer is gone already; the other direction will notice.
    // When the other direction has ended too, the close that follows at once sends the FIN (both
    // receive queues are empty, read to their end), so the shutdown would be a wasted syscall.
    if (r->dir[1 - d].state != DIR_DONE) shutdown(dir->out, SHUT_WR);
    relay_finish_if_done(ring, r);
}

static void dir_pump(rr_ring *ring, rr_relay *r, int d) {
    rr_dir *dir = &r->dir[d];
    size_t moved = 0;
    if (!dir->has_pipe && !borrow_pipe(ring, dir)) {
        dir->state = DIR_WAIT_PIPE;
        dir->next_waiter = NULL;
        if (ring->pipe_waiters_tail) ring->pipe_waiters_tail->next_waiter = dir;
        else ring->pipe_waiters = dir;
        ring->pipe_waiters_tail = dir;
        ring->counters.pipe_waits++;
        return;
    }
    for (;;) {
        bool in_blocked = false, out_blocked = false;
        if (!dir->eof_in && dir->pending < dir->pipe.cap) {
            ssize_t n = splice(dir->in, NULL, dir->pipe.wfd, NULL, dir->pipe.cap - dir->pending,
                               SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (n > 0) {
                dir->pending += (uint32_t)n;
            } else if (n == 0) {
                dir->eof_in = true;
            } else if (errno == EAGAIN) {
                in_blocked = true;
            } else if (errno != EINTR) {
                relay_fail(ring, r, -errno);
                return;
            }
        }
        if (dir->pending > 0) {
            ssize_t n = splice(dir->pipe.rfd, NULL, dir->out, NULL, dir->pending,
                               SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (n > 0) {
                dir->pending -= (uint32_t)n;
                dir->bytes += (uint64_t)n;
                ring->counters.bytes_relayed += (uint64_t)n;
                moved += (size_t)n;
            } else if (n < 0 && errno == EAGAIN) {
                out_blocked = true;
            } else if (n < 0 && errno != EINTR) {
                relay_fail(ring, r, -errno);
                return;
            }
        }
        if (dir->pending == 0 && dir->eof_in) {
            dir_finish(ring, r, d);
            hand_pipes_to_waiters(ring);
            return;
        }
        if (dir->pending == 0 && (in_blocked || moved >= PUMP_BUDGET)) {
            return_pipe(ring, dir);
            dir->state = DIR_WAIT_IN;
            arm_poll(ring, r, d, dir->in, POLLIN | POLLRDHUP);
            hand_pipes_to_waiters(ring);
            return;
        }
        if (out_blocked || moved >= PUMP_BUDGET) {
            // Either the peer is slow or this connection used its share; a level-checked poll on the
            // output resumes us (at once, when the budget was the reason).
            dir->state = DIR_WAIT_OUT;
            arm_poll(ring, r, d, dir->out, POLLOUT);
            return;
        }
    }
}

static void hand_pipes_to_waiters(rr_ring *ring) {
    while (ring->pipe_waiters && ring->lent < ring->max_lent) {
        rr_dir *dir = ring->pipe_waiters;
        ring->pipe_waiters = dir->next_waiter;
        if (!ring->pipe_waiters) ring->pipe_waiters_tail = NULL;
        dir->next_waiter = NULL;
        rr_relay *r = relay_of(dir);
        int d = dir->index;
        // Re-arm a poll instead of pumping directly: keeps recursion shallow and rechecks readiness.
        dir->state = DIR_WAIT_IN;
        arm_poll(ring, r, d, dir->in, POLLIN | POLLRDHUP);
        // Only one: the poll hands it the pipe when it fires, unless another direction borrowed it
        // first, in which case it queues again.
        break;
    }
}

static void relay_on_poll(rr_ring *ring, rr_relay *r, int d, int res) {
    rr_dir *dir = &r->dir[d];
    dir->poll_armed = false;
    if (r->ending) {
        relay_finish_if_done(ring, r);
        return;
    }
    if (res < 0 && res != -ECANCELED) {
        relay_fail(ring, r, res);
        return;
    }
    dir_pump(ring, r, d);
}

rr_relay *rr_relay_start(rr_ring *ring, int fd_a, int fd_b, uint64_t token) {
    rr_relay *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->token = token;
    r->dir[0].in = fd_a;
    r->dir[0].out = fd_b;
    r->dir[1].in = fd_b;
    r->dir[1].out = fd_a;
    ring->counters.relays_started++;
    ring->counters.relays_active++;
    for (int d = 0; d < 2; d++) {
        r->dir[d].index = (uint8_t)d;
        r->dir[d].state = DIR_WAIT_IN;
        arm_poll(ring, r, d, r->dir[d].in, POLLIN | POLLRDHUP);
    }
    return r;
}

void rr_relay_stop(rr_ring *ring, rr_relay *relay) {
    if (relay->queued_as_ended) return;   // ended on its own; its end is about to be reported
    relay_fail(ring, relay, -ECANCELED);
}

// ---------------------------------------------------------------------------------------------
// Ring

static int try_init(rr_ring *ring, unsigned entries, unsigned flags) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = flags;
    return io_uring_queue_init_params(entries, &ring->uring, &p);
}

rr_ring *rr_ring_create(unsigned entries, unsigned max_lent_pipes, int *err) {
    rr_ring *ring = calloc(1, sizeof *ring);
    if (!ring) {
        *err = -ENOMEM;
        return NULL;
    }
    static const unsigned flag_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof flag_sets / sizeof flag_sets[0]; i++) {
        rc = try_init(ring, entries, flag_sets[i]);
        if (rc == 0) break;
    }
    if (rc < 0) {
        free(ring);
        *err = rc;
        return NULL;
    }
    ring->max_lent = max_lent_pipes ? max_lent_pipes : 1;
    ring->pipe_size = PIPE_WANTED_SIZE;
    return ring;
}

void rr_ring_destroy(rr_ring *ring) {
    for (unsigned i = 0; i < ring->pooled; i++) pipe_close(&ring->pool[i]);
    io_uring_queue_exit(&ring->uring);
    free(ring);
}

struct io_uring_sqe *rr_ring_sqe(rr_ring *ring) {
    struct io_uring_sqe *sqe;
    while ((sqe = io_uring_get_sqe(&ring->uring)) == NULL) {
        io_uring_submit(&ring->uring);
    }
    memset(sqe, 0, sizeof *sqe);
    return sqe;
}

void rr_ring_reserve(rr_ring *ring, unsigned n) {
    while (io_uring_sq_space_left(&ring->uring) < n) io_uring_submit(&ring->uring);
}

int rr_ring_submit(rr_ring *ring, int64_t wait_ns) {
    // Never sleep while something is already waiting to be reaped.
    if (ring->ended || io_uring_cq_ready(&ring->uring)) wait_ns = 0;
    if (wait_ns == 0) {
        int rc;
        do rc = io_uring_submit_and_get_events(&ring->uring); while (rc == -EINTR);
        return rc;
    }
    if (wait_ns < 0) return io_uring_submit_and_wait(&ring->uring, 1);
    struct __kernel_timespec ts = { .tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000 };
    struct io_uring_cqe *cqe;
    int rc = io_uring_submit_and_wait_timeout(&ring->uring, &cqe, 1, &ts, NULL);
    return rc == -ETIME ? 0 : rc;
}

// Moves ended relays into out (as many as fit) and frees them.
static unsigned report_ended(rr_ring *ring, rr_completion *out, unsigned n, unsigned max) {
    while (ring->ended && n < max) {
        rr_relay *r = ring->ended;
        ring->ended = r->next_ended;
        out[n].user_data = r->token;
        out[n].res = r->error;
        out[n].flags = RR_COMPLETION_RELAY_END;
        out[n].bytes[0] = r->dir[0].bytes;
        out[n].bytes[1] = r->dir[1].bytes;
        n++;
        free(r);
    }
    return n;
}

unsigned rr_ring_reap(rr_ring *ring, rr_completion *out, unsigned max) {
    unsigned n = report_ended(ring, out, 0, max);
    struct io_uring_cqe *cqe;
    while (n < max && io_uring_peek_cqe(&ring->uring, &cqe) == 0) {
        uint64_t ud = cqe->user_data;
        int res = cqe->res;
        uint32_t flags = cqe->flags;
        io_uring_cqe_seen(&ring->uring, cqe);
        if (ud == RR_UD_IGNORE) continue;
        if (ud & RR_UD_RELAY_BIT) {
            rr_relay *r = (rr_relay *)(uintptr_t)(ud & ~(RR_UD_RELAY_BIT | 1ULL));
            relay_on_poll(ring, r, (int)(ud & 1ULL), res);
            n = report_ended(ring, out, n, max);
            continue;
        }
        out[n].user_data = ud;
        out[n].res = res;
        out[n].flags = flags;
        out[n].bytes[0] = out[n].bytes[1] = 0;
        n++;
    }
    return n;
}

void rr_ring_counters(const rr_ring *ring, rr_counters *out) {
    *out = ring->counters;
    out->pipes_pooled = ring->pooled;
    out->pipes_lent = ring->lent;
}

// ---------------------------------------------------------------------------------------------
// Thread-local executor pointer

static __thread void *current_executor;

void *rr_current_executor(void) { return current_executor; }
void rr_set_current_executor(void *executor) { current_executor = executor; }

int rr_errno(void) { return errno; }

_Static_assert(sizeof(rr_mmsghdr) == sizeof(struct mmsghdr), "rr_mmsghdr must match struct mmsghdr");

int rr_recvmmsg(int fd, rr_mmsghdr *messages, unsigned int count, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)messages, count, flags, NULL);
}

int rr_sendmmsg(int fd, rr_mmsghdr *messages, unsigned int count, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)messages, count, flags);
}

void rr_set_thread_name(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}
