#!/usr/bin/env bash
# What one tunnelled connection costs, and where: HTTP with `Connection: close` (wrk -t2 -c100 against
# nginx) and new connections per second (bench's C load generator, `loadgen rate`, 16 in flight,
# against its greeting echo service), through ours (server + client, release build) and the two-hop
# HAProxy chain, optionally also through a second build of ours (--baseline, an A/B of two commits).
# Per system and workload: the rate, the CPU per connection of each process (front = our server or
# HAProxy hop 1, back = our client or hop 2), the TCP segments sent per connection on the whole
# machine (nstat TcpOutSegs; load generator and service included, the same for every system) and the
# context switches per connection of the proxy processes (all threads). Rounds rotate the order,
# every system starts fresh each round; cells are median (min–max). Written to
# perf/results/connections-YYYY-MM-DD-HHMM.md and stdout.
#
# Usage: perf/connections.sh [--quick] [--rounds N] [--duration S] [--no-build] [--scratch-path DIR]
#                            [--baseline BIN] [--out DIR]
#   --quick            2 rounds of 2 s runs (default: 3 rounds of 5 s)
#   --rounds N         rounds (at least 2)
#   --duration S       seconds per run
#   --no-build         do not run `swift build`; use the existing binary
#   --scratch-path DIR build directory of the Swift package (default .build); the binary is
#                      DIR/release/rathole
#   --baseline BIN     also run this rathole binary (another commit of ours, or upstream rathole), as
#                      "baseline"
#   --out DIR          results directory (default perf/results)
# --quick runs are named -quick.md (ignored by git: a check); runs with --rounds or --duration
# -partial.md (a targeted comparison: commit it when a figure from it is quoted).
# Environment: RATHOLE_BIN=/path/to/rathole overrides the binary (implies --no-build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

CMDLINE="perf/connections.sh${*:+ $*}"
DURATION=5
ROUNDS=3
BUILD=1
SCRATCH="$ROOT/.build"
BASELINE=""
OUT="$ROOT/perf/results"
SUFFIX=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) DURATION=2; ROUNDS=2; SUFFIX=-quick ;;
        --rounds) ROUNDS=$2; SUFFIX=${SUFFIX:--partial}; shift ;;
        --duration) DURATION=$2; SUFFIX=${SUFFIX:--partial}; shift ;;
        --no-build) BUILD=0 ;;
        --scratch-path) SCRATCH=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift ;;
        --baseline) BASELINE=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
[ "$ROUNDS" -ge 2 ] 2>/dev/null || die "--rounds needs a number of at least 2"
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || die "--baseline $BASELINE is not an executable"

WORK=$(mktemp -d /tmp/connections.XXXXXX)
trap 'cleanup_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

ensure_tool wrk wrk
ensure_tool nginx nginx-light
ensure_tool haproxy haproxy
ensure_tool nstat iproute2
ensure_tool gcc gcc

BIN=$(rathole_binary "$ROOT" "$SCRATCH" "$BUILD") || exit 1
LOADGEN="$WORK/loadgen"
gcc -O2 -o "$LOADGEN" "$ROOT/bench/lib/loadgen.c" || die "cannot build the load generator"

MACHINE=$(machine_line)
# nginx, the echo service, our control port and entry ports, HAProxy's entry and middle ports.
read -r P_NGINX P_ECHO P_CTL P_HTTP P_RATE H_HTTP H_RATE M_HTTP M_RATE <<<"$(free_ports 9)"

chmod 755 "$WORK"
nginx_static "$WORK/nginx" "$P_NGINX"
start_bg "$WORK/nginx.log" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx"
wait_listen "$P_NGINX" tcp 10 "$BG_PID" || die "nginx did not start: $(tail -n 2 "$WORK/nginx/error.log" "$WORK/nginx.log")"
start_bg "$WORK/echo.log" "$LOADGEN" serve "$P_ECHO"
wait_listen "$P_ECHO" tcp 10 "$BG_PID" || die "the echo service did not start"

cat >"$WORK/server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:$P_CTL"
[server.services.http]
token = "perf-http"
bind_addr = "127.0.0.1:$P_HTTP"
[server.services.rate]
token = "perf-rate"
bind_addr = "127.0.0.1:$P_RATE"
EOF
cat >"$WORK/client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:$P_CTL"
[client.services.http]
token = "perf-http"
local_addr = "127.0.0.1:$P_NGINX"
[client.services.rate]
token = "perf-rate"
local_addr = "127.0.0.1:$P_ECHO"
EOF
haproxy_hop_cfg "$WORK/hop1.cfg" "$H_HTTP:$M_HTTP $H_RATE:$M_RATE"
haproxy_hop_cfg "$WORK/hop2.cfg" "$M_HTTP:$P_NGINX $M_RATE:$P_ECHO"

# switches PID...: voluntary + involuntary context switches of every thread of the processes.
switches() {
    local p
    for p in "$@"; do cat /proc/"$p"/task/*/status 2>/dev/null || true; done \
        | awk '/^(nonvoluntary_|voluntary_)ctxt_switches/ { s += $2 } END { print s + 0 }'
}

RES="$WORK/results.tsv"
: >"$RES"
ROUND=0
# measure SYSTEM WORKLOAD PORT FRONT BACK: one run; records rate and per-connection costs.
measure() {
    local sys=$1 workload=$2 port=$3 front=$4 back=$5 f0 b0 s0 f1 b1 s1 count segs out
    nstat -n >/dev/null
    f0=$(cpu_ticks "$front"); b0=$(cpu_ticks "$back"); s0=$(switches "$front" "$back")
    if [ "$workload" = http_close ]; then
        out=$(timeout $((DURATION + 20)) wrk -t2 -c100 -d"${DURATION}s" --timeout 5s -H "Connection: close" \
            "http://127.0.0.1:$port/index.html" 2>&1 || true)
        count=$(awk '/requests in/ { print $1 }' <<<"$out")
    else
        out=$(timeout $((DURATION + 20)) "$LOADGEN" rate "$port" "$DURATION" 16 2>&1 || true)
        count=$(awk '$1 == "rate" { print $4 }' <<<"$out")
    fi
    f1=$(cpu_ticks "$front"); b1=$(cpu_ticks "$back"); s1=$(switches "$front" "$back")
    segs=$(nstat -z TcpOutSegs 2>/dev/null | awk '$1 == "TcpOutSegs" { print $2 }')
    if [ -z "$count" ] || [ "$count" = 0 ]; then
        log "round $ROUND: $sys, $workload: no connection completed: $(tail -n 2 <<<"$out")"
        return 0
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" "$workload" "$ROUND" "$count" "$DURATION" \
        "$((f1 - f0))" "$((b1 - b0))" "${segs:-0}" "$((s1 - s0))" >>"$RES"
    log "round $ROUND: $sys, $workload: $((count / DURATION))/s"
}

# run_system SYSTEM: a fresh instance, both workloads, then stop it.
run_system() {
    local sys=$1 front back bin=$BIN
    if [ "$sys" = haproxy ]; then
        start_bg "$WORK/hop1.log" haproxy -db -f "$WORK/hop1.cfg"; front=$BG_PID
        start_bg "$WORK/hop2.log" haproxy -db -f "$WORK/hop2.cfg"; back=$BG_PID
        wait_listen "$H_HTTP" tcp 10 "$front" && wait_listen "$M_RATE" tcp 10 "$back" || die "haproxy did not start"
        measure haproxy http_close "$H_HTTP" "$front" "$back"
        measure haproxy rate "$H_RATE" "$front" "$back"
    else
        [ "$sys" = baseline ] && bin=$BASELINE
        RUST_LOG=warn start_bg "$WORK/server-$sys.log" "$bin" "$WORK/server.toml"; front=$BG_PID
        RUST_LOG=warn start_bg "$WORK/client-$sys.log" "$bin" "$WORK/client.toml"; back=$BG_PID
        wait_listen "$P_RATE" tcp 10 "$front" || die "$sys: the server did not start"
        "$LOADGEN" probe "$P_HTTP" http 10 >/dev/null && "$LOADGEN" probe "$P_RATE" greet 10 >/dev/null \
            || die "$sys: the tunnel does not answer: $(tail -n 2 "$WORK/client-$sys.log")"
        measure "$sys" http_close "$P_HTTP" "$front" "$back"
        measure "$sys" rate "$P_RATE" "$front" "$back"
    fi
    stop_pids "$front" "$back"
    wait_port_free "$P_HTTP" 5; wait_port_free "$P_CTL" 5; wait_port_free "$H_HTTP" 5
}

SYSTEMS=(ours haproxy)
[ -n "$BASELINE" ] && SYSTEMS=(ours baseline haproxy)
ORDERS=()
START=$(date +%s)
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    order=$(round_order "$ROUND" "${SYSTEMS[@]}")
    ORDERS+=("$ROUND: $(echo "${order% }" | sed "s/ /, /g")")
    for s in $order; do run_system "$s"; done
done

STAMP=$(date +%Y-%m-%d-%H%M)
mkdir -p "$OUT"
REPORT="$OUT/connections-$STAMP$SUFFIX.md"
{
    echo "# What a tunnelled connection costs, $(date '+%Y-%m-%d %H:%M')"
    echo
    echo "Written by \`perf/connections.sh\`: HTTP \`Connection: close\` (wrk -t2 -c100, nginx static file of 1 KiB, as bench/run.sh) and new connections/s (\`loadgen rate\`, 16 in flight: connect, greeting byte, one byte echoed, close) through each system on 127.0.0.1. Front = our server or HAProxy hop 1, back = our client or hop 2. CPU: user+system time of the process during the run, per connection. Segments: TCP segments sent on the whole machine per connection (nstat TcpOutSegs: the load generator's and the service's included). Switches: context switches of the two proxy processes (all threads) per connection."
    echo
    echo "Command: \`$CMDLINE\`, $(( $(date +%s) - START )) s. Machine: $MACHINE."
    echo
    echo "Versions: $(nginx -v 2>&1 | cut -d' ' -f3), wrk $(wrk -v 2>&1 | awk 'NR==1{print $2}'), HAProxy $(haproxy -v | awk 'NR==1{print $3}'), ours: $("$BIN" --version 2>&1 | head -n1) (commit $(ours_commit "$ROOT"))$([ -z "$BASELINE" ] || echo ", baseline: $("$BASELINE" --version 2>&1 | head -n1) ($BASELINE)")."
    echo
    echo "**$ROUNDS rounds** of ${DURATION} s per run, the systems in a different order each round ($(IFS=';'; echo "${ORDERS[*]}" | sed 's/;/; /g')), each started fresh every round. Cells: median (min–max) of the rounds."
    echo
    "$PY" - "$RES" "$CLK_TCK" <<'PY'
import collections, statistics, sys

rows = collections.defaultdict(lambda: collections.defaultdict(list))
tck = float(sys.argv[2])
for line in open(sys.argv[1]):
    sysname, workload, _round, count, secs, front, back, segs, switches = line.rstrip("\n").split("\t")
    n = float(count)
    r = rows[(workload, sysname)]
    r["rate"].append(n / float(secs))
    r["front"].append(float(front) / tck * 1000 / n)
    r["back"].append(float(back) / tck * 1000 / n)
    r["total"].append((float(front) + float(back)) / tck * 1000 / n)
    r["segs"].append(float(segs) / n)
    r["switches"].append(float(switches) / n)

def cell(values, digits):
    m = statistics.median(values)
    lo, hi = min(values), max(values)
    fmt = "%%.%df" % digits
    if fmt % lo == fmt % hi:
        return fmt % m
    return (fmt % m) + " (" + (fmt % lo) + "–" + (fmt % hi) + ")"

titles = {"http_close": ("HTTP `Connection: close`", "req/s"), "rate": ("New connections", "conns/s")}
names = {"ours": "ours", "baseline": "baseline", "haproxy": "HAProxy (two hops, splice)"}
for workload in ("http_close", "rate"):
    title, unit = titles[workload]
    present = [s for s in ("ours", "baseline", "haproxy") if (workload, s) in rows]
    if not present:
        continue
    print("### " + title)
    print()
    print("| system | %s | CPU ms / conn, front | back | front + back | segments / conn | switches / conn |" % unit)
    print("|---|---|---|---|---|---|---|")
    for s in present:
        r = rows[(workload, s)]
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            names[s], cell(r["rate"], 0), cell(r["front"], 4), cell(r["back"], 4), cell(r["total"], 4),
            cell(r["segs"], 1), cell(r["switches"], 2)))
    print()
PY
} >"$REPORT"
echo
cat "$REPORT"
log "written to $REPORT"
