// Connection workloads for bench/run.sh: the target service and the load generators for connection
// setup, held connections and bursts. Compiled by run.sh at run time (gcc -O2), so that neither the
// service nor the client limits what is measured (a Python client capped direct at 14k conns/s).
// Single-threaded, non-blocking sockets and epoll; Linux only.
//
//   loadgen serve PORT
//       TCP service on 127.0.0.1:PORT: greets every accepted connection with "!", echoes what it
//       receives, closes on EOF. Prints "ready" once listening.
//   loadgen rate PORT SECONDS INFLIGHT
//       for SECONDS, keeps INFLIGHT connections going, each: connect, receive "!", send one byte,
//       receive its echo, close. Prints "rate R ok N failed F seconds S".
//   loadgen hold PORT COUNT INFLIGHT TIMEOUT_S
//       opens COUNT connections (at most INFLIGHT not yet greeted at a time), then sends one byte on
//       every one and waits for each echo. Prints "held H echoed E failed F seconds S" and keeps them
//       all open until it is ended (SIGTERM).
//   loadgen burst PORT COUNT DEADLINE_S
//       opens COUNT connections at once (as fast as connect(2) returns), each sends 8 bytes of its
//       own and waits for "!" followed by exactly those bytes. Served connections stay open until
//       every one is served or has failed, or DEADLINE_S passes. Prints "burst served S of N closed C
//       wrong W timeout T connect_s X all_s A end_s E" (all_s is -1 unless all were served).
//   loadgen probe PORT greet|http TIMEOUT_S
//       retries until one connection gets the greeting (greet) or an HTTP 200 (http); exit 0 or 1.
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_FD = 65536, BATCH = 512 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static struct sockaddr_in target(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Loopback connections from one address to one port top out near 14k/s here: connect(2) needs a
// free ephemeral port (28k in the range, even ones first), and one in TIME_WAIT is reused only a
// second after it closed. The client side spreads its connections over SOURCES addresses in
// 127.0.0.0/8, so this limit stays out of the direct row; IP_BIND_ADDRESS_NO_PORT leaves the port
// to connect(2), which picks it knowing the whole 4-tuple.
enum { SOURCES = 16 };

// A non-blocking connect in progress, or -1 (errno set) when it failed at once.
static int start_connect(const struct sockaddr_in *a) {
    static unsigned next_source;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (fd >= MAX_FD) {
        close(fd);
        errno = EMFILE;
        return -1;
    }
    nodelay(fd);
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = target(0);
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + next_source++ % SOURCES);
    if (bind(fd, (const struct sockaddr *)&src, sizeof src) < 0 ||
        (connect(fd, (const struct sockaddr *)a, sizeof *a) < 0 && errno != EINPROGRESS)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void watch(int ep, int fd, uint32_t events) {
    struct epoll_event ev = { .events = events, .data.fd = fd };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

static void rewatch(int ep, int fd, uint32_t events) {
    struct epoll_event ev = { .events = events, .data.fd = fd };
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

// ------------------------------------------------------------------------------------------------

static _Noreturn void serve(int port) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ls < 0) die("socket");
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = target(port);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(ls, 65535) < 0) die("listen");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    watch(ep, ls, EPOLLIN);
    printf("ready\n");
    fflush(stdout);
    static char buf[65536];
    struct epoll_event evs[BATCH];
    for (;;) {
        int n = epoll_wait(ep, evs, BATCH, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                for (;;) {
                    int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) {
                        if (errno == EMFILE || errno == ENFILE) {
                            fprintf(stderr, "serve: out of file descriptors\n");
                            usleep(10000);
                        }
                        break;
                    }
                    nodelay(c);
                    if (send(c, "!", 1, MSG_NOSIGNAL) != 1) {
                        close(c);
                        continue;
                    }
                    watch(ep, c, EPOLLIN | EPOLLRDHUP);
                }
                continue;
            }
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r > 0) {
                // Replies are small and the peer reads them: a short write means it is stuck.
                if (send(fd, buf, (size_t)r, MSG_NOSIGNAL) == r) continue;
            }
            close(fd);
        }
    }
}

// ------------------------------------------------------------------------------------------------

static int rate(int port, double seconds, int inflight) {
    struct sockaddr_in a = target(port);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    static unsigned char stage[MAX_FD];
    long ok = 0, failed = 0;
    int open = 0;
    double start = now_s(), end = start + seconds, last_ok = start;
    struct epoll_event evs[BATCH];
    char buf[16];
    for (;;) {
        double t = now_s();
        if ((t >= end && open == 0) || t >= end + 5) break;
        while (t < end && open < inflight) {
            int fd = start_connect(&a);
            if (fd < 0) {
                failed++;
                usleep(1000);   // out of ports or fds: let some close first
                break;
            }
            stage[fd] = 0;
            watch(ep, fd, EPOLLIN | EPOLLRDHUP);
            open++;
        }
        int n = epoll_wait(ep, evs, BATCH, 50);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (stage[fd] == 0 && r == 1 && buf[0] == '!') {
                if (send(fd, "x", 1, MSG_NOSIGNAL) == 1) {
                    stage[fd] = 1;
                    continue;
                }
                failed++;
            } else if (stage[fd] == 1 && r == 1 && buf[0] == 'x') {
                ok++;
                last_ok = now_s();
            } else {
                failed++;
            }
            close(fd);
            open--;
        }
    }
    failed += open;   // still unanswered 5 s after the end
    double elapsed = last_ok - start > seconds ? last_ok - start : seconds;
    printf("rate %.0f ok %ld failed %ld seconds %.2f\n", ok / elapsed, ok, failed, elapsed);
    return 0;
}

// ------------------------------------------------------------------------------------------------

enum { H_GREET, H_HELD, H_ECHO, H_DONE };

static _Noreturn void hold(int port, int count, int inflight, double timeout) {
    struct sockaddr_in a = target(port);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    static unsigned char stage[MAX_FD];
    static int held_fds[MAX_FD];
    int held = 0, pending = 0, echoed = 0;
    long failed = 0;
    double start = now_s(), deadline = start + timeout;
    struct epoll_event evs[BATCH];
    char buf[16];
    while (held < count && now_s() < deadline) {
        while (pending < inflight && held + pending < count) {
            int fd = start_connect(&a);
            if (fd < 0) {
                failed++;
                usleep(1000);
                break;
            }
            stage[fd] = H_GREET;
            watch(ep, fd, EPOLLIN | EPOLLRDHUP);
            pending++;
        }
        int n = epoll_wait(ep, evs, BATCH, 50);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (stage[fd] != H_GREET) continue;   // a held one closed early: found in the echo phase
            ssize_t r = recv(fd, buf, 1, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            pending--;
            if (r == 1 && buf[0] == '!') {
                stage[fd] = H_HELD;
                held_fds[held++] = fd;
                rewatch(ep, fd, EPOLLIN | EPOLLRDHUP);
            } else {
                failed++;
                close(fd);
            }
        }
    }
    // Echo phase: one byte on each held connection, each must come back.
    for (int i = 0; i < held; i++) {
        int fd = held_fds[i];
        char b = (char)('a' + i % 26);
        if (send(fd, &b, 1, MSG_NOSIGNAL) == 1) stage[fd] = H_ECHO;
    }
    double echo_deadline = now_s() + (timeout < 30 ? timeout : 30);
    int waiting = 0;
    for (int i = 0; i < held; i++) waiting += stage[held_fds[i]] == H_ECHO;
    static int index_of[MAX_FD];
    for (int i = 0; i < held; i++) index_of[held_fds[i]] = i;
    while (waiting > 0 && now_s() < echo_deadline) {
        int n = epoll_wait(ep, evs, BATCH, 50);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (stage[fd] != H_ECHO) continue;
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            stage[fd] = H_DONE;
            waiting--;
            if (r == 1 && buf[0] == (char)('a' + index_of[fd] % 26)) echoed++;
        }
    }
    printf("held %d echoed %d failed %ld seconds %.2f\n", held, echoed, failed, now_s() - start);
    fflush(stdout);
    // Idle from here on; the epoll set stays, but nothing reads: the caller measures, then ends us.
    for (;;) pause();
}

// ------------------------------------------------------------------------------------------------

enum { B_CONNECTING, B_SENT, B_SERVED, B_FAILED };

static struct {
    int ep, count, served, closed, wrong, resolved;
    double t0, all_s;
    unsigned char stage[MAX_FD], got_n[MAX_FD];
    char got[MAX_FD][9], want[MAX_FD][8];
} B;

static void burst_failed(int fd, int wrong) {
    if (wrong) B.wrong++; else B.closed++;
    B.stage[fd] = B_FAILED;
    B.resolved++;
    close(fd);
}

static void burst_event(int fd, uint32_t events) {
    char buf[64];
    if (B.stage[fd] == B_SERVED || B.stage[fd] == B_FAILED) return;
    if (B.stage[fd] == B_CONNECTING && (events & EPOLLOUT) && !(events & EPOLLERR)) {
        if (send(fd, B.want[fd], 8, MSG_NOSIGNAL) != 8) return burst_failed(fd, 0);
        B.stage[fd] = B_SENT;
        rewatch(B.ep, fd, EPOLLIN | EPOLLRDHUP);
    }
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (r <= 0) return burst_failed(fd, 0);
        if (B.got_n[fd] + r > 9) return burst_failed(fd, 1);
        memcpy(B.got[fd] + B.got_n[fd], buf, (size_t)r);
        B.got_n[fd] += (unsigned char)r;
        if (B.got_n[fd] < 9) continue;
        if (B.got[fd][0] != '!' || memcmp(B.got[fd] + 1, B.want[fd], 8) != 0) return burst_failed(fd, 1);
        B.stage[fd] = B_SERVED;
        B.served++;
        B.resolved++;
        epoll_ctl(B.ep, EPOLL_CTL_DEL, fd, NULL);   // stays open until the burst is over
        if (B.served == B.count) B.all_s = now_s() - B.t0;
        return;
    }
}

static int burst(int port, int count, double deadline_s) {
    struct sockaddr_in a = target(port);
    B.ep = epoll_create1(EPOLL_CLOEXEC);
    if (B.ep < 0) die("epoll_create1");
    B.count = count;
    B.all_s = -1;
    B.t0 = now_s();
    struct epoll_event evs[BATCH];
    uint32_t salt = (uint32_t)(B.t0 * 1e6);
    for (int i = 0; i < count; i++) {
        int fd = start_connect(&a);
        if (fd < 0) {
            fprintf(stderr, "burst: connect %d failed: %s\n", i, strerror(errno));
            B.closed++;
            B.resolved++;
            continue;
        }
        B.stage[fd] = B_CONNECTING;
        B.got_n[fd] = 0;
        char hex[9];
        snprintf(hex, sizeof hex, "%08x", (uint32_t)(i * 2654435761u) ^ salt);
        memcpy(B.want[fd], hex, 8);
        watch(B.ep, fd, EPOLLOUT | EPOLLIN | EPOLLRDHUP);
        if (i % 256 == 255) {   // keep the early ones moving while the rest connect
            int n = epoll_wait(B.ep, evs, BATCH, 0);
            for (int k = 0; k < n; k++) burst_event(evs[k].data.fd, evs[k].events);
        }
    }
    double connect_s = now_s() - B.t0, deadline = B.t0 + deadline_s;
    while (B.resolved < count && now_s() < deadline) {
        int n = epoll_wait(B.ep, evs, BATCH, 50);
        for (int k = 0; k < n; k++) burst_event(evs[k].data.fd, evs[k].events);
    }
    printf("burst served %d of %d closed %d wrong %d timeout %d connect_s %.3f all_s %.3f end_s %.3f\n",
           B.served, count, B.closed, B.wrong, count - B.resolved, connect_s, B.all_s, now_s() - B.t0);
    return 0;
}

// ------------------------------------------------------------------------------------------------

static int probe_once(int port, int http) {
    struct sockaddr_in a = target(port);
    int fd = start_connect(&a);
    if (fd < 0) return 0;
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    char buf[64];
    size_t have = 0;
    int ok = 0;
    if (poll(&p, 1, 2000) != 1 || (p.revents & (POLLERR | POLLHUP))) goto out;
    if (http) {
        const char *req = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
        if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req)) goto out;
    }
    double until = now_s() + 2;
    while (have < (http ? 12u : 1u) && now_s() < until) {
        p.events = POLLIN;
        if (poll(&p, 1, 200) != 1) continue;
        ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
        if (r < 0 && errno == EAGAIN) continue;
        if (r <= 0) break;
        have += (size_t)r;
    }
    ok = http ? (have >= 12 && memcmp(buf, "HTTP/1.", 7) == 0 && memcmp(buf + 8, " 200", 4) == 0)
         : (have >= 1 && buf[0] == '!');
out:
    close(fd);
    return ok;
}

static int probe(int port, const char *kind, double timeout) {
    double until = now_s() + timeout;
    int http = strcmp(kind, "http") == 0;
    while (now_s() < until) {
        if (probe_once(port, http)) return 0;
        usleep(100000);
    }
    fprintf(stderr, "probe %d (%s): no answer in %.0f s\n", port, kind, timeout);
    return 1;
}

// ------------------------------------------------------------------------------------------------

static void usage(void) {
    fprintf(stderr, "usage: loadgen serve PORT | rate PORT SECONDS INFLIGHT | hold PORT COUNT INFLIGHT TIMEOUT_S"
                    " | burst PORT COUNT DEADLINE_S | probe PORT greet|http TIMEOUT_S\n");
    exit(2);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (argc < 3) usage();
    const char *mode = argv[1];
    int port = atoi(argv[2]);
    if (strcmp(mode, "serve") == 0 && argc == 3) serve(port);
    if (strcmp(mode, "rate") == 0 && argc == 5) return rate(port, atof(argv[3]), atoi(argv[4]));
    if (strcmp(mode, "hold") == 0 && argc == 6) hold(port, atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
    if (strcmp(mode, "burst") == 0 && argc == 5) return burst(port, atoi(argv[3]), atof(argv[4]));
    if (strcmp(mode, "probe") == 0 && argc == 5) return probe(port, argv[3], atof(argv[4]));
    usage();
    return 2;
}
