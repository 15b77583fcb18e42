#!/usr/bin/env python3
"""Parsing and reporting for bench/run.sh (stdlib only).

  report.py wrk FILE
      parse wrk --latency output; prints "REQ_PER_S P50_MS P99_MS ERRORS" (n/a when missing)
  report.py perf RESULTS.tsv
      for the perf/ scripts: RESULTS.tsv holds lines "system<TAB>streams<TAB>gbps<TAB>cpu<TAB>round";
      prints a markdown table, one row per system and streams (in first-seen order), with the
      median (min-max) of the rounds
  report.py render RESULTS.tsv OUT.md CHART_DIR
      RESULTS.tsv holds lines "system<TAB>key<TAB>value<TAB>round" (system "_meta" for run facts,
      key "note" for free text). Writes the markdown report to OUT.md and stdout, and gnuplot charts
      (latest-bitrate, latest-http, latest-memory) to CHART_DIR. Every table cell is the median
      over the rounds, with min-max beside it when the rounds differ.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys

SYSTEMS = [  # key, label
    ("ours", "ours (Swift, io_uring)"),
    ("rathole", "rathole (upstream)"),
    ("frp", "frp (TLS off)"),
    ("haproxy", "HAProxy (two hops, splice)"),
    ("direct", "direct (no proxy)"),
]
TLS_SYSTEMS = [
    ("ours_tls", "ours, transport tls"),
    ("rathole_tls", "rathole (upstream), transport tls"),
    ("frp_tls", "frp, default TLS"),
]
LABEL = dict(SYSTEMS + TLS_SYSTEMS)


# ----------------------------------------------------------------------------------------------
# wrk

def _ms(value):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if not m:
        return None
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[m.group(2)]


def parse_wrk(path):
    text = open(path, errors="replace").read()
    rps = p50 = p99 = None
    errors = 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        rps = float(m.group(1))
    m = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    if m:
        p50 = _ms(m.group(1))
    m = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if m:
        p99 = _ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))

    def f(x, fmt):
        return "n/a" if x is None else fmt % x
    print(f(rps, "%.0f"), f(p50, "%.3f"), f(p99, "%.3f"), errors)


# ----------------------------------------------------------------------------------------------
# data: data[system][key] = {round: value}

def load(path):
    data, notes, meta = {}, [], {}
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 4:
            continue
        sysk, key, val, rnd = parts
        rnd = int(rnd)
        if sysk == "_meta":
            meta[key] = val
        elif key == "note":
            notes.append((sysk, val, rnd))
        else:
            data.setdefault(sysk, {}).setdefault(key, {})[rnd] = val
    return data, notes, meta


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def derive(data, meta):
    """Per-round computed figures: RSS sums, bytes per connection, the proxies' kernel memory."""
    levels = [int(x) for x in meta.get("mem_levels", "").split()]
    hold_n = int(meta.get("hold_n", "8000"))
    direct = data.get("direct", {})
    for sysk, d in data.items():
        idle_s, idle_c = d.get("rss_idle_server_kb", {}), d.get("rss_idle_client_kb", {})
        for r in idle_s:
            s, c = num(idle_s.get(r)), num(idle_c.get(r))
            if s is not None and c is not None:
                d.setdefault("rss_idle_kb", {})[r] = s + c
        for n in levels:
            for r, sv in d.get("rss_%d_server_kb" % n, {}).items():
                s, c = num(sv), num(d.get("rss_%d_client_kb" % n, {}).get(r))
                idle = d.get("rss_idle_kb", {}).get(r)
                if s is None or c is None:
                    continue
                d.setdefault("rss_%d_kb" % n, {})[r] = s + c
                if idle is not None:
                    d.setdefault("bpc_%d" % n, {})[r] = (s + c - idle) * 1024 / n
        for r, v in d.get("kern_slab_kb", {}).items():
            k, base = num(v), num(direct.get("kern_slab_kb", {}).get(r))
            if k is not None and base is not None and sysk != "direct":
                d.setdefault("kern_bpc", {})[r] = (k - base) * 1024 / hold_n


def values(d, key):
    return list(d.get(key, {}).values()) if d else []


def median_of(d, key):
    nums = [x for x in (num(v) for v in values(d, key)) if x is not None]
    return statistics.median(nums) if nums else None


def cell(d, key, fmt, spread=True, scale=1.0):
    vals = values(d, key)
    if not vals:
        return "-"
    nums = [x * scale for x in (num(v) for v in vals) if x is not None]
    other = [v for v in vals if num(v) is None]
    if not nums:
        return other[0]
    text = fmt % statistics.median(nums)
    lo, hi = min(nums), max(nums)
    if spread and len(nums) > 1 and fmt % lo != fmt % hi:
        text += " (%s–%s)" % ((fmt % lo).strip(), (fmt % hi).strip())
    if other:
        text += " [%d of %d rounds: %s]" % (len(other), len(vals), ", ".join(sorted(set(other))))
    return text


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "×%.2f" % (a / b)


# A column: (header, key or None, fmt, cell function or None, ratio?)
def col(header, key, fmt="%.2f", fn=None, ratio_ok=True, scale=1.0):
    return (header, key, fmt, fn, ratio_ok, scale)


def table(title, intro, cols, data, systems, ours="ours", spread=True):
    rows = [(k, label) for k, label in systems if k in data and values(data[k], "ran")]
    if not rows:
        return []
    lines = ["### " + title, ""]
    if intro:
        lines += [intro, ""]
    lines.append("| system | " + " | ".join(c[0] for c in cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for k, label in rows:
        d = data.get(k, {})
        cells = [fn(d) if fn else cell(d, key, fmt, spread, scale) for _, key, fmt, fn, _, scale in cols]
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    if any(k == ours for k, _ in rows):
        o = data[ours]
        for k, label in rows:
            if k == ours:
                continue
            d = data.get(k, {})
            cells = [ratio(median_of(o, key), median_of(d, key)) if (ok and key) else "-"
                     for _, key, _, _, ok, _ in cols]
            if all(c == "-" for c in cells):
                continue
            lines.append("| *%s ÷ %s* | %s |" % (ours.replace("_tls", ", tls"), label, " | ".join(cells)))
    lines.append("")
    return lines


def mib_split(level):
    def fn(d):
        s, c = median_of(d, "rss_%s_server_kb" % level), median_of(d, "rss_%s_client_kb" % level)
        if s is None or c is None:
            v = values(d, "held_%s" % level)
            return v[0] if v and num(v[0]) is None else "-"
        total = cell(d, "rss_%s_kb" % level, "%.1f", True, 1 / 1024.0)
        return "%s = %.1f + %.1f" % (total, s / 1024, c / 1024)
    return fn


def idle_per_process(d):
    s, c = median_of(d, "rss_idle_server_kb"), median_of(d, "rss_idle_client_kb")
    if s is None or c is None:
        return "-"
    return "%.1f / %.1f" % (s / 1024, c / 1024)


def burst_summary(n):
    def fn(d):
        served = median_of(d, "burst_served")
        if served is None:
            return cell(d, "burst_served", "%.0f")
        t = median_of(d, "burst_all_s")
        all_rounds = all(num(v) is not None for v in values(d, "burst_all_s"))
        if all_rounds and t is not None:
            return "%d of %d in %.1f s" % (served, n, t)
        return "%d of %d" % (served, n)
    return fn


def held_summary(n):
    def fn(d):
        held, echoed = median_of(d, "held_%d" % n), median_of(d, "echoed_%d" % n)
        if held is None:
            return cell(d, "held_%d" % n, "%.0f")
        return "%d / %d" % (held, echoed if echoed is not None else 0)
    return fn


def dedup_notes(notes):
    """One line per distinct note, naming the rounds it came from."""
    seen = {}
    for sysk, text, rnd in notes:
        seen.setdefault((sysk, text), []).append(rnd)
    out = []
    for (sysk, text), rounds in seen.items():
        rs = sorted(set(r for r in rounds if r > 0))
        where = ""
        if rs:
            where = " (round%s %s)" % ("s" if len(rs) > 1 else "", ", ".join(map(str, rs)))
        out.append((sysk, text + where))
    return out


def causes(present, tls_present):
    """Why figures differ: what each peer does differently, stated from the peers' own defaults."""
    out = [
        "Pool sizes: ours and upstream rathole keep 8 idle data channels per service ready, frp 1 "
        "(`transport.poolCount` defaults to 1); a visitor beyond the pool waits one round trip to the "
        "client for a new channel, which is most of what connection setup costs.",
        "HAProxy is a two-hop chain of plain TCP proxies: per visitor it makes one TCP connection "
        "fewer than a tunnel (hop 2 connects straight to the service, no data channel is handed "
        "over) and exchanges no handshake, so its connection setup is the bar for a tunnel's, not "
        "an equal.",
        "Connection setup on loopback: new connections from one address to one port top out near "
        "14k/s here (connect(2) needs a free ephemeral port, 28k in the range, and a port in "
        "TIME_WAIT is reused only a second after it closed). The load generator spreads its "
        "connections over 16 source addresses so this limit stays out of the direct row, but every "
        "proxy's own connections (to the service, and rathole's and ours' data channels) come from "
        "127.0.0.1, so no proxy can exceed it on this machine.",
        "Memory: RSS counts the process's own pages only. The kernel's memory per connection "
        "(socket structures, epoll and io_uring entries, pipe buffers) is not in RSS; the kernel "
        "table measures it from /proc/meminfo (Slab) and /proc/net/sockstat (TCP buffers). Idle RSS "
        "is mostly each program's own file pages (for ours, the statically linked binary): the "
        "memory table shows the anonymous part beside it.",
    ]
    if tls_present:
        out.append(
            "TLS: ours and upstream rathole open one TLS data channel per visitor (a full TLS "
            "handshake per connection, 8 made ahead in the pool), so `Connection: close` pays a "
            "handshake per request once the pool is drained; frp carries visitors as yamux streams "
            "inside its one TLS connection and pays none. With keep-alive or bulk transfer the "
            "figures compare the record layers (ours: OpenSSL through a copy relay).")
    if "rathole" in present:
        out.append(
            "Upstream rathole sets TCP_NODELAY only on its data channels (`transport.nodelay`); "
            "visitor and local sockets keep Nagle's algorithm unless a service sets `nodelay`. Ours "
            "also sets it on visitor and local sockets. With HTTP keep-alive, Nagle plus delayed ACKs "
            "holds back small writes by up to ~40 ms, which is upstream's keep-alive p99, not its "
            "relay engine.")
    if "frp" in present:
        out.append(
            "frp multiplexes every visitor connection as a yamux stream inside one TCP connection "
            "between frpc and frps (`transport.tcpMux`, on by default): no TCP handshake per visitor "
            "between the two, but one connection and one flow-control window carry all the traffic, "
            "and frps holds one fd per visitor instead of two.")
    return out


def render(tsv, out_md, chart_dir):
    data, notes, meta = load(tsv)
    derive(data, meta)
    present = [k for k, _ in SYSTEMS if k in data and values(data[k], "ran")]
    levels = [int(x) for x in meta.get("mem_levels", "1000").split()]
    hold_n = int(meta.get("hold_n", "8000"))
    burst_n = int(meta.get("burst_n", "8000"))
    rounds = int(meta.get("rounds", "1"))
    proxies = [s for s in SYSTEMS if s[0] != "direct"]

    L = []
    kind = " (quick run)" if meta.get("quick") == "1" else ("" if meta.get("full") == "1" else " (partial run)")
    L.append("# Side-by-side benchmark, %s%s" % (meta.get("date", "?"), kind))
    L.append("")
    L.append("Machine: %s. All traffic on 127.0.0.1; every system forwards visitor -> server -> client -> "
             "service on one machine, so client and server proxies share the cores with the load "
             "generators and the target services." % meta.get("machine", "?"))
    L.append("")
    if meta.get("cmd"):
        L.append("Command: `%s`%s." % (meta["cmd"].strip(), ", %s s" % meta["elapsed"] if meta.get("elapsed") else ""))
        L.append("")
    if meta.get("versions"):
        L.append("Versions: " + meta["versions"] + ".")
        L.append("")
    orders = ["%d: %s" % (r, meta["order_%d" % r].strip().replace(" ", ", "))
              for r in range(1, rounds + 1) if meta.get("order_%d" % r)]
    L.append("**%d rounds.** Each round runs every workload once per system, the systems in a different "
             "order each round (%s); each system starts fresh every round. Cells are the median of the "
             "rounds with (min–max) when they differ; `[k of n rounds: ...]` marks rounds without a "
             "number. Ratios are of medians, ours ÷ peer: above 1 is better for rates (Gbit/s, req/s, "
             "connections/s), below 1 is better for CPU, latency and memory."
             % (rounds, "; ".join(orders)))
    L.append("")

    L += table(
        "Summary", "Medians of %d rounds; spreads and the remaining figures in the tables below. "
        "Burst: visitors served of %d arriving at once (and the time until all were). Held: "
        "connections held / echoing at %d. Idle RSS per process: server / client (HAProxy: hop 1 / hop 2)."
        % (rounds, burst_n, hold_n),
        [col("TCP Gbit/s, 1 stream", "tcp1_gbps"),
         col("TCP Gbit/s, 8 streams", "tcp8_gbps"),
         col("CPU s / 10 GB, 1 stream", "tcp1_cpu"),
         col("UDP Mbit/s @500", "udp500_mbps", "%.0f", ratio_ok=False),
         col("HTTP req/s keep-alive", "http_ka_rps", "%.0f"),
         col("HTTP req/s close", "http_close_rps", "%.0f"),
         col("HTTP p99 ms keep-alive", "http_ka_p99"),
         col("new conns/s", "conn_rate", "%.0f"),
         col("burst of %d" % burst_n, "burst_served", fn=burst_summary(burst_n)),
         col("held @%d" % hold_n, None, fn=held_summary(hold_n), ratio_ok=False),
         col("bytes / conn @%d" % hold_n, "bpc_%d" % hold_n, "%.0f"),
         col("idle RSS MiB per process", "rss_idle_kb", fn=idle_per_process)],
        data, SYSTEMS, spread=False)

    L += table(
        "TCP bitrate (iperf3, %s s per run)" % meta.get("d_tcp", "?"),
        "Gbit/s received by the iperf3 server; CPU = user+system seconds of the proxy processes "
        "(server + client, or both HAProxy hops) during the run, per 10 GB (1e10 bytes) received.",
        [col("1 stream Gbit/s", "tcp1_gbps"),
         col("1 stream CPU s / 10 GB", "tcp1_cpu"),
         col("8 streams Gbit/s", "tcp8_gbps"),
         col("8 streams CPU s / 10 GB", "tcp8_cpu")],
        data, SYSTEMS)

    L += table(
        "TLS between server and client",
        "Ours and upstream rathole with `[server.transport] type = \"tls\"` (PKCS#12 identity from a "
        "throwaway CA made with openssl at run time, the client trusting that CA); frp with its "
        "defaults, i.e. TLS on (frps makes its own certificate, frpc does not verify it) and tcpMux "
        "on. Same workloads as the plain rows: iperf3 one stream (%s s), wrk -c100 (%s s)."
        % (meta.get("d_tcp", "?"), meta.get("d_http", "?")),
        [col("1 stream Gbit/s", "tcp1_gbps"),
         col("CPU s / 10 GB", "tcp1_cpu"),
         col("HTTP keep-alive req/s", "http_ka_rps", "%.0f"),
         col("p99 ms", "http_ka_p99"),
         col("HTTP close req/s", "http_close_rps", "%.0f")],
        data, TLS_SYSTEMS, ours="ours_tls")

    L += table(
        "UDP (iperf3 -u, 1400-byte datagrams, 4 MiB socket buffers, %s s per run)" % meta.get("d_udp", "?"),
        "Delivered = rate received by the iperf3 server; loss as reported by iperf3. `-w 4M` gives the "
        "iperf3 sockets 4 MiB buffers (the sysctl maximum here): with the default 208 KiB, the "
        "receiving iperf3 drops whatever arrives while it waits for a core, which on 2 shared cores "
        "measures the scheduler rather than the path. HAProxy has no UDP.",
        [c for r in meta.get("udp_rates", "500 2000").split() for c in (
            col("%s Mbit/s offered: delivered Mbit/s" % r, "udp%s_mbps" % r, "%.0f", ratio_ok=False),
            col("loss %", "udp%s_loss" % r, ratio_ok=False))],
        data, SYSTEMS)

    L += table(
        "HTTP (nginx static file, wrk -t2 -c100, %s s per run)" % meta.get("d_http", "?"),
        "keep-alive: 100 persistent connections; close: `-H \"Connection: close\"`, so every request "
        "is a new tunnelled connection. Latency percentiles from `wrk --latency`.",
        [col("keep-alive req/s", "http_ka_rps", "%.0f"),
         col("p50 ms", "http_ka_p50", "%.3f"),
         col("p99 ms", "http_ka_p99", "%.3f"),
         col("close req/s", "http_close_rps", "%.0f"),
         col("p50 ms", "http_close_p50", "%.3f"),
         col("p99 ms", "http_close_p99", "%.3f")],
        data, SYSTEMS)

    mem_cols = [col("idle RSS MiB (server + client)", "rss_idle_kb", fn=mib_split("idle")),
                col("of which anonymous MiB", "rss_idle_anon_kb", "%.1f", scale=1 / 1024.0)]
    for n in levels:
        mem_cols.append(col("RSS MiB @%d conns" % n, "rss_%d_kb" % n, fn=mib_split(n)))
        mem_cols.append(col("bytes / conn @%d" % n, "bpc_%d" % n, "%.0f"))
    L += table(
        "Memory (idle tunnelled TCP connections)",
        "RSS (VmRSS from /proc/PID/status) of the proxy processes, server + client, on processes "
        "started fresh for the round; bytes / conn = (RSS holding N - idle RSS) / N. Each connection "
        "has received the service's greeting and echoed one byte before RSS is read. RSS leaves out "
        "the kernel's memory for the same connections: see the next table. Anonymous = RssAnon: idle RSS "
        "without the program's file pages (its binary and libraries, which server and client share "
        "when they are the same program on one machine).",
        mem_cols, data, proxies)

    kern_note = ("whole-machine deltas between just before the load generator opens %d connections and "
                 "while they are held: Slab from /proc/meminfo (socket, file, epoll and io_uring "
                 "structures, pipe buffer arrays) and TCP socket buffers from /proc/net/sockstat. They "
                 "include the load generator's and the service's sockets; the direct row is exactly "
                 "those, so the proxies' own share is the difference. Other processes on the machine "
                 "move Slab too: read these as a size, not to the last KiB." % hold_n)
    L += table(
        "Kernel memory while %d connections are held" % hold_n, kern_note,
        [col("Slab delta MiB", "kern_slab_kb", "%.1f", scale=1 / 1024.0),
         col("TCP buffers delta MiB", "kern_tcpmem_kb", "%.1f", ratio_ok=False, scale=1 / 1024.0),
         col("proxies' kernel bytes / conn", "kern_bpc", "%.0f"),
         col("pipe fds held", "pipes_held", "%.0f", ratio_ok=False)],
        data, SYSTEMS)

    L += table(
        "Held connections (%d)" % hold_n,
        "`loadgen hold`: opens %d connections through the tunnel (100 being set up at a time), waits "
        "for each one's greeting from the service, then sends one byte on every one and waits for its "
        "echo. RSS per connection is server and client together." % hold_n,
        [col("held", "held_%d" % hold_n, "%.0f", ratio_ok=False),
         col("echoed", "echoed_%d" % hold_n, "%.0f", ratio_ok=False),
         col("RSS MiB (server + client)", "rss_%d_kb" % hold_n, fn=mib_split(hold_n)),
         col("RSS bytes / conn", "bpc_%d" % hold_n, "%.0f")],
        data, SYSTEMS)

    L += table(
        "Burst: %d visitors at once" % burst_n,
        "`loadgen burst`: %d connections to one service, started as fast as connect(2) returns (the "
        "connect column), each sending 8 bytes of its own and waiting for the service's greeting and "
        "exactly those 8 bytes back. Served connections stay open until the burst is over. closed: "
        "the connection ended before its echo (a proxy closed it); no answer: still waiting at the "
        "%s s deadline. The listen backlog here is %s (net.core.somaxconn), so part of any burst "
        "this size waits for SYN retransmits (1 s, 3 s, ...) even direct."
        % (burst_n, meta.get("burst_deadline", "?"), somaxconn()),
        [col("served", "burst_served", "%.0f"),
         col("closed", "burst_closed", "%.0f", ratio_ok=False),
         col("wrong bytes", "burst_wrong", "%.0f", ratio_ok=False),
         col("no answer", "burst_timeout", "%.0f", ratio_ok=False),
         col("connects took s", "burst_connect_s", ratio_ok=False),
         col("all served after s", "burst_all_s"),
         col("last answer after s", "burst_end_s")],
        data, SYSTEMS)

    L += table(
        "Connection setup (%s s, 16 in flight)" % meta.get("d_rate", "?"),
        "New tunnelled connections per second: connect, receive the service's greeting byte, send a "
        "byte, receive its echo, close. Client and service are the C load generator (`loadgen rate`, "
        "`loadgen serve`), so the direct row is the kernel's loopback, not the client.",
        [col("connections/s", "conn_rate", "%.0f")], data, SYSTEMS)

    tls_present = [k for k, _ in TLS_SYSTEMS if k in data and values(data[k], "ran")]
    L += ["### Why figures differ", ""] + ["- " + c for c in causes(present, tls_present)] + [""]

    note_lines = []
    for k, text in dedup_notes(notes):
        label = LABEL.get(k)
        note_lines.append("- %s: %s" % (label, text) if label else "- " + text)
    note_lines.append("- All proxies log at warn level (RUST_LOG=warn for both rathole builds, "
                      "log.level = \"warn\" for frp, no log section for HAProxy), so no system pays "
                      "for a log line per connection.")
    L += ["### Notes", ""] + note_lines + [""]
    text = "\n".join(L)
    with open(out_md, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    charts(data, present, levels, chart_dir, meta)


def somaxconn():
    try:
        return open("/proc/sys/net/core/somaxconn").read().strip()
    except OSError:
        return "?"


# ----------------------------------------------------------------------------------------------
# charts

def gp_value(d, key, scale=1.0):
    x = median_of(d, key)
    return "NaN" if x is None else "%g" % (x * scale)


def charts(data, present, levels, chart_dir, meta):
    if not shutil.which("gnuplot"):
        sys.stderr.write("gnuplot not found: no charts\n")
        return
    os.makedirs(chart_dir, exist_ok=True)
    tmp = os.path.join(chart_dir, ".chartdata")
    os.makedirs(tmp, exist_ok=True)
    short = {"ours": "ours", "rathole": "rathole", "frp": "frp", "haproxy": "HAProxy", "direct": "direct"}

    def write(name, header, rows):
        p = os.path.join(tmp, name)
        with open(p, "w") as f:
            f.write("# " + header + "\n")
            for r in rows:
                f.write(" ".join(r) + "\n")
        return p

    bit = write("bitrate.dat", "system tcp1 tcp8",
                [['"%s"' % short[k], gp_value(data.get(k, {}), "tcp1_gbps"), gp_value(data.get(k, {}), "tcp8_gbps")]
                 for k in present])
    http = write("http.dat", "system keepalive close",
                 [['"%s"' % short[k], gp_value(data.get(k, {}), "http_ka_rps"), gp_value(data.get(k, {}), "http_close_rps")]
                  for k in present])
    mem_sys = [k for k in present if k != "direct"]
    mem = write("memory.dat", "system idle " + " ".join("c%d" % n for n in levels),
                [['"%s"' % short[k], gp_value(data.get(k, {}), "rss_idle_kb", 1 / 1024.0)] +
                 [gp_value(data.get(k, {}), "rss_%d_kb" % n, 1 / 1024.0) for n in levels] for k in mem_sys])

    def labels(path, n, fmt):
        # value labels above the bars of a clustered histogram with n series and gap 1
        return ", ".join(
            '"%s" using ($0 + (%d - %g) / %d.0):%d:(sprintf("%s", column(%d))) with labels offset 0,0.6 '
            'font ",9" notitle' % (path, j, (n - 1) / 2.0, n + 1, j + 2, fmt, j + 2) for j in range(n))

    common = """
set terminal pngcairo size 900,500 font "sans,11"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top right
set yrange [0:*]
"""
    subtitle = "%s, median of %s rounds" % (meta.get("date", ""), meta.get("rounds", "?"))
    script = common + """
set output "{d}/latest-bitrate.png"
set title "TCP bitrate through the tunnel, iperf3 on loopback ({st})"
set ylabel "Gbit/s"
plot "{bit}" using 2:xtic(1) title "1 stream", "" using 3 title "8 streams", {bitlab}
set output "{d}/latest-http.png"
set title "HTTP through the tunnel, nginx + wrk -c100 ({st})"
set ylabel "requests/s"
plot "{http}" using 2:xtic(1) title "keep-alive", "" using 3 title "Connection: close", {httplab}
set output "{d}/latest-memory.png"
set title "RSS of server + client holding idle tunnelled connections ({st})"
set ylabel "MiB"
plot "{mem}" using 2:xtic(1) title "idle" {memcols}, {memlab}
""".format(d=chart_dir, st=subtitle, bit=bit, http=http, mem=mem,
           bitlab=labels(bit, 2, "%.1f"), httplab=labels(http, 2, "%.0f"), memlab=labels(mem, 1 + len(levels), "%.1f"),
           memcols="".join(', "" using %d title "%d conns"' % (i + 3, n) for i, n in enumerate(levels)))
    if not mem_sys:
        script = script.split('set output "%s/latest-memory.png"' % chart_dir)[0]
    gp = os.path.join(tmp, "charts.gp")
    with open(gp, "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write("gnuplot failed: %s\n" % r.stderr)
    shutil.rmtree(tmp, ignore_errors=True)


def perf_table(tsv):
    rows = {}
    for line in open(tsv):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 5:
            continue
        label, streams, gbps, cpu, rnd = parts
        d = rows.setdefault((label, streams), {})
        d.setdefault("gbps", {})[int(rnd)] = gbps
        d.setdefault("cpu", {})[int(rnd)] = cpu
    print("| system | streams | Gbit/s | CPU s / 10 GB |")
    print("|---|---|---|---|")
    for (label, streams), d in rows.items():
        print("| %s | %s | %s | %s |" % (label, streams, cell(d, "gbps", "%.2f"), cell(d, "cpu", "%.2f")))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "wrk":
        parse_wrk(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "perf":
        perf_table(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "render":
        render(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
