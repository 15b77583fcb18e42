#!/usr/bin/env bash
# Throughput of the tunnel per transport: iperf3 through a real rathole server and client (release
# build) on loopback, with the transport set to tcp, noise (NK, NK with AESGCM, XX, KK), tls, ws and
# wss (websocket without and with TLS) in turn, beside a direct connection. Runs in rounds, the
# transports in a different order each round, and writes a markdown table (transport | streams |
# Gbit/s | CPU s per 10 GB of server and client together, median and min-max of the rounds) to
# perf/results/transports-YYYY-MM-DD-HHMM.md and stdout.
#
# Usage: perf/transports.sh [--quick] [--rounds N] [--duration S] [--no-build] [--scratch-path DIR]
#                           [--only LIST] [--out DIR]
#   --quick            2 rounds of 2 s runs (default: 3 rounds of 5 s)
#   --rounds N         rounds (at least 2)
#   --duration S       seconds per iperf3 run
#   --no-build         do not run `swift build`; use the existing binary
#   --scratch-path DIR build directory of the Swift package (default .build); the binary is
#                      DIR/release/rathole
#   --only LIST        comma-separated subset of: direct,tcp,noise-nk,noise-nk-aesgcm,noise-xx,
#                      noise-kk,tls,ws,wss
#   --out DIR          results directory (default perf/results)
# --quick runs are named -quick.md (ignored by git: a check); runs with --rounds, --duration or
# --only -partial.md (a targeted comparison: commit it when a figure from it is quoted).
# Environment: RATHOLE_BIN=/path/to/rathole overrides the binary (implies --no-build);
# RATHOLE_UPSTREAM=/path/to/rathole (a release build of upstream rathole) runs every transport a
# second time with that binary at both ends, same configs, as rows "upstream rathole, KIND".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

CMDLINE="perf/transports.sh${*:+ $*}"
DURATION=5
ROUNDS=3
BUILD=1
SCRATCH="$ROOT/.build"
ONLY="direct,tcp,noise-nk,noise-nk-aesgcm,noise-xx,noise-kk,tls,ws,wss"
OUT="$ROOT/perf/results"
SUFFIX=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) DURATION=2; ROUNDS=2; SUFFIX=-quick ;;
        --rounds) ROUNDS=$2; SUFFIX=${SUFFIX:--partial}; shift ;;
        --duration) DURATION=$2; SUFFIX=${SUFFIX:--partial}; shift ;;
        --no-build) BUILD=0 ;;
        --scratch-path) SCRATCH=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift ;;
        --only) ONLY=$2; SUFFIX=${SUFFIX:--partial}; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
[ "$ROUNDS" -ge 2 ] 2>/dev/null || die "--rounds needs a number of at least 2"
want() { [[ ",$ONLY," == *",$1,"* ]]; }

WORK=$(mktemp -d /tmp/transports.XXXXXX)
trap 'cleanup_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

ensure_tool iperf3 iperf3
ensure_tool openssl openssl

BIN=$(rathole_binary "$ROOT" "$SCRATCH" "$BUILD") || exit 1
UPSTREAM=${RATHOLE_UPSTREAM:-}
[ -z "$UPSTREAM" ] || [ -x "$UPSTREAM" ] || die "RATHOLE_UPSTREAM=$UPSTREAM is not an executable"

MACHINE=$(machine_line)
read -r P_SRV P_CTL P_PUB <<<"$(free_ports 3)"
start_bg "$WORK/iperf3-server.log" iperf3 -s -B 127.0.0.1 -p "$P_SRV"
wait_listen "$P_SRV" tcp 10 "$BG_PID" || die "iperf3 server did not start"

# Keys and certificates for the encrypted transports. --genkey prints a pair: private key on line 2,
# public key on line 5.
pair() { "$BIN" --genkey | awk 'NR == 2 { priv = $0 } NR == 5 { pub = $0 } END { print priv, pub }'; }
read -r S_PRIV S_PUB <<<"$(pair)"
read -r C_PRIV C_PUB <<<"$(pair)"
P12_PASS=bench
sh "$ROOT/Tests/ControlPlaneTests/Fixtures/make-test-certs.sh" "$WORK/certs" "$P12_PASS" >"$WORK/certs.log" 2>&1 \
    || die "make-test-certs.sh failed: $(tail -n 3 "$WORK/certs.log")"

# transport_tables KIND SIDE: the [SIDE.transport] tables of a transport.
transport_tables() {
    local kind=$1 side=$2
    case $kind in
        tcp) ;;
        noise-nk)
            printf '[%s.transport]\ntype = "noise"\n[%s.transport.noise]\n' "$side" "$side"
            if [ "$side" = server ]; then echo "local_private_key = \"$S_PRIV\""; else echo "remote_public_key = \"$S_PUB\""; fi ;;
        noise-nk-aesgcm)
            printf '[%s.transport]\ntype = "noise"\n[%s.transport.noise]\npattern = "Noise_NK_25519_AESGCM_SHA256"\n' "$side" "$side"
            if [ "$side" = server ]; then echo "local_private_key = \"$S_PRIV\""; else echo "remote_public_key = \"$S_PUB\""; fi ;;
        noise-xx)
            printf '[%s.transport]\ntype = "noise"\n[%s.transport.noise]\npattern = "Noise_XX_25519_ChaChaPoly_BLAKE2s"\n' "$side" "$side" ;;
        noise-kk)
            printf '[%s.transport]\ntype = "noise"\n[%s.transport.noise]\npattern = "Noise_KK_25519_ChaChaPoly_BLAKE2s"\n' "$side" "$side"
            if [ "$side" = server ]; then
                printf 'local_private_key = "%s"\nremote_public_key = "%s"\n' "$S_PRIV" "$C_PUB"
            else
                printf 'local_private_key = "%s"\nremote_public_key = "%s"\n' "$C_PRIV" "$S_PUB"
            fi ;;
        tls)
            if [ "$side" = server ]; then
                printf '[server.transport]\ntype = "tls"\n[server.transport.tls]\npkcs12 = "%s"\npkcs12_password = "%s"\n' \
                    "$WORK/certs/server.p12" "$P12_PASS"
            else
                printf '[client.transport]\ntype = "tls"\n[client.transport.tls]\ntrusted_root = "%s"\nhostname = "localhost"\n' \
                    "$WORK/certs/ca.pem"
            fi ;;
        ws|wss)
            printf '[%s.transport]\ntype = "websocket"\n[%s.transport.websocket]\ntls = %s\n' "$side" "$side" \
                "$([ "$kind" = wss ] && echo true || echo false)"
            if [ "$kind" = wss ]; then transport_tables tls "$side" | sed -n '/transport.tls/,$p'; fi ;;
    esac
}

RES="$WORK/results.tsv"
: >"$RES"
ROUND=0
# measure LABEL STREAMS PORT [PID...]: one iperf3 run, recorded for this round.
measure() {
    local label=$1 streams=$2 port=$3; shift 3
    local out="$WORK/iperf.json" t0 t1 gbps bytes cpu="-"
    t0=$(cpu_ticks "$@")
    if ! timeout $((DURATION + 30)) iperf3 -c 127.0.0.1 -p "$port" -t "$DURATION" -P "$streams" -J >"$out" 2>/dev/null; then
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

# run_kind KIND: a fresh server and client with that transport, 1 and 8 streams, then stop them.
# KIND upstream-X is transport X with the upstream binary.
run_kind() {
    local kind=$1 bin=$BIN label=$1 S C
    if [[ $kind == upstream-* ]]; then
        kind=${kind#upstream-}
        bin=$UPSTREAM
        label="upstream rathole, $kind"
    fi
    if [ "$kind" = direct ]; then
        measure "direct (no tunnel)" 1 "$P_SRV"
        measure "direct (no tunnel)" 8 "$P_SRV"
        return 0
    fi
    {
        printf '[server]\nbind_addr = "127.0.0.1:%s"\n' "$P_CTL"
        transport_tables "$kind" server
        printf '[server.services.iperf]\ntoken = "perf"\nbind_addr = "127.0.0.1:%s"\n' "$P_PUB"
    } >"$WORK/server.toml"
    {
        printf '[client]\nremote_addr = "127.0.0.1:%s"\n' "$P_CTL"
        transport_tables "$kind" client
        printf '[client.services.iperf]\ntoken = "perf"\nlocal_addr = "127.0.0.1:%s"\n' "$P_SRV"
    } >"$WORK/client.toml"
    RUST_LOG=warn start_bg "$WORK/server-$1.log" "$bin" "$WORK/server.toml"; S=$BG_PID
    RUST_LOG=warn start_bg "$WORK/client-$1.log" "$bin" "$WORK/client.toml"; C=$BG_PID
    if wait_listen "$P_PUB" tcp 10 "$S" && sleep 1 && kill -0 "$C" 2>/dev/null; then
        measure "$label" 1 "$P_PUB" "$S" "$C"
        measure "$label" 8 "$P_PUB" "$S" "$C"
    else
        log "$label: the tunnel did not start: $(tail -n 2 "$WORK/server-$1.log" "$WORK/client-$1.log")"
        printf '%s\t-\tfailed to start\t-\t%s\n' "$label" "$ROUND" >>"$RES"
    fi
    stop_pids "$S" "$C"
    wait_port_free "$P_PUB" 5; wait_port_free "$P_CTL" 5
}

KINDS=()
for k in direct tcp noise-nk noise-nk-aesgcm noise-xx noise-kk tls ws wss; do
    want "$k" || continue
    KINDS+=("$k")
    if [ -n "$UPSTREAM" ] && [ "$k" != direct ]; then KINDS+=("upstream-$k"); fi
done
ORDERS=()
START=$(date +%s)
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    order=$(round_order "$ROUND" "${KINDS[@]}")
    ORDERS+=("$ROUND: $(echo "${order% }" | sed "s/ /, /g")")
    for k in $order; do run_kind "$k"; done
done

STAMP=$(date +%Y-%m-%d-%H%M)
mkdir -p "$OUT"
REPORT="$OUT/transports-$STAMP$SUFFIX.md"
{
    echo "# Tunnel throughput per transport, $(date '+%Y-%m-%d %H:%M')"
    echo
    echo "iperf3 through a real server and client (release build, static stdlib) on 127.0.0.1, one transport at a time, written by \`perf/transports.sh\`. tcp uses the splice relay; noise (\`Noise_*_25519_ChaChaPoly_BLAKE2s\`) and tls (OpenSSL) the copy relay."
    echo
    echo "Command: \`$CMDLINE\`, $(( $(date +%s) - START )) s. Machine: $MACHINE."
    echo
    echo "Versions: iperf3 $(iperf3 --version | awk 'NR==1{print $2}'), $(openssl version | cut -d' ' -f1-2), ours: $("$BIN" --version 2>&1 | head -n1) (commit $(ours_commit "$ROOT"))$([ -z "$UPSTREAM" ] || echo ", upstream rathole: $("$UPSTREAM" --version 2>&1 | head -n1) ($UPSTREAM)")."
    echo
    echo "**$ROUNDS rounds** of ${DURATION} s per iperf3 run, the transports in a different order each round ($(IFS=';'; echo "${ORDERS[*]}" | sed 's/;/; /g')), server and client started fresh every round. Cells: median (min–max) of the rounds. CPU s per 10 GB: user+system time of server and client together during the run, per 1e10 bytes received."
    echo
    "$PY" "$ROOT/bench/lib/report.py" perf "$RES" | sed '1s/| system |/| transport |/'
} >"$REPORT"
echo
cat "$REPORT"
log "written to $REPORT"
