#!/usr/bin/env bash
# Soak run: a real rathole server and client (release build) with a TCP and a UDP service on
# loopback, and for N minutes a churn of visitors through them (short and long connections, some
# reset mid-transfer, idle ones that never send, bulk transfers, UDP datagrams), every byte checked,
# the client restarted once half-way. Once a minute the load pauses, the server's idle data channel
# pool settles, and file descriptors, pipes and RSS of both processes are sampled. Fails if a byte
# is wrong, if a good visitor is refused or dropped while the client is up, or if fds, pipes or RSS
# grow after warm-up beyond a noise band (perf/soak.py has the rules).
#
# Prints one line per minute and a summary line; writes perf/results/soak-STAMP.md and a chart,
# perf/results/soak-STAMP.png (runs shorter than 60 minutes are named soak-STAMP-quick.*, which
# git ignores).
#
# Usage: perf/soak.sh [--minutes N] [--no-build] [--scratch-path DIR]
#   --minutes N        length of the run (default 60)
#   --no-build         do not run `swift build`; use the existing binary
#   --scratch-path DIR build directory (default .build); the binary is DIR/release/rathole
# Environment: RATHOLE_BIN=/path/to/rathole overrides the binary (implies --no-build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

MINUTES=60
BUILD=1
SCRATCH="$ROOT/.build"
while [ $# -gt 0 ]; do
    case $1 in
        --minutes) MINUTES=$2; shift ;;
        --minutes=*) MINUTES=${1#*=} ;;
        --no-build) BUILD=0 ;;
        --scratch-path) SCRATCH=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift ;;
        -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
[[ $MINUTES =~ ^[1-9][0-9]*$ ]] || die "--minutes wants a positive whole number"

# From bench/lib/common.sh when it has them.
type machine_line >/dev/null 2>&1 || machine_line() {
    echo "$(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), open-file limit $(ulimit -n), load average before the run $(cut -d' ' -f1-3 /proc/loadavg)"
}
type ours_commit >/dev/null 2>&1 || ours_commit() {
    local c
    c=$(git -C "$1" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$1" diff --quiet HEAD -- Sources Package.swift 2>/dev/null || c+=", with uncommitted changes"
    echo "$c"
}

WORK=$(mktemp -d /tmp/soak.XXXXXX)
DRIVER=
cleanup() {
    [ -n "$DRIVER" ] && kill -TERM "$DRIVER" 2>/dev/null && wait "$DRIVER" 2>/dev/null
    cleanup_all
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_tool gnuplot gnuplot-nox

BIN=$(rathole_binary "$ROOT" "$SCRATCH" "$BUILD") || exit 1

STAMP=$(date +%Y-%m-%d-%H%M)
NAME=soak-$STAMP
[ "$MINUTES" -lt 60 ] && NAME+=-quick
mkdir -p "$ROOT/perf/results"
OUT=$ROOT/perf/results/$NAME.md
MACHINE=$(machine_line)
COMMIT=$(ours_commit "$ROOT")
STARTED=$(date '+%Y-%m-%d %H:%M')

read -r P_CTL P_TCP P_UDP E_TCP E_UDP <<<"$(free_ports 5)"
log "soak for $MINUTES min: server control 127.0.0.1:$P_CTL, TCP service :$P_TCP, UDP service :$P_UDP (work dir $WORK)"
set +e
"$PY" "$ROOT/perf/soak.py" --bin "$BIN" --work "$WORK" --minutes "$MINUTES" \
    --ports "$P_CTL,$P_TCP,$P_UDP,$E_TCP,$E_UDP" > >(tee "$WORK/driver.log") 2>&1 &
DRIVER=$!
wait "$DRIVER"
STATUS=$?
DRIVER=
sleep 0.5   # tee's last lines
set -e
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

[ -f "$WORK/samples.tsv" ] || die "the driver wrote no samples (log: $(tail -n 3 "$WORK/driver.log"))"
SUMMARY=$(grep '^soak: ' "$WORK/driver.log" | tail -1 || true)
[ -n "$SUMMARY" ] || SUMMARY="soak: FAIL (the driver ended without a summary, status $STATUS)"

# The chart: fds and pipes per process (top), RSS and visitors per minute (bottom).
gnuplot <<GP 2>"$WORK/gnuplot.log" || log "gnuplot failed: $(head -n 3 "$WORK/gnuplot.log")"
set terminal pngcairo size 800,520 font "sans,9"
set output "$ROOT/perf/results/$NAME.png"
set datafile separator "\t"
set key outside right top vertical
set grid ytics
set lmargin 9
set rmargin 24
set multiplot layout 2,1 title "rathole soak, $STARTED, $MINUTES min (shared 2-core machine)"
set ylabel "count"
set yrange [0:*]
plot "$WORK/samples.tsv" skip 1 using 1:4 with linespoints pt 7 ps 0.4 title "server fds", \
     "" skip 1 using 1:7 with linespoints pt 7 ps 0.4 title "client fds", \
     "" skip 1 using 1:5 with lines dt 2 title "server pipe fds", \
     "" skip 1 using 1:8 with lines dt 2 title "client pipe fds"
set xlabel "minute"
set ylabel "RSS (MB)"
set y2label "visitors / min"
set y2tics
set yrange [0:*]
set y2range [0:*]
plot "$WORK/samples.tsv" skip 1 using 1:(\$6/1024) with linespoints pt 7 ps 0.4 title "server RSS", \
     "" skip 1 using 1:(\$9/1024) with linespoints pt 7 ps 0.4 title "client RSS", \
     "" skip 1 using 1:2 axes x1y2 with lines lw 1.5 lc rgb "#999999" title "visitors"
unset multiplot
GP

{
    echo "# Soak run, $STARTED"
    echo
    echo "A real rathole server and client with a TCP and a UDP service, $MINUTES minutes of churning visitors, written by \`perf/soak.sh\`."
    echo
    echo "Command: \`perf/soak.sh --minutes $MINUTES\`. Machine: $MACHINE; load average after the run $LOAD_AFTER."
    echo "The machine is shared with other engineers' builds and tests: throughput figures here say what the load"
    echo "generator (one Python process) got, not what rathole can do."
    echo
    echo "Ours: commit $COMMIT."
    echo
    echo "**$SUMMARY**"
    echo
    if grep -q '  problem: ' "$WORK/driver.log"; then
        echo "Problems:"
        echo
        grep '  problem: ' "$WORK/driver.log" | sed 's/^  problem: /- /'
        echo
    fi
    echo "![fds, pipes and RSS per minute]($NAME.png)"
    echo
    echo "Per minute, sampled with the load paused and the pool settled (the client restarted after minute $((MINUTES / 2)))."
    echo
    echo "| minute | visitors | MB checked | server fds | server pipe fds | server RSS MB | client fds | client pipe fds | client RSS MB | refused | wrong |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %.1f | %s | %s | %.1f | %s | %s |\n", $1, $2, $3, $4, $5, $6/1024, $7, $8, $9/1024, $10, $11 }' "$WORK/samples.tsv"
} >"$OUT"
log "wrote ${OUT#$ROOT/} and perf/results/$NAME.png"
echo "$SUMMARY"
exit "$STATUS"
