#!/usr/bin/env python3
"""Parsing and reporting for bench/run.sh (stdlib only).

  report.py wrk FILE
      parse wrk --latency output; prints "REQ_PER_S P50_MS P99_MS ERRORS" (n/a when missing)
  report.py render RESULTS.tsv OUT.md CHART_DIR
      RESULTS.tsv holds lines "system<TAB>key<TAB>value" (system "_meta" for run facts, key "note"
      for free text). Writes the markdown report to OUT.md and stdout, and gnuplot charts
      (latest-bitrate, latest-http, latest-memory) to CHART_DIR.
"""
import math
import os
import re
import shutil
import subprocess
import sys

SYSTEMS = [  # key, label
    ("ours", "ours (Swift, io_uring)"),
    ("rathole", "rathole (upstream)"),
    ("frp", "frp"),
    ("haproxy", "HAProxy (splice)"),
    ("direct", "direct (no proxy)"),
]
PEERS = ["rathole", "frp", "haproxy", "direct"]


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
# report

def load(path):
    data, notes, meta = {}, {}, {}
    for line in open(path):
        line = line.rstrip("\n")
        if not line:
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            continue
        sysk, key, val = parts
        if sysk == "_meta":
            meta[key] = val
        elif key == "note":
            notes.setdefault(sysk, []).append(val)
        else:
            data.setdefault(sysk, {})[key] = val
    return data, notes, meta


def num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def cell(d, key, fmt="%.2f"):
    v = d.get(key)
    if v is None:
        return "-"
    x = num(v)
    return fmt % x if x is not None else v


def ratio(a, b):
    a, b = num(a), num(b)
    if a is None or b is None or b == 0:
        return "-"
    return "×%.2f" % (a / b)


def mib(kb):
    x = num(kb)
    return None if x is None else x / 1024.0


def derive(d):
    """Computed figures: total RSS and bytes per connection for each held level."""
    out = dict(d)
    idle = num(d.get("rss_idle_server_kb")), num(d.get("rss_idle_client_kb"))
    if None not in idle:
        out["rss_idle_mib"] = "%.1f" % ((idle[0] + idle[1]) / 1024)
    for key in list(d):
        m = re.match(r"rss_(\d+)_server_kb$", key)
        if not m:
            continue
        n = int(m.group(1))
        s, c = num(d.get(key)), num(d.get("rss_%d_client_kb" % n))
        if s is None or c is None:
            continue
        out["rss_%d_mib" % n] = "%.1f" % ((s + c) / 1024)
        if None not in idle:
            out["bpc_%d" % n] = "%.0f" % (((s + c) - (idle[0] + idle[1])) * 1024 / n)
    return out


def split_rss(d, level):
    s, c = mib(d.get("rss_%s_server_kb" % level)), mib(d.get("rss_%s_client_kb" % level))
    if s is None or c is None:
        if "n/a" in (d.get("rss_%s_server_kb" % level), d.get("rss_%s_client_kb" % level)):
            return "n/a"
        return d.get("rss_%s_mib" % level, "-")
    return "%.1f (%.1f + %.1f)" % (s + c, s, c)


def table(title, intro, cols, rows_data, present, ratio_ok=True):
    """cols: list of (header, key, fmt, cell_fn or None)."""
    lines = ["### " + title, ""]
    if intro:
        lines += [intro, ""]
    lines.append("| system | " + " | ".join(c[0] for c in cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for k, label in SYSTEMS:
        if k not in present:
            continue
        d = rows_data.get(k, {})
        cells = []
        for header, key, fmt, fn in cols:
            cells.append(fn(d) if fn else cell(d, key, fmt))
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    if ratio_ok and "ours" in present:
        ours = rows_data.get("ours", {})
        for p in PEERS:
            if p not in present:
                continue
            d = rows_data.get(p, {})
            cells = [ratio(ours.get(key), d.get(key)) for _, key, _, _ in cols]
            if all(c == "-" for c in cells):
                continue
            lines.append("| *ours ÷ %s* | %s |" % (dict(SYSTEMS)[p], " | ".join(cells)))
    lines.append("")
    return lines


def render(tsv, out_md, chart_dir):
    raw, notes, meta = load(tsv)
    data = {k: derive(v) for k, v in raw.items()}
    present = [k for k, _ in SYSTEMS if raw.get(k, {}).get("ran") == "1"]
    levels = [int(x) for x in meta.get("mem_levels", "1000").split()]
    top = max(levels)

    L = []
    L.append("# Side-by-side benchmark, %s%s" % (meta.get("date", "?"), " (quick run)" if meta.get("quick") == "1" else ""))
    L.append("")
    L.append("Machine: %s. All traffic on 127.0.0.1; every system forwards visitor -> server -> client -> "
             "service on one machine, so client and server proxies share the cores with the load "
             "generator and the target service." % meta.get("machine", "?"))
    L.append("")
    if meta.get("cmd"):
        L.append("Command: `%s`%s." % (meta["cmd"].strip(), ", %s s" % meta["elapsed"] if meta.get("elapsed") else ""))
        L.append("")
    if meta.get("versions"):
        L.append("Versions: " + meta["versions"] + ".")
        L.append("")
    L.append("Ratios are ours ÷ peer: above 1 is better for rates (Gbit/s, req/s, connections/s), "
             "below 1 is better for CPU, latency and memory.")
    L.append("")

    # Summary
    L += table(
        "Summary", "One row per system; details and the remaining figures in the tables below.",
        [("TCP Gbit/s, 1 stream", "tcp1_gbps", "%.2f", None),
         ("TCP Gbit/s, 8 streams", "tcp8_gbps", "%.2f", None),
         ("CPU s / 10 GB, 1 stream", "tcp1_cpu", "%.2f", None),
         ("UDP delivered Mbit/s @500", "udp500_mbps", "%.0f", None),
         ("HTTP req/s keep-alive", "http_ka_rps", "%.0f", None),
         ("HTTP req/s close", "http_close_rps", "%.0f", None),
         ("HTTP p99 ms keep-alive", "http_ka_p99", "%.2f", None),
         ("bytes / idle conn @%d" % top, "bpc_%d" % top, "%.0f", None),
         ("new conns/s", "conn_rate", "%.0f", None)],
        data, present)

    L += table(
        "TCP bitrate (iperf3, %s s per run)" % meta.get("d_tcp", "?"),
        "Gbit/s received by the iperf3 server; CPU = user+system seconds of the proxy processes "
        "(server + client, or both HAProxy hops) during the run, per 10 GB (1e10 bytes) received.",
        [("1 stream Gbit/s", "tcp1_gbps", "%.2f", None),
         ("1 stream CPU s / 10 GB", "tcp1_cpu", "%.2f", None),
         ("8 streams Gbit/s", "tcp8_gbps", "%.2f", None),
         ("8 streams CPU s / 10 GB", "tcp8_cpu", "%.2f", None)],
        data, present)

    L += table(
        "UDP (iperf3 -u, 1400-byte datagrams, 4 MiB socket buffers, %s s per run)" % meta.get("d_udp", "?"),
        "Delivered = rate received by the iperf3 server; loss as reported by iperf3. `-w 4M` gives the "
        "iperf3 sockets 4 MiB buffers (the sysctl maximum here): with the default 208 KiB, the "
        "receiving iperf3 drops whatever arrives while it waits for a core, which on 2 shared cores "
        "measures the scheduler rather than the path.",
        [("500 Mbit/s offered: delivered Mbit/s", "udp500_mbps", "%.0f", None),
         ("loss %", "udp500_loss", "%.2f", None),
         ("2 Gbit/s offered: delivered Mbit/s", "udp2000_mbps", "%.0f", None),
         ("loss %", "udp2000_loss", "%.2f", None)],
        data, present, ratio_ok=False)

    L += table(
        "HTTP (nginx static file, wrk -t2 -c100, %s s per run)" % meta.get("d_http", "?"),
        "keep-alive: 100 persistent connections; close: `-H \"Connection: close\"`, so every request "
        "is a new tunnelled connection. Latency percentiles from `wrk --latency`.",
        [("keep-alive req/s", "http_ka_rps", "%.0f", None),
         ("p50 ms", "http_ka_p50", "%.3f", None),
         ("p99 ms", "http_ka_p99", "%.3f", None),
         ("close req/s", "http_close_rps", "%.0f", None),
         ("p50 ms", "http_close_p50", "%.3f", None),
         ("p99 ms", "http_close_p99", "%.3f", None)],
        data, present)

    mem_cols = [("idle RSS MiB (server + client)", "rss_idle_mib", "%.1f", lambda d: split_rss(d, "idle"))]
    for n in levels:
        mem_cols.append(("RSS MiB @%d conns" % n, "rss_%d_mib" % n, "%.1f", (lambda n: lambda d: split_rss(d, n))(n)))
        mem_cols.append(("bytes / conn @%d" % n, "bpc_%d" % n, "%.0f", None))
    L += table(
        "Memory (idle tunnelled TCP connections)",
        "RSS from /proc/PID/status of the proxy processes, on freshly started processes; bytes per "
        "connection = (RSS holding N - idle RSS) / N, server and client together. Each connection is "
        "established end to end (the service's greeting byte has come back) before RSS is read.",
        mem_cols, {k: v for k, v in data.items() if k != "direct"},
        [k for k in present if k != "direct"])

    L += table(
        "Connection setup (%s s, 16 in flight)" % meta.get("d_rate", "?"),
        "New tunnelled connections per second: connect, receive the service's greeting byte, send a "
        "byte, receive its echo, close (Python client, so direct is bounded by the client itself).",
        [("connections/s", "conn_rate", "%.0f", None)], data, present)

    # Notes
    note_lines = []
    for k, label in SYSTEMS:
        for n in notes.get(k, []):
            note_lines.append("- %s: %s" % (label, n))
    for n in notes.get("_all", []):
        note_lines.append("- " + n)
    if note_lines:
        L += ["### Notes", ""] + note_lines + [""]
    text = "\n".join(L)
    with open(out_md, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    charts(data, present, levels, chart_dir, meta)


def gp_value(d, key, scale=1.0):
    x = num(d.get(key))
    return "NaN" if x is None else "%g" % (x * scale)


def charts(data, present, levels, chart_dir, meta):
    if not shutil.which("gnuplot"):
        sys.stderr.write("gnuplot not found: no charts\n")
        return
    os.makedirs(chart_dir, exist_ok=True)
    tmp = os.path.join(chart_dir, ".chartdata")
    os.makedirs(tmp, exist_ok=True)
    labels = dict(SYSTEMS)
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
                [['"%s"' % short[k], gp_value(data.get(k, {}), "rss_idle_mib")] +
                 [gp_value(data.get(k, {}), "rss_%d_mib" % n) for n in levels] for k in mem_sys])
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
    subtitle = meta.get("date", "") + (" (quick)" if meta.get("quick") == "1" else "")
    script = common + """
set output "{d}/latest-bitrate.png"
set title "TCP bitrate through the tunnel, iperf3 on loopback {st}"
set ylabel "Gbit/s"
plot "{bit}" using 2:xtic(1) title "1 stream", "" using 3 title "8 streams", {bitlab}
set output "{d}/latest-http.png"
set title "HTTP through the tunnel, nginx + wrk -c100 {st}"
set ylabel "requests/s"
plot "{http}" using 2:xtic(1) title "keep-alive", "" using 3 title "Connection: close", {httplab}
set output "{d}/latest-memory.png"
set title "RSS of server + client holding idle tunnelled connections {st}"
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


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "wrk":
        parse_wrk(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "render":
        render(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
