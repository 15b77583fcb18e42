#!/usr/bin/env bash
# Zero-copy relay benchmark: iperf3 through two relays in a row on loopback, as a tunnel uses them
# (iperf3 -c -> hop1 -> hop2 -> iperf3 -s), beside a direct connection and two chained HAProxy
# processes with splice. Runs in rounds, the systems in a different order each round, and writes a
# markdown table (system | streams | Gbit/s | CPU s per 10 GB, median and min-max of the rounds) to
# perf/results/relay-YYYY-MM-DD-HHMM.md and stdout. See perf/README.md.
#
# Usage: perf/relay.sh [--quick] [--rounds N] [--duration S] [--no-build] [--scratch-path DIR]
#                      [--threads N] [--only LIST] [--pipesize BYTES] [--out DIR]
#   --quick            2 rounds of 2 s runs (default: 3 rounds of 5 s)
#   --rounds N         rounds (at least 2)
#   --duration S       seconds per iperf3 run
#   --no-build         do not run `swift build`; use the existing binary
#   --scratch-path DIR build directory of the Swift package (default .build); the binary is
#                      DIR/release/relaybench
#   --threads N        worker threads per relaybench process (default 1, like HAProxy's nbthread 1)
#   --only LIST        comma-separated subset of: direct,haproxy,splice,copy (default all)
#   --pipesize BYTES   HAProxy tune.pipesize (default 262144)
#   --out DIR          results directory (default perf/results)
# --quick runs are named -quick.md (ignored by git: a check); runs with other non-default options
# -partial.md (a targeted comparison: commit it when a figure from it is quoted).
# Environment: RELAYBENCH=/path/to/relaybench overrides the binary (implies --no-build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

CMDLINE="perf/relay.sh${*:+ $*}"
DURATION=5
ROUNDS=3
BUILD=1
SCRATCH="$ROOT/.build"
THREADS=1
ONLY="direct,haproxy,splice,copy"
PIPESIZE=262144
OUT="$ROOT/perf/results"
SUFFIX=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) DURATION=2; ROUNDS=2; SUFFIX=-quick ;;
        --rounds) ROUNDS=$2; SUFFIX=${SUFFIX:--partial}; shift ;;
        --duration) DURATION=$2; SUFFIX=${SUFFIX:--partial}; shift ;;
        --no-build) BUILD=0 ;;
        --scratch-path) SCRATCH=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift ;;
        --threads) THREADS=$2; SUFFIX=${SUFFIX:--partial}; shift ;;
        --only) ONLY=$2; SUFFIX=${SUFFIX:--partial}; shift ;;
        --pipesize) PIPESIZE=$2; SUFFIX=${SUFFIX:--partial}; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
[ "$ROUNDS" -ge 2 ] 2>/dev/null || die "--rounds needs a number of at least 2"
want() { [[ ",$ONLY," == *",$1,"* ]]; }

WORK=$(mktemp -d /tmp/relaybench.XXXXXX)
trap 'cleanup_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

ensure_tool iperf3 iperf3
want haproxy && ensure_tool haproxy haproxy

RB=${RELAYBENCH:-$SCRATCH/release/relaybench}
if want splice || want copy; then
    if [ -n "${RELAYBENCH:-}" ]; then BUILD=0; fi
    if [ "$BUILD" = 1 ]; then
        log "building relaybench (swift build -c release --product relaybench)"
        (cd "$ROOT" && swift build -c release --product relaybench --scratch-path "$SCRATCH" >&2) \
            || die "swift build failed"
    fi
    [ -x "$RB" ] || die "relaybench not found at $RB (build it, or pass --scratch-path / RELAYBENCH=)"
fi

MACHINE=$(machine_line)
read -r P_SRV P_HOP1 P_HOP2 <<<"$(free_ports 3)"

start_bg "$WORK/iperf3-server.log" iperf3 -s -B 127.0.0.1 -p "$P_SRV"
SRV_PID=$BG_PID
wait_listen "$P_SRV" tcp 10 "$SRV_PID" || die "iperf3 server did not start"

RES="$WORK/results.tsv"
: >"$RES"
ROUND=0
# measure LABEL STREAMS ENTRY_PORT [RELAY_PID...]: one iperf3 run, recorded for this round.
measure() {
    local label=$1 streams=$2 port=$3; shift 3
    local out="$WORK/iperf.json" t0 t1 gbps bytes cpu="-"
    t0=$(cpu_ticks "$@")
    if ! timeout $((DURATION + 30)) iperf3 -c 127.0.0.1 -p "$port" -t "$DURATION" -P "$streams" -J \
            >"$out" 2>"$WORK/iperf-client.err"; then
        log "$label, $streams stream(s): iperf3 failed: $(json_get "$out" "d.get('error','')" || true)"
        printf '%s\t%s\tfailed\t-\t%s\n' "$label" "$streams" "$ROUND" >>"$RES"
        return 0
    fi
    t1=$(cpu_ticks "$@")
    gbps=$(json_get "$out" "'%.2f' % (d['end']['sum_received']['bits_per_second']/1e9)")
    bytes=$(json_get "$out" "d['end']['sum_received']['bytes']")
    [ $# -gt 0 ] && cpu=$(cpu_per_10gb $((t1 - t0)) "$bytes")
    log "round $ROUND: $label, $streams stream(s): $gbps Gbit/s, $cpu CPU s per 10 GB"
    printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$streams" "$gbps" "$cpu" "$ROUND" >>"$RES"
}

both() { measure "$1" 1 "${@:2}"; measure "$1" 8 "${@:2}"; }

TW="$THREADS thread"; [ "$THREADS" != 1 ] && TW+="s"
HAPROXY_LABEL=""
want haproxy && HAPROXY_LABEL="HAProxy $(haproxy -v | awk 'NR==1{print $3}' | cut -d- -f1), splice"

# run_system NAME: start its two hops (if any), measure 1 and 8 streams, stop them.
run_system() {
    local a b label
    case $1 in
        direct) both "direct (no relay)" "$P_SRV"; return 0 ;;
        haproxy)
            haproxy_hop_cfg "$WORK/hop1.cfg" "$P_HOP1:$P_HOP2"
            haproxy_hop_cfg "$WORK/hop2.cfg" "$P_HOP2:$P_SRV"
            sed -i "s/tune.pipesize .*/tune.pipesize $PIPESIZE/" "$WORK/hop1.cfg" "$WORK/hop2.cfg"
            start_bg "$WORK/haproxy2.log" haproxy -db -f "$WORK/hop2.cfg"; b=$BG_PID
            start_bg "$WORK/haproxy1.log" haproxy -db -f "$WORK/hop1.cfg"; a=$BG_PID
            label=$HAPROXY_LABEL ;;
        splice|copy)
            local flag=()
            [ "$1" = copy ] && flag=(--copy)
            start_bg "$WORK/rb2.log" "$RB" --listen "127.0.0.1:$P_HOP2" --connect "127.0.0.1:$P_SRV" --threads "$THREADS" "${flag[@]}"; b=$BG_PID
            start_bg "$WORK/rb1.log" "$RB" --listen "127.0.0.1:$P_HOP1" --connect "127.0.0.1:$P_HOP2" --threads "$THREADS" "${flag[@]}"; a=$BG_PID
            label="ours, $1 relay ($TW per hop)" ;;
    esac
    if wait_listen "$P_HOP2" tcp 10 "$b" && wait_listen "$P_HOP1" tcp 10 "$a"; then
        both "$label" "$P_HOP1" "$a" "$b"
    else
        log "$label did not start: $(tail -q -n 2 "$WORK"/haproxy*.log "$WORK"/rb*.log 2>/dev/null | tr '\n' ' ')"
        printf '%s\t-\tfailed to start\t-\t%s\n' "$label" "$ROUND" >>"$RES"
    fi
    stop_pids "$a" "$b"
    wait_port_free "$P_HOP1" 5; wait_port_free "$P_HOP2" 5
}

NAMES=()
for n in direct haproxy splice copy; do want "$n" && NAMES+=("$n"); done
ORDERS=()
START=$(date +%s)
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    order=$(round_order "$ROUND" "${NAMES[@]}")
    ORDERS+=("$ROUND: $(echo "${order% }" | sed "s/ /, /g")")
    for n in $order; do run_system "$n"; done
done

STAMP=$(date +%Y-%m-%d-%H%M)
mkdir -p "$OUT"
REPORT="$OUT/relay-$STAMP$SUFFIX.md"
{
    echo "# Relay benchmark, $(date '+%Y-%m-%d %H:%M')"
    echo
    echo "iperf3 through two relays in a row on 127.0.0.1 (iperf3 -c -> hop 1 -> hop 2 -> iperf3 -s), written by \`perf/relay.sh\`."
    echo
    echo "Command: \`$CMDLINE\`, $(( $(date +%s) - START )) s. Machine: $MACHINE."
    echo
    echo "Versions: iperf3 $(iperf3 --version | awk 'NR==1{print $2}')$([ -n "$HAPROXY_LABEL" ] && echo ", HAProxy $(haproxy -v | awk 'NR==1{print $3}')"), ours: commit $(ours_commit "$ROOT")."
    echo
    echo "**$ROUNDS rounds** of ${DURATION} s per iperf3 run, the systems in a different order each round ($(IFS=';'; echo "${ORDERS[*]}" | sed 's/;/; /g')), each relay started fresh every round. Cells: median (min–max) of the rounds. CPU s per 10 GB: user+system time of both relay processes during the run, per 1e10 bytes received."
    echo
    "$PY" "$ROOT/bench/lib/report.py" perf "$RES"
} >"$REPORT"
echo
cat "$REPORT"
log "written to $REPORT"
