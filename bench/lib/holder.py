#!/usr/bin/env python3
"""Connection helpers for bench/run.sh (stdlib only, Linux epoll).

  serve --port P            TCP service: greets every accepted connection with one byte, echoes what it
                            receives, closes on EOF. Prints "ready" once listening.
  hold --port P --count N   opens N connections to P (at most --concurrency pending at a time); one is
                            established end-to-end when the service's greeting byte has arrived. Prints
                            "held N" when all are up, then waits until --release-file exists, closes them
                            all and prints "closed".
  rate --port P --seconds S opens, receives the greeting, sends a byte, receives the echo and closes
                            connections in a loop for S seconds with --concurrency in flight; prints
                            "rate R ok N failed F".
  probe --port P --kind greet|http
                            retries until one connection through P works end-to-end (or --timeout).
"""
import argparse
import errno
import os
import resource
import select
import socket
import sys
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def out(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def serve(args):
    raise_nofile()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.host, args.port))
    ls.listen(4096)
    ls.setblocking(False)
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    conns = {}
    out("ready")
    while True:
        for fd, ev in ep.poll():
            if fd == ls.fileno():
                while True:
                    try:
                        c, _ = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        if e.errno in (errno.EMFILE, errno.ENFILE):
                            sys.stderr.write("serve: out of file descriptors\n")
                            break
                        raise
                    c.setblocking(False)
                    try:
                        c.send(b"!")
                    except OSError:
                        c.close()
                        continue
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
                continue
            c = conns.get(fd)
            if c is None:
                continue
            try:
                data = c.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                try:
                    c.send(data)
                except OSError:
                    data = b""
            if not data:
                ep.unregister(fd)
                del conns[fd]
                c.close()


def connect_nb(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    rc = s.connect_ex((host, port))
    if rc not in (0, errno.EINPROGRESS):
        s.close()
        raise OSError(rc, os.strerror(rc))
    return s


def hold(args):
    raise_nofile()
    ep = select.epoll()
    pending = {}  # fd -> socket
    held = []
    failed = 0
    deadline = time.monotonic() + args.timeout
    while len(held) < args.count:
        while len(pending) < args.concurrency and len(held) + len(pending) < args.count:
            try:
                s = connect_nb(args.host, args.port)
            except OSError as e:
                failed += 1
                if failed > args.max_failures:
                    out("error connect: %s (held %d)" % (e, len(held)))
                    return 1
                time.sleep(0.01)
                continue
            pending[s.fileno()] = s
            ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        if time.monotonic() > deadline:
            out("error timeout: held %d of %d, %d failed" % (len(held), args.count, failed))
            return 1
        for fd, ev in ep.poll(0.5):
            s = pending.pop(fd, None)
            if s is None:
                continue
            ep.unregister(fd)
            try:
                b = s.recv(1)
            except OSError:
                b = b""
            if b == b"!":
                held.append(s)
            else:
                s.close()
                failed += 1
                if failed > args.max_failures:
                    out("error: %d connections failed (held %d)" % (failed, len(held)))
                    return 1
    out("held %d failed %d" % (len(held), failed))
    while not os.path.exists(args.release_file):
        time.sleep(0.05)
        if time.monotonic() > deadline + 600:
            break
    for s in held:
        s.close()
    out("closed")
    return 0


def rate(args):
    raise_nofile()
    ep = select.epoll()
    state = {}  # fd -> [socket, stage]  stage 0: want greeting, 1: want echo
    ok = failed = 0
    start = time.monotonic()
    end = start + args.seconds
    last_ok = start

    def open_one():
        nonlocal failed
        try:
            s = connect_nb(args.host, args.port)
        except OSError:
            failed += 1
            return
        state[s.fileno()] = [s, 0]
        ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)

    for _ in range(args.concurrency):
        open_one()
    while True:
        now = time.monotonic()
        if now >= end and not state:
            break
        if now >= end + 5:
            break
        for fd, ev in ep.poll(0.2):
            st = state.get(fd)
            if st is None:
                continue
            s = st[0]
            try:
                b = s.recv(16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                b = b""
            done = False
            if st[1] == 0 and b == b"!":
                try:
                    s.send(b"x")
                    st[1] = 1
                except OSError:
                    failed += 1
                    done = True
            elif st[1] == 1 and b == b"x":
                ok += 1
                last_ok = time.monotonic()
                done = True
            else:
                failed += 1
                done = True
            if done:
                ep.unregister(fd)
                del state[fd]
                s.close()
                if time.monotonic() < end:
                    open_one()
    # completions that arrive after the nominal end still count, over the time they took
    elapsed = max(args.seconds, last_ok - start)
    for st in state.values():  # still unanswered 5 s after the end: count them as failed
        failed += 1
        st[0].close()
    out("rate %.0f ok %d failed %d seconds %.2f" % (ok / elapsed if elapsed > 0 else 0, ok, failed, elapsed))
    return 0


def probe(args):
    deadline = time.monotonic() + args.timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((args.host, args.port), timeout=2) as s:
                s.settimeout(2)
                if args.kind == "greet":
                    if s.recv(1) == b"!":
                        return 0
                    last = "no greeting"
                else:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    data = b""
                    while len(data) < 12:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    if data.startswith(b"HTTP/1.1 200"):
                        return 0
                    last = "bad reply %r" % data[:40]
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    sys.stderr.write("probe %d failed: %s\n" % (args.port, last))
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["serve", "hold", "rate", "probe"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--max-failures", type=int, default=100)
    ap.add_argument("--release-file", default="")
    ap.add_argument("--kind", choices=["greet", "http"], default="greet")
    args = ap.parse_args()
    return {"serve": serve, "hold": hold, "rate": rate, "probe": probe}[args.mode](args) or 0


if __name__ == "__main__":
    sys.exit(main())
