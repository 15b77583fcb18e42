#!/usr/bin/env bash
# Side-by-side comparison of this rathole (Swift, io_uring) with upstream rathole, frp, HAProxy and a
# direct connection, all on loopback: TCP bitrate and CPU cost, UDP delivery, HTTP rate and latency,
# held connections (memory, kernel memory, echo), a burst of visitors, connection setup rate, and a
# TLS comparison. Every workload runs in several rounds with the systems in a different order each
# round; the report gives medians with min-max. See bench/README.md.
#
# Usage: bench/run.sh [--quick] [--rounds N] [--systems LIST] [--no-build] [--scratch-path DIR]
#                     [--out DIR] [--keep]
#   --quick            short runs (1 s per measurement, 8,000 held connections only, UDP at 500
#                      Mbit/s only, no HTTP close run over TLS, 5 s burst deadline), 2 rounds
#   --rounds N         rounds (default 3, quick 2; at least 2)
#   --systems LIST     comma-separated subset of: ours,rathole,frp,haproxy,direct (default all)
#   --no-build         do not run `swift build`; use the existing .build/release/rathole
#   --scratch-path DIR Swift build directory (default .build); ours is DIR/release/rathole
#   --out DIR          where results go (default bench/results)
#   --keep             keep the work directory (logs of every process) and print its path
# Only a full run (no --quick, --rounds or --systems) writes results/latest.md, the charts and
# results/configs/; other runs write results/YYYY-MM-DD-HHMM-quick.md (ignored by git) or
# -partial.md (a targeted comparison: commit it when a figure from it is quoted).
# Environment:
#   OURS_BIN=path          use this binary for "ours" (implies --no-build)
#   RATHOLE_UPSTREAM=path  upstream rathole binary (a release build of upstream rathole)
#   FRP_DIR=dir            directory with frps and frpc (frp >= 0.52); otherwise looked up on PATH
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB="$ROOT/bench/lib"
# shellcheck source=lib/common.sh
source "$LIB/common.sh"
# shellcheck source=lib/systems.sh
source "$LIB/systems.sh"
# shellcheck source=lib/workloads.sh
source "$LIB/workloads.sh"

CMDLINE="bench/run.sh${*:+ $*}"
QUICK=0
ROUNDS=""
BUILD=1
SCRATCH="$ROOT/.build"
SELECT="direct,haproxy,frp,rathole,ours"
FULL=1
OUT="$ROOT/bench/results"
KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1; FULL=0 ;;
        --rounds) ROUNDS=$2; FULL=0; shift ;;
        --systems) SELECT=$2; FULL=0; shift ;;
        --no-build) BUILD=0 ;;
        --scratch-path) SCRATCH=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift ;;
        --out) OUT=$2; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
selected() { [[ ",$SELECT," == *",$1,"* ]]; }

if [ "$QUICK" = 1 ]; then
    D_TCP=1; D_UDP=1; D_HTTP=1; D_RATE=1; MEM_LEVELS="8000"; UDP_RATES="500"; BURST_DEADLINE=5; HOLD_TIMEOUT=15
    ROUNDS=${ROUNDS:-2}
else
    D_TCP=5; D_UDP=5; D_HTTP=5; D_RATE=3; MEM_LEVELS="1000 4000 8000"; UDP_RATES="500 2000"; BURST_DEADLINE=30; HOLD_TIMEOUT=60
    ROUNDS=${ROUNDS:-3}
fi
[ "$ROUNDS" -ge 2 ] 2>/dev/null || die "--rounds needs a number of at least 2 (medians of one sample hide the spread)"
HOLD_N=8000
BURST_N=8000
HTTP_CONNS=100

WORK=$(mktemp -d /tmp/ratholebench.XXXXXX)
on_exit() {
    cleanup_all
    if [ "$KEEP" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$OUT"
RES="$WORK/results.tsv"
: >"$RES"
ROUND=0
put() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$ROUND" >>"$RES"; }
note() { log "$1: $2"; put "$1" note "$2"; }

# ------------------------------------------------------------------------------------------------
# Tools and binaries

ensure_tool python3 python3
ensure_tool iperf3 iperf3
ensure_tool wrk wrk
ensure_tool nginx nginx-light
ensure_tool gnuplot gnuplot-nox
ensure_tool gcc gcc
ensure_tool openssl openssl
selected haproxy && ensure_tool haproxy haproxy

LOADGEN="$WORK/loadgen"
gcc -O2 -Wall -o "$LOADGEN" "$LIB/loadgen.c" || die "could not compile bench/lib/loadgen.c"

OURS=""
if selected ours; then
    if [ -n "${OURS_BIN:-}" ]; then
        OURS=$OURS_BIN
    else
        if [ "$BUILD" = 1 ]; then
            log "building ours (swift build -c release --static-swift-stdlib --product rathole)"
            (cd "$ROOT" && swift build -c release --static-swift-stdlib --product rathole --scratch-path "$SCRATCH" >&2) \
                || die "swift build failed"
        fi
        OURS="$SCRATCH/release/rathole"
    fi
    if [ ! -x "$OURS" ]; then
        note ours "skipped: no binary at $OURS (build with \`swift build -c release\`, or set OURS_BIN=path)"
        OURS=""
    fi
fi

UPSTREAM=""
if selected rathole; then
    if [ -n "${RATHOLE_UPSTREAM:-}" ] && [ -x "${RATHOLE_UPSTREAM}" ]; then
        UPSTREAM=$RATHOLE_UPSTREAM
    else
        note rathole "skipped: not installed (set RATHOLE_UPSTREAM=/path/to/rathole, a release binary of upstream rathole)"
    fi
fi

FRPS=""; FRPC=""
if selected frp; then
    if [ -n "${FRP_DIR:-}" ] && [ -x "$FRP_DIR/frps" ] && [ -x "$FRP_DIR/frpc" ]; then
        FRPS="$FRP_DIR/frps"; FRPC="$FRP_DIR/frpc"
    elif command -v frps >/dev/null 2>&1 && command -v frpc >/dev/null 2>&1; then
        FRPS=$(command -v frps); FRPC=$(command -v frpc)
    fi
    if [ -z "$FRPS" ]; then
        note frp "skipped: not installed (put frps and frpc, frp >= 0.52, on PATH or set FRP_DIR=dir holding them)"
    else
        v=$("$FRPS" --version 2>/dev/null | head -n1 | tr -d 'v' || true)
        if ! "$PY" -c 'import sys; v=[int(x) for x in sys.argv[1].split(".")[:2]]; sys.exit(0 if v>=[0,52] else 1)' "$v" 2>/dev/null; then
            note frp "skipped: frp $v found, but its TOML configs need frp >= 0.52"
            FRPS=""; FRPC=""
        fi
    fi
fi

SYSTEMS=()
for sys in direct haproxy frp rathole ours; do
    selected "$sys" || continue
    case $sys in
        ours) [ -n "$OURS" ] || continue ;;
        rathole) [ -n "$UPSTREAM" ] || continue ;;
        frp) [ -n "$FRPS" ] || continue ;;
    esac
    SYSTEMS+=("$sys")
done
[ "${#SYSTEMS[@]}" -gt 0 ] || die "no system to run"

version_of() { timeout 3 "$@" 2>&1 | head -n1 | tr -d '\r' || true; }
VERSIONS="iperf3 $(iperf3 --version | awk 'NR==1{print $2}'), $(nginx -v 2>&1 | sed 's/.*version: //'), wrk $( (wrk -v 2>&1 || true) | awk 'NR==1{print $2}'), $(gcc --version | head -n1) for the load generator"
selected haproxy && VERSIONS+=", HAProxy $(haproxy -v | awk 'NR==1{print $3}')"
[ -n "$FRPS" ] && VERSIONS+=", frp $(version_of "$FRPS" --version)"
[ -n "$UPSTREAM" ] && VERSIONS+=", upstream rathole: $(version_of "$UPSTREAM" --version)"
if [ -n "$OURS" ]; then
    VERSIONS+=", ours: $(version_of "$OURS" --version) (commit $(ours_commit "$ROOT"))"
fi

put _meta date "$(date '+%Y-%m-%d %H:%M')"
put _meta quick "$QUICK"
put _meta full "$FULL"
put _meta rounds "$ROUNDS"
put _meta cmd "$CMDLINE"
put _meta machine "$(machine_line)"
put _meta versions "$VERSIONS"
put _meta d_tcp "$D_TCP"; put _meta d_udp "$D_UDP"; put _meta d_http "$D_HTTP"; put _meta d_rate "$D_RATE"
put _meta mem_levels "$MEM_LEVELS"; put _meta hold_n "$HOLD_N"; put _meta burst_n "$BURST_N"
put _meta burst_deadline "$BURST_DEADLINE"; put _meta udp_rates "$UDP_RATES"

# Throwaway TLS material for the TLS transport of ours and upstream rathole.
CERTS="$WORK/certs"
CERT_PASS=bench
if selected ours || selected rathole; then
    sh "$ROOT/Tests/ControlPlaneTests/Fixtures/make-test-certs.sh" "$CERTS" "$CERT_PASS" >"$WORK/certs.log" 2>&1 \
        || die "make-test-certs.sh failed: $(tail -n 3 "$WORK/certs.log")"
fi

# ------------------------------------------------------------------------------------------------
# Backends: iperf3 server (TCP and UDP on one port), nginx, the holder service (loadgen serve)

read -r B_IPERF B_HTTP B_HOLD <<<"$(free_ports 3)"

IPERF_PID=""
start_iperf_server() {
    [ -n "$IPERF_PID" ] && stop_pids "$IPERF_PID"
    start_bg "$WORK/iperf3-server.log" iperf3 -s -B 127.0.0.1 -p "$B_IPERF"
    IPERF_PID=$BG_PID
    wait_listen "$B_IPERF" tcp 10 "$IPERF_PID" || die "iperf3 server did not start"
}
start_iperf_server

NG="$WORK/nginx"
chmod 755 "$WORK"
nginx_static "$NG" "$B_HTTP"
mkdir -p "$WORK/configs/nginx"
cp "$NG/nginx.conf" "$WORK/configs/nginx/nginx.conf"
start_bg "$WORK/nginx.log" nginx -c "$NG/nginx.conf" -p "$NG"
NGINX_PID=$BG_PID
wait_listen "$B_HTTP" tcp 10 "$NGINX_PID" || die "nginx did not start: $(cat "$NG/error.log" "$WORK/nginx.log" 2>/dev/null | tail -n 3)"

start_bg "$WORK/holder-server.log" "$LOADGEN" serve "$B_HOLD"
HOLDSRV_PID=$BG_PID
wait_listen "$B_HOLD" tcp 10 "$HOLDSRV_PID" || die "holder service did not start"

# ------------------------------------------------------------------------------------------------
# Rounds

# restart_if_dead SYS WHAT: restart the plain instance when a proxy process died during WHAT.
restart_if_dead() {
    instance_alive && return 0
    note "$1" "a proxy process exited during $2; restarted it for the next workloads"
    stop_instance
    start_instance "$1" plain || { note "$1" "restart failed: $INST_ERR"; return 1; }
}

# run_plain SYS: every workload on one fresh instance with the plain transport. Held connections
# come first, so idle RSS is that of fresh processes; the burst comes last, so a system that does
# not recover from it well does not taint the other figures.
run_plain() {
    local sys=$1
    put "$sys" ran 1
    if ! start_instance "$sys" plain; then
        note "$sys" "the tunnel did not come up: $INST_ERR"
        stop_instance
        return 0
    fi
    mem_run "$sys" || true
    restart_if_dead "$sys" "the held connections" || { stop_instance; return 0; }
    iperf_tcp "$sys" 1 tcp1
    iperf_tcp "$sys" 8 tcp8
    restart_if_dead "$sys" "the TCP bitrate test" || { stop_instance; return 0; }
    udp_runs "$sys"
    restart_if_dead "$sys" "the UDP test" || { stop_instance; return 0; }
    http_run "$sys" http_ka
    http_run "$sys" http_close -H "Connection: close"
    restart_if_dead "$sys" "the HTTP test" || { stop_instance; return 0; }
    rate_run "$sys"
    restart_if_dead "$sys" "the connection setup test" || { stop_instance; return 0; }
    burst_run "$sys"
    instance_alive || note "$sys" "a proxy process exited during the burst"
    stop_instance
}

# run_tls SYS: the TLS comparison (ours and upstream rathole with transport "tls", frp's default).
run_tls() {
    local sys=$1 key="$1_tls"
    put "$key" ran 1
    if ! start_instance "$sys" tls; then
        note "$key" "the TLS tunnel did not come up: $INST_ERR"
        stop_instance
        return 0
    fi
    iperf_tcp "$key" 1 tcp1
    http_run "$key" http_ka
    [ "$QUICK" = 1 ] || http_run "$key" http_close -H "Connection: close"
    instance_alive || note "$key" "a proxy process exited during the TLS workloads"
    stop_instance
}

START=$(date +%s)
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    order=$(round_order "$ROUND" "${SYSTEMS[@]}")
    put _meta "order_$ROUND" "$order"
    log "=== round $ROUND of $ROUNDS: $order"
    for sys in $order; do
        log "--- round $ROUND: $sys"
        run_plain "$sys"
        case $sys in ours|rathole|frp) run_tls "$sys" ;; esac
    done
done
ROUND=0
if [ -n "$FRPS" ]; then
    note frp "frp's plain rows ran with transport.tls.enable = false; its TLS row with its defaults (TLS on since frp 0.50, with a certificate frps generates and frpc does not verify). Both with transport.tcpMux = true (its default): all visitor connections are yamux streams inside one TCP connection between frpc and frps"
fi
put _meta elapsed "$(( $(date +%s) - START ))"

# ------------------------------------------------------------------------------------------------
# Report

STAMP=$(date +%Y-%m-%d-%H%M)
if [ "$FULL" = 1 ]; then
    REPORT="$OUT/$STAMP.md"
    CHARTS="$OUT"
else
    REPORT="$OUT/$STAMP-$([ "$QUICK" = 1 ] && echo quick || echo partial).md"
    CHARTS="$WORK/charts"
fi
"$PY" "$LIB/report.py" render "$RES" "$REPORT" "$CHARTS"
if [ "$FULL" = 1 ]; then
    cp "$REPORT" "$OUT/latest.md"
    rm -rf "$OUT/configs"
    cp -r "$WORK/configs" "$OUT/configs"
    log "results: $REPORT (and latest.md), charts: $OUT/latest-*.png, configs: $OUT/configs/"
else
    log "results: $REPORT (not a full run: latest.md, the charts and configs/ are left as they were)"
fi
log "the run took $(( $(date +%s) - START )) s"
