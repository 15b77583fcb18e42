// Thin C shim over liburing for the DataPlane runtime.
//
// What lives here and why:
// - the ring itself (setup with the flags this kernel supports, SQE acquisition, submit/wait, reaping),
//   because liburing's CQE iteration is macro-based;
// - the zero-copy splice relay: poll for readiness on the ring, then splice(2) directly on the ring
//   thread. It runs entirely in C so no Swift code executes per chunk;
// - the pipe pool the relay borrows from;
// - a thread-local slot for the executor that owns the current thread (Swift has no thread-locals).
//
// Everything else (socket ops, timeouts, cancellation) is prepared from Swift with liburing's inline
// io_uring_prep_* functions on the SQE returned by rr_ring_sqe().
#ifndef CRATHOLERING_H
#define CRATHOLERING_H

#include <stdint.h>
#include <stdbool.h>
#include <liburing.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/random.h>

typedef struct rr_ring rr_ring;
typedef struct rr_relay rr_relay;

// user_data values with this bit set belong to the C side (relay polls); Swift never sees them.
#define RR_UD_RELAY_BIT (1ULL << 63)
// user_data of the eventfd read that wakes the ring for jobs posted from other threads.
#define RR_UD_WAKE (1ULL << 62)
// user_data of fire-and-forget SQEs (cancel requests, shutdowns) whose completion nobody awaits.
#define RR_UD_IGNORE 0ULL

// Macros Swift cannot import.
static const uint8_t RR_IOSQE_IO_LINK = IOSQE_IO_LINK;
static const int RR_POLLRDHUP = 0x2000;

// Completion flag set by rr_ring_reap for the end of a relay (not an io_uring CQE flag).
#define RR_COMPLETION_RELAY_END (1U << 31)

typedef struct rr_completion {
    uint64_t user_data;
    int32_t res;          // CQE result, or for a relay end: 0, or -errno of the error that ended it
    uint32_t flags;       // CQE flags, or RR_COMPLETION_RELAY_END
    uint64_t bytes[2];    // relay end only: bytes moved a->b and b->a
} rr_completion;

typedef struct rr_counters {
    uint64_t bytes_relayed;
    uint64_t relays_started;
    uint64_t relays_active;
    uint64_t pipes_pooled;
    uint64_t pipes_lent;
    uint64_t pipe_waits;   // times a direction had to wait for a pipe (the lending cap was reached)
} rr_counters;

// Creates a ring on the calling thread. Tries SINGLE_ISSUER|DEFER_TASKRUN first, then plainer setups.
// Returns NULL and sets *err to a negative errno on failure.
rr_ring *rr_ring_create(unsigned entries, unsigned max_lent_pipes, int *err);
// Closes pooled pipes and the ring. Relays still running are not touched (stop them first).
void rr_ring_destroy(rr_ring *ring);

// An SQE to fill; submits pending SQEs first when the submission queue is full. Never NULL.
struct io_uring_sqe *rr_ring_sqe(rr_ring *ring);
// Makes room for n SQEs in a row, so that a linked chain is never split across two submissions
// (a link timeout submitted apart from its operation is refused, and the operation never times out).
void rr_ring_reserve(rr_ring *ring, unsigned n);
// Submits, then waits for at least one completion: not at all (wait_ns == 0), up to wait_ns
// nanoseconds, or without limit (wait_ns < 0). Never waits when completions are already pending.
int rr_ring_submit(rr_ring *ring, int64_t wait_ns);
// Handles relay completions internally and copies up to max completions that belong to Swift
// (and relay ends) into out. Returns how many were copied.
unsigned rr_ring_reap(rr_ring *ring, rr_completion *out, unsigned max);

// Starts relaying between two connected, non-blocking sockets. The relay owns both fds from now on
// and closes them when it ends. Its end is reported once by rr_ring_reap with user_data = token.
// Returns NULL (and closes nothing) when out of memory.
rr_relay *rr_relay_start(rr_ring *ring, int fd_a, int fd_b, uint64_t token);
// Ends a running relay early; its end is still reported (with -ECANCELED). Call only on the ring thread,
// and only before its end was reported.
void rr_relay_stop(rr_ring *ring, rr_relay *relay);

void rr_ring_counters(const rr_ring *ring, rr_counters *out);

// Thread-local pointer to the Swift executor that runs on this thread (NULL elsewhere).
void *rr_current_executor(void);
void rr_set_current_executor(void *executor);

int rr_errno(void);

// recvmmsg/sendmmsg and their struct are only declared with _GNU_SOURCE, which Swift's Glibc module
// is not built with. Same layout as struct mmsghdr.
typedef struct rr_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
} rr_mmsghdr;
int rr_recvmmsg(int fd, rr_mmsghdr *messages, unsigned int count, int flags);
int rr_sendmmsg(int fd, rr_mmsghdr *messages, unsigned int count, int flags);

// Names the calling thread (at most 15 bytes are kept), for top -H and /proc/PID/task/*/comm.
void rr_set_thread_name(const char *name);

#endif
