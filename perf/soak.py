#!/usr/bin/env python3
"""The soak run's driver (perf/soak.sh starts it): runs a real rathole server and client with a TCP
and a UDP service, echo services behind them, and for N minutes a churn of visitors through the
tunnel, every byte checked. Once per minute the load pauses, the server's pool of idle data
channels settles, and the file descriptors, pipes and RSS of both processes are sampled. The
client is restarted once, half-way. Prints one line per minute and a summary line; writes the
samples (TSV) and a JSON summary into the work directory; exits 1 when a check fails.

Visitors, all concurrent: short (connect, 1 B-64 KiB echoed, close), long (20-90 s, a chunk every
half second), reset (256 KiB sent, then RST with most of the echo unread), idle (connect, send
nothing, close after 5-30 s; must not be dropped), bulk (32 MiB echoed and compared), UDP
(datagrams of 1-1400 bytes from a few source ports, each echo compared).

Fails when: a byte comes back wrong; a visitor is refused, dropped or stalled (30 s) while the
client is up (outside the restart window); after warm-up, fds, pipes or RSS of a process grow
beyond a noise band (the median of the last third of the samples after warm-up against the median
of the first third: fds and pipe fds +10% or +4, RSS +10% or +4 MiB, whichever is larger). Pipes
are counted because the splice relay pools them (up to 64 per ring, kept at the high-water mark).
"""
import argparse, asyncio, json, os, random, signal, socket, struct, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", required=True)
ap.add_argument("--work", required=True)
ap.add_argument("--minutes", type=int, default=60)
ap.add_argument("--ports", required=True, help="control,tcp-public,udp-public,tcp-echo,udp-echo")
args = ap.parse_args()
P_CTL, P_TCP, P_UDP, E_TCP, E_UDP = map(int, args.ports.split(","))
MINUTES = args.minutes
WARMUP = max(1, min(5, MINUTES // 6))            # minutes before the baseline is taken
RESTART_AT = MINUTES // 2 if MINUTES >= 4 else None
CLIENT_WARMUP = 2                                 # minutes after the restart before the client's baseline
STALL = 30.0

BLOCK = random.Random(1).randbytes(4 << 20)       # visitors send slices of this


def piece(rng, n):
    off = rng.randrange(0, len(BLOCK) - n + 1)
    return BLOCK[off:off + n]


# ---------------------------------------------------------------- processes

def write_configs():
    with open(f"{args.work}/server.toml", "w") as f:
        f.write(f'[server]\nbind_addr = "127.0.0.1:{P_CTL}"\ndefault_token = "soak-token"\n'
                f'[server.services.tcp]\nbind_addr = "127.0.0.1:{P_TCP}"\n'
                f'[server.services.udp]\ntype = "udp"\nbind_addr = "127.0.0.1:{P_UDP}"\n')
    with open(f"{args.work}/client.toml", "w") as f:
        f.write(f'[client]\nremote_addr = "127.0.0.1:{P_CTL}"\ndefault_token = "soak-token"\n'
                f'[client.services.tcp]\nlocal_addr = "127.0.0.1:{E_TCP}"\n'
                f'[client.services.udp]\ntype = "udp"\nlocal_addr = "127.0.0.1:{E_UDP}"\n')


def start(name, n):
    log = open(f"{args.work}/{name}-{n}.log", "w")
    env = dict(os.environ, RUST_LOG="warn")
    return subprocess.Popen([args.bin, f"{args.work}/{name}.toml"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env)


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def sample(pid):
    """(fds, pipes, rss KiB) of a process."""
    fds = pipes = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                pipes += 1
        except OSError:
            pass
    rss = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return fds, pipes, rss


# ---------------------------------------------------------------- accounting

class Stats:
    KEYS = ["short", "long", "reset", "idle", "bulk", "udp_sent", "udp_ok", "bytes", "wrong", "refused", "tolerated"]

    def __init__(self):
        self.total = dict.fromkeys(self.KEYS, 0)
        self.minute = dict.fromkeys(self.KEYS, 0)
        self.problems = []

    def add(self, key, n=1):
        self.total[key] += n
        self.minute[key] += n

    def take_minute(self):
        m, self.minute = self.minute, dict.fromkeys(self.KEYS, 0)
        return m


stats = Stats()
state = {"paused": False, "restarting": False, "restart_until": 0.0, "running": True}
busy = [0]


def in_restart_window():
    return state["restarting"] or time.monotonic() < state["restart_until"]


def failure(kind, what):
    """A visitor went wrong. Wrong bytes always count; refusals only while the client is up."""
    if kind == "wrong":
        stats.add("wrong")
        stats.problems.append(f"{time.strftime('%H:%M:%S')} wrong bytes: {what}")
    elif in_restart_window():
        stats.add("tolerated")
    else:
        stats.add("refused")
        stats.problems.append(f"{time.strftime('%H:%M:%S')} {what}")


async def gate():
    while state["paused"] and state["running"]:
        await asyncio.sleep(0.05)


class Busy:
    def __enter__(self):
        busy[0] += 1

    def __exit__(self, *exc):
        busy[0] -= 1


async def connect():
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", P_TCP), STALL)


async def echo_exact(reader, writer, data):
    writer.write(data)
    got = await asyncio.wait_for(reader.readexactly(len(data)), STALL)
    return got


# ---------------------------------------------------------------- visitors

async def short_visitor(seed):
    rng = random.Random(seed)
    while state["running"]:
        await gate()
        with Busy():
            data = piece(rng, rng.choice([1, 100, 1400, 16384, 65536, rng.randrange(1, 65537)]))
            try:
                r, w = await connect()
                try:
                    got = await echo_exact(r, w, data)
                finally:
                    w.close()
                if got != data:
                    failure("wrong", f"short visitor: {len(data)} bytes came back different")
                else:
                    stats.add("short")
                    stats.add("bytes", len(data))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                failure("refused", f"short visitor: {type(e).__name__} {e}")
        await asyncio.sleep(rng.uniform(0, 0.05))


async def long_visitor(seed):
    rng = random.Random(seed)
    while state["running"]:
        await gate()
        with Busy():
            until = time.monotonic() + rng.uniform(20, 90)
            try:
                r, w = await connect()
                try:
                    # Ends early at a quiet window: the samples are taken with no visitor open.
                    while time.monotonic() < until and not state["paused"] and state["running"]:
                        data = piece(rng, rng.randrange(1, 4097))
                        got = await echo_exact(r, w, data)
                        if got != data:
                            failure("wrong", f"long visitor: a {len(data)}-byte chunk came back different")
                            break
                        stats.add("bytes", len(data))
                        await asyncio.sleep(0.5)
                    else:
                        stats.add("long")
                finally:
                    w.close()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                failure("refused", f"long visitor: {type(e).__name__} {e}")


async def reset_visitor(seed):
    rng = random.Random(seed)
    while state["running"]:
        await gate()
        with Busy():
            try:
                r, w = await connect()
                w.write(piece(rng, 256 << 10))
                got = await asyncio.wait_for(r.readexactly(1024), STALL)
                sock = w.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
                stats.add("reset")
                del got
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                failure("refused", f"reset visitor: {type(e).__name__} {e}")
        await asyncio.sleep(rng.uniform(0.2, 1.0))


async def idle_visitor(seed):
    rng = random.Random(seed)
    while state["running"]:
        await gate()
        with Busy():
            until = time.monotonic() + rng.uniform(5, 30)
            try:
                r, w = await connect()
                try:
                    while time.monotonic() < until and not state["paused"] and state["running"]:
                        await asyncio.sleep(0.5)
                    # Never sent a byte: the tunnel must still be open (no EOF, no reset).
                    try:
                        early = await asyncio.wait_for(r.read(1), 0.05)
                        if not in_restart_window():
                            failure("refused", f"idle visitor: closed by the tunnel ({early!r})")
                        else:
                            stats.add("tolerated")
                        continue
                    except asyncio.TimeoutError:
                        stats.add("idle")
                finally:
                    w.close()
            except (OSError, asyncio.IncompleteReadError) as e:
                failure("refused", f"idle visitor: {type(e).__name__} {e}")
            except asyncio.TimeoutError as e:
                failure("refused", f"idle visitor: connect timed out {e}")


async def bulk_visitor(seed):
    rng = random.Random(seed)
    size = 32 << 20
    while state["running"]:
        await gate()
        with Busy():
            try:
                r, w = await connect()
                chunks = [piece(rng, 1 << 20) for _ in range(size >> 20)]

                async def send():
                    for c in chunks:
                        w.write(c)
                        await w.drain()
                    w.write_eof()

                sender = asyncio.create_task(send())
                ok = True
                for c in chunks:
                    got = await asyncio.wait_for(r.readexactly(len(c)), STALL)
                    if got != c:
                        ok = False
                await asyncio.wait_for(sender, STALL)
                tail = await asyncio.wait_for(r.read(1), STALL)
                w.close()
                if not ok or tail:
                    failure("wrong", f"bulk visitor: {size >> 20} MiB came back different")
                else:
                    stats.add("bulk")
                    stats.add("bytes", size)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                failure("refused", f"bulk visitor: {type(e).__name__} {e}")
        # Paced: the machine is shared, and an hour at full speed would measure Python, not us.
        await asyncio.sleep(rng.uniform(1, 3))


class UDPClient(asyncio.DatagramProtocol):
    def __init__(self):
        self.waiting = {}

    def datagram_received(self, data, addr):
        if len(data) >= 8:
            seq = struct.unpack_from("<Q", data)[0]
            fut = self.waiting.pop(seq, None)
            if fut and not fut.done():
                fut.set_result(data)


async def udp_visitor(seed):
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    seq = seed << 40
    while state["running"]:
        await gate()
        with Busy():
            transport, proto = await loop.create_datagram_endpoint(UDPClient, remote_addr=("127.0.0.1", P_UDP))
            until = time.monotonic() + 30   # a new source port (a new visitor) every 30 s
            try:
                while time.monotonic() < until and not state["paused"] and state["running"]:
                    seq += 1
                    data = struct.pack("<Q", seq) + piece(rng, rng.randrange(0, 1393))
                    fut = loop.create_future()
                    proto.waiting[seq] = fut
                    transport.sendto(data)
                    stats.add("udp_sent")
                    try:
                        got = await asyncio.wait_for(fut, 2.0)
                        if got != data:
                            failure("wrong", f"udp: a {len(data)}-byte datagram came back different")
                        else:
                            stats.add("udp_ok")
                            stats.add("bytes", len(data))
                    except asyncio.TimeoutError:
                        proto.waiting.pop(seq, None)   # lost: counted as sent - ok, not a failure
                    await asyncio.sleep(0.01)
            finally:
                transport.close()


# ---------------------------------------------------------------- echo services

async def tcp_echo(reader, writer):
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass
    finally:
        writer.close()


class UDPEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


# ---------------------------------------------------------------- the run

async def wait_tunnel(timeout):
    """Until a visitor gets its bytes back through the tunnel."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", P_TCP), 2)
            got = await echo_exact(r, w, b"ready?")
            w.close()
            if got == b"ready?":
                return True
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        await asyncio.sleep(0.2)
    return False


async def quiesce(procs):
    """Pauses the load, waits for every visitor to end and the pool to settle, samples."""
    state["paused"] = True
    t0 = time.monotonic()
    while busy[0] > 0 and time.monotonic() - t0 < 60:
        await asyncio.sleep(0.05)
    # The server halves its unused pooled channels every second: wait until the counts hold still.
    last, still = None, 0
    for _ in range(40):
        await asyncio.sleep(0.5)
        now = tuple(sample(p.pid)[0] for p in procs)
        still = still + 1 if now == last else 0
        last = now
        if still >= 4:
            break
    samples = [sample(p.pid) for p in procs]
    state["paused"] = False
    return samples


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2]


def grew(series, label):
    """Problems when the median of the last third of the samples exceeds the median of the first
    third by more than the band (fds and pipe fds: 10% or 4; RSS: 10% or 4 MiB)."""
    out = []
    if len(series) < 2:
        return out
    k = max(1, len(series) // 3)
    for i, (name, band_abs, unit) in enumerate([("fds", 4, ""), ("pipe fds", 4, ""), ("RSS", 4096, " KiB")]):
        first, last = median([s[i] for s in series[:k]]), median([s[i] for s in series[-k:]])
        band = max(band_abs, first // 10)
        if last > first + band:
            out.append(f"{label} {name} grew from {first}{unit} to {last}{unit} (band {band}{unit})")
    return out


async def main():
    write_configs()
    loop = asyncio.get_running_loop()
    # Ended from outside (Ctrl-C, perf/soak.sh exiting): stop the processes on the way out.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, asyncio.current_task().cancel)
    echo = await asyncio.start_server(tcp_echo, "127.0.0.1", E_TCP, limit=1 << 20)
    udp_echo, _ = await loop.create_datagram_endpoint(UDPEcho, local_addr=("127.0.0.1", E_UDP))
    server = start("server", 1)
    client = start("client", 1)
    client_n = 1
    result = {"minutes": MINUTES, "problems": []}
    rows = []
    tsv = open(f"{args.work}/samples.tsv", "w")
    tsv.write("minute\tvisitors\tMB\tserver_fds\tserver_pipes\tserver_rss_kb\tclient_fds\tclient_pipes\tclient_rss_kb\trefused\twrong\n")
    try:
        if not await wait_tunnel(30):
            print("soak: the tunnel did not come up within 30 s", flush=True)
            return 1
        workers = ([short_visitor(100 + i) for i in range(6)] + [long_visitor(200 + i) for i in range(4)]
                   + [reset_visitor(300 + i) for i in range(2)] + [idle_visitor(400 + i) for i in range(12)]
                   + [bulk_visitor(500)] + [udp_visitor(600 + i) for i in range(3)])
        tasks = [asyncio.create_task(w) for w in workers]
        start_time = time.monotonic()
        server_series, client_series = [], []
        client_base_minute = WARMUP
        for minute in range(1, MINUTES + 1):
            if RESTART_AT is not None and minute == RESTART_AT + 1:
                # Half-way: the client restarts; visitors in the gap are tolerated, not failures.
                state["restarting"] = True
                restart_began = time.monotonic()
                stop(client)
                client_n += 1
                client = start("client", client_n)
                up = await wait_tunnel(60)
                state["restarting"] = False
                state["restart_until"] = time.monotonic() + 5
                if not up:
                    stats.problems.append("the tunnel did not come back within 60 s after the client restart")
                print(f"[min {minute:3}/{MINUTES}] client restarted (SIGTERM, then a new process): "
                      f"{'tunnel back' if up else 'tunnel NOT back'} {time.monotonic() - restart_began:.1f} s after the stop",
                      flush=True)
                client_series = []
                client_base_minute = minute + CLIENT_WARMUP - 1
            await asyncio.sleep(max(0, start_time + 60 * minute - time.monotonic()))
            for p, name in ((server, "server"), (client, "client")):
                if p.poll() is not None:
                    stats.problems.append(f"the {name} exited (status {p.returncode})")
            if stats.problems and any("exited" in p for p in stats.problems):
                break
            (sf, sp, sr), (cf, cp, cr) = await quiesce([server, client])
            m = stats.take_minute()
            visitors = m["short"] + m["long"] + m["reset"] + m["idle"] + m["bulk"]
            mb = m["bytes"] / 1e6
            print(f"[min {minute:3}/{MINUTES}] visitors {visitors} (short {m['short']}, long {m['long']}, "
                  f"reset {m['reset']}, idle {m['idle']}, bulk {m['bulk']}), udp {m['udp_ok']}/{m['udp_sent']}, "
                  f"{mb:.1f} MB checked | server fds {sf} (pipes {sp}) rss {sr / 1024:.1f} MB | "
                  f"client fds {cf} (pipes {cp}) rss {cr / 1024:.1f} MB | refused {m['refused']} wrong {m['wrong']}"
                  + (f" tolerated {m['tolerated']} (client restart)" if m["tolerated"] else ""), flush=True)
            tsv.write(f"{minute}\t{visitors}\t{mb:.1f}\t{sf}\t{sp}\t{sr}\t{cf}\t{cp}\t{cr}\t{m['refused']}\t{m['wrong']}\n")
            tsv.flush()
            rows.append(m)
            if minute > WARMUP:
                server_series.append((sf, sp, sr))
            if minute > client_base_minute:
                client_series.append((cf, cp, cr))
        state["running"] = False
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        problems = list(stats.problems)
        problems += grew(server_series, "server")
        problems += grew(client_series, "client (after its restart)" if RESTART_AT else "client")
        t = stats.total
        visitors = t["short"] + t["long"] + t["reset"] + t["idle"] + t["bulk"]
        verdict = "PASS" if not problems and t["wrong"] == 0 and t["refused"] == 0 else "FAIL"

        def span(series, i, div=1, fmt="{:.0f}"):
            if not series:
                return "-"
            return fmt.format(series[0][i] / div) + "->" + fmt.format(series[-1][i] / div) \
                + " (max " + fmt.format(max(s[i] for s in series) / div) + ")"

        summary = (f"soak: {verdict} {len(rows)} min: {visitors} visitors (short {t['short']}, long {t['long']}, "
                   f"reset {t['reset']}, idle {t['idle']}, bulk {t['bulk']}), udp {t['udp_ok']}/{t['udp_sent']} datagrams, "
                   f"{t['bytes'] / 1e9:.2f} GB checked, wrong {t['wrong']}, refused {t['refused']}, "
                   f"tolerated during the client restart {t['tolerated']}; after warm-up: server fds {span(server_series, 0)}, "
                   f"pipe fds {span(server_series, 1)}, RSS {span(server_series, 2, 1024, '{:.1f}')} MB; "
                   f"client fds {span(client_series, 0)}, pipe fds {span(client_series, 1)}, "
                   f"RSS {span(client_series, 2, 1024, '{:.1f}')} MB")
        for p in problems[:20]:
            print(f"  problem: {p}", flush=True)
        print(summary, flush=True)
        result.update(verdict=verdict, summary=summary, problems=problems, totals=t, warmup=WARMUP,
                      restart_at=RESTART_AT)
        json.dump(result, open(f"{args.work}/summary.json", "w"), indent=1)
        return 0 if verdict == "PASS" else 1
    finally:
        state["running"] = False
        stop(client)
        stop(server)
        echo.close()
        udp_echo.close()


try:
    sys.exit(asyncio.run(main()))
except asyncio.CancelledError:
    sys.exit(130)
