#!/usr/bin/env bash
# Zero-copy relay benchmark: iperf3 through two relays in a row on loopback, as a tunnel uses them
# (iperf3 -c -> hop1 -> hop2 -> iperf3 -s), beside a direct connection and two chained HAProxy
# processes with splice. Prints a markdown table: system | streams | Gbit/s | CPU s per 10 GB.
#
# Usage: perf/relay.sh [--quick] [--duration S] [--no-build] [--scratch-path DIR] [--threads N]
#                      [--only LIST] [--pipesize BYTES] [--repeat N]
#   --quick            3 s per iperf3 run instead of 10 s
#   --duration S       seconds per iperf3 run (default 10)
#   --no-build         do not run `swift build`; use the existing binary
#   --scratch-path DIR build directory of the Swift package (default .build); the binary is
#                      DIR/release/relaybench
#   --threads N        worker threads per relaybench process (default 1, like HAProxy's nbthread 1)
#   --only LIST        comma-separated subset of: direct,haproxy,splice,copy (default all)
#   --pipesize BYTES   HAProxy tune.pipesize (default 262144)
#   --repeat N         N runs per row; the row shows the run with the median Gbit/s (default 1)
# Environment: RELAYBENCH=/path/to/relaybench overrides the binary (implies --no-build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

DURATION=10
BUILD=1
SCRATCH="$ROOT/.build"
THREADS=1
ONLY="direct,haproxy,splice,copy"
PIPESIZE=262144
REPEAT=1
while [ $# -gt 0 ]; do
    case $1 in
        --quick) DURATION=3 ;;
        --duration) DURATION=$2; shift ;;
        --no-build) BUILD=0 ;;
        --scratch-path) SCRATCH=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift ;;
        --threads) THREADS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --pipesize) PIPESIZE=$2; shift ;;
        --repeat) REPEAT=$2; shift ;;
        -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
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

read -r P_SRV P_HOP1 P_HOP2 <<<"$(free_ports 3)"

start_bg "$WORK/iperf3-server.log" iperf3 -s -B 127.0.0.1 -p "$P_SRV"
SRV_PID=$BG_PID
wait_listen "$P_SRV" tcp 10 "$SRV_PID" || die "iperf3 server did not start"

ROWS=()
# measure SYSTEM STREAMS ENTRY_PORT [RELAY_PID...]: REPEAT iperf3 runs; appends a table row with the
# run of median bitrate (and that run's CPU cost).
measure() {
    local system=$1 streams=$2 port=$3; shift 3
    local out t0 t1 gbps bytes cpu r runs=()
    out="$WORK/iperf-$(printf '%s' "$system" | tr -c 'A-Za-z0-9' _)-$streams.json"
    for ((r = 0; r < REPEAT; r++)); do
        t0=$(cpu_ticks "$@")
        if ! timeout $((DURATION + 30)) iperf3 -c 127.0.0.1 -p "$port" -t "$DURATION" -P "$streams" -J \
                >"$out" 2>"$WORK/iperf-client.err"; then
            log "$system, $streams stream(s): iperf3 failed: $(json_get "$out" "d.get('error','')" || true)"
            continue
        fi
        t1=$(cpu_ticks "$@")
        gbps=$(json_get "$out" "'%.2f' % (d['end']['sum_received']['bits_per_second']/1e9)")
        bytes=$(json_get "$out" "d['end']['sum_received']['bytes']")
        if [ $# -gt 0 ]; then cpu=$(cpu_per_10gb $((t1 - t0)) "$bytes"); else cpu="-"; fi
        log "$system, $streams stream(s): $gbps Gbit/s, $cpu CPU s per 10 GB"
        runs+=("$gbps $cpu")
    done
    if [ "${#runs[@]}" = 0 ]; then
        ROWS+=("| $system | $streams | failed | - |")
        return 0
    fi
    read -r gbps cpu <<<"$(printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(( (${#runs[@]} + 1) / 2 ))p")"
    ROWS+=("| $system | $streams | $gbps | $cpu |")
}

run_system() {
    local system=$1 entry=$2; shift 2
    measure "$system" 1 "$entry" "$@"
    measure "$system" 8 "$entry" "$@"
}

if want direct; then
    run_system "direct (no relay)" "$P_SRV"
fi

if want haproxy; then
    haproxy_hop_cfg "$WORK/hop1.cfg" "$P_HOP1:$P_HOP2"
    haproxy_hop_cfg "$WORK/hop2.cfg" "$P_HOP2:$P_SRV"
    sed -i "s/tune.pipesize .*/tune.pipesize $PIPESIZE/" "$WORK/hop1.cfg" "$WORK/hop2.cfg"
    start_bg "$WORK/haproxy2.log" haproxy -db -f "$WORK/hop2.cfg"; H2=$BG_PID
    start_bg "$WORK/haproxy1.log" haproxy -db -f "$WORK/hop1.cfg"; H1=$BG_PID
    if wait_listen "$P_HOP2" tcp 10 "$H2" && wait_listen "$P_HOP1" tcp 10 "$H1"; then
        run_system "HAProxy $(haproxy -v | awk 'NR==1{print $3}' | cut -d- -f1), splice" "$P_HOP1" "$H1" "$H2"
    else
        log "HAProxy did not start: $(tail -n 3 "$WORK"/haproxy*.log)"
        ROWS+=("| HAProxy | - | failed to start | - |")
    fi
    stop_pids "$H1" "$H2"
    wait_port_free "$P_HOP1" 5; wait_port_free "$P_HOP2" 5
fi

# run_ours LABEL [--copy]
run_ours() {
    local label=$1; shift
    local a b
    start_bg "$WORK/rb2.log" "$RB" --listen "127.0.0.1:$P_HOP2" --connect "127.0.0.1:$P_SRV" --threads "$THREADS" "$@"; b=$BG_PID
    start_bg "$WORK/rb1.log" "$RB" --listen "127.0.0.1:$P_HOP1" --connect "127.0.0.1:$P_HOP2" --threads "$THREADS" "$@"; a=$BG_PID
    if wait_listen "$P_HOP2" tcp 10 "$b" && wait_listen "$P_HOP1" tcp 10 "$a"; then
        run_system "$label" "$P_HOP1" "$a" "$b"
    else
        log "relaybench did not start: $(tail -n 3 "$WORK"/rb*.log)"
        ROWS+=("| $label | - | failed to start | - |")
    fi
    stop_pids "$a" "$b"
    wait_port_free "$P_HOP1" 5; wait_port_free "$P_HOP2" 5
}
TW="$THREADS thread"; [ "$THREADS" != 1 ] && TW+="s"
want splice && run_ours "ours, splice relay ($TW per hop)"
want copy && run_ours "ours, copy relay ($TW per hop)" --copy

echo
echo "Relay benchmark: iperf3 through two relays in a row on 127.0.0.1, ${DURATION} s per run$([ "$REPEAT" != 1 ] && echo ", median of $REPEAT runs"), $(nproc) cores, kernel $(uname -r)"
echo "CPU s per 10 GB: user+system time of both relay processes during the run, per 1e10 bytes received."
echo
echo "| system | streams | Gbit/s | CPU s per 10 GB |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
