#!/usr/bin/env bash
# Side-by-side comparison of this rathole (Swift, io_uring) with frp, upstream rathole, HAProxy and a
# direct connection, all on loopback: TCP bitrate and CPU cost, UDP delivery, HTTP rate and latency,
# memory per idle tunnelled connection, and connection setup rate. See bench/README.md.
#
# Usage: bench/run.sh [--quick] [--systems LIST] [--no-build] [--scratch-path DIR] [--out DIR] [--keep]
#   --quick            short runs, fewer levels (about 3 minutes with every peer installed)
#   --systems LIST     comma-separated subset of: ours,rathole,frp,haproxy,direct (default all)
#   --no-build         do not run `swift build`; use the existing .build/release/rathole
#   --scratch-path DIR Swift build directory (default .build); ours is DIR/release/rathole
#   --out DIR          where results go (default bench/results)
#   --keep             keep the work directory (logs of every process) and print its path
# Environment:
#   OURS_BIN=path          use this binary for "ours" (implies --no-build)
#   RATHOLE_UPSTREAM=path  upstream rathole binary (a release build of upstream rathole)
#   FRP_DIR=dir            directory with frps and frpc (frp >= 0.52); otherwise looked up on PATH
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB="$ROOT/bench/lib"
# shellcheck source=lib/common.sh
source "$LIB/common.sh"

CMDLINE="bench/run.sh $*"
QUICK=0
BUILD=1
SCRATCH="$ROOT/.build"
SELECT="direct,haproxy,frp,rathole,ours"
OUT="$ROOT/bench/results"
KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --systems) SELECT=$2; shift ;;
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
    D_TCP=3; D_UDP=2; D_HTTP=3; D_RATE=2; MEM_LEVELS="1000"
else
    D_TCP=10; D_UDP=10; D_HTTP=10; D_RATE=5; MEM_LEVELS="1000 4000"
fi
UDP_RATES="500 2000"
HTTP_CONNS=100

WORK=$(mktemp -d /tmp/ratholebench.XXXXXX)
on_exit() {
    cleanup_all
    if [ "$KEEP" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$OUT" "$OUT/configs"
RES="$WORK/results.tsv"
: >"$RES"
put() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }
note() { log "$1: $2"; put "$1" note "$2"; }

# ------------------------------------------------------------------------------------------------
# Tools and binaries

ensure_tool python3 python3
ensure_tool iperf3 iperf3
ensure_tool wrk wrk
ensure_tool nginx nginx-light
ensure_tool gnuplot gnuplot-nox
selected haproxy && ensure_tool haproxy haproxy

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

version_of() { timeout 3 "$@" 2>&1 | head -n1 | tr -d '\r' || true; }
VERSIONS="iperf3 $(iperf3 --version | awk 'NR==1{print $2}'), $(nginx -v 2>&1 | sed 's/.*version: //'), wrk $( (wrk -v 2>&1 || true) | awk 'NR==1{print $2}')"
selected haproxy && VERSIONS+=", HAProxy $(haproxy -v | awk 'NR==1{print $3}')"
[ -n "$FRPS" ] && VERSIONS+=", frp $(version_of "$FRPS" --version)"
[ -n "$UPSTREAM" ] && VERSIONS+=", upstream $(version_of "$UPSTREAM" --version)"
[ -n "$OURS" ] && VERSIONS+=", ours: $(version_of "$OURS" --version)"

put _meta date "$(date '+%Y-%m-%d %H:%M')"
put _meta quick "$QUICK"
put _meta cmd "$CMDLINE"
put _meta machine "$(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), open-file limit $(ulimit -n)"
put _meta versions "$VERSIONS"
put _meta d_tcp "$D_TCP"; put _meta d_udp "$D_UDP"; put _meta d_http "$D_HTTP"; put _meta d_rate "$D_RATE"
put _meta mem_levels "$MEM_LEVELS"

# ------------------------------------------------------------------------------------------------
# Backends: iperf3 server (TCP and UDP on one port), nginx, the connection holder service

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
mkdir -p "$NG/www" "$NG/tmp" "$OUT/configs/nginx"
chmod 755 "$WORK" "$NG" "$NG/www"
"$PY" -c 'import sys; sys.stdout.write("<html><body>" + "x" * 998 + "</body></html>\n")' >"$NG/www/index.html"
chmod 644 "$NG/www/index.html"
cat >"$NG/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $NG/tmp/client_body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    default_type text/html;
    server {
        listen 127.0.0.1:$B_HTTP backlog=4096;
        root $NG/www;
        location / { }
    }
}
EOF
cp "$NG/nginx.conf" "$OUT/configs/nginx/nginx.conf"
start_bg "$WORK/nginx.log" nginx -c "$NG/nginx.conf" -p "$NG"
NGINX_PID=$BG_PID
wait_listen "$B_HTTP" tcp 10 "$NGINX_PID" || die "nginx did not start: $(cat "$NG/error.log" "$WORK/nginx.log" 2>/dev/null | tail -n 3)"

start_bg "$WORK/holder-server.log" "$PY" "$LIB/holder.py" serve --port "$B_HOLD"
HOLDSRV_PID=$BG_PID
wait_listen "$B_HOLD" tcp 10 "$HOLDSRV_PID" || die "holder service did not start"

# ------------------------------------------------------------------------------------------------
# Systems. start_instance SYSTEM KIND (KIND = main: TCP services iperf, http, hold; udp: an iperf3
# control TCP service plus a UDP service on the same port) sets INST_PIDS (the proxy processes) and
# the entry ports E_IPERF E_HTTP E_HOLD (main) or E_UDP (udp). On failure it sets INST_ERR.

INST_PIDS=()
INST_ERR=""
E_IPERF=""; E_HTTP=""; E_HOLD=""; E_UDP=""

# rathole_configs DIR KIND CTL: upstream rathole's TOML format (used by ours and upstream alike).
rathole_configs() {
    local dir=$1 kind=$2 ctl=$3
    mkdir -p "$dir"
    {
        echo "[server]"
        echo "bind_addr = \"127.0.0.1:$ctl\""
        if [ "$kind" = main ]; then
            for svc in "iperf $E_IPERF" "http $E_HTTP" "hold $E_HOLD"; do
                set -- $svc
                printf '\n[server.services.%s]\ntype = "tcp"\ntoken = "bench-%s"\nbind_addr = "127.0.0.1:%s"\n' "$1" "$1" "$2"
            done
        else
            printf '\n[server.services.iperf_ctl]\ntype = "tcp"\ntoken = "bench-iperf_ctl"\nbind_addr = "127.0.0.1:%s"\n' "$E_UDP"
            printf '\n[server.services.iperf_udp]\ntype = "udp"\ntoken = "bench-iperf_udp"\nbind_addr = "127.0.0.1:%s"\n' "$E_UDP"
        fi
    } >"$dir/server$([ "$kind" = udp ] && echo -udp).toml"
    {
        echo "[client]"
        echo "remote_addr = \"127.0.0.1:$ctl\""
        if [ "$kind" = main ]; then
            for svc in "iperf $B_IPERF" "http $B_HTTP" "hold $B_HOLD"; do
                set -- $svc
                printf '\n[client.services.%s]\ntype = "tcp"\ntoken = "bench-%s"\nlocal_addr = "127.0.0.1:%s"\n' "$1" "$1" "$2"
            done
        else
            printf '\n[client.services.iperf_ctl]\ntype = "tcp"\ntoken = "bench-iperf_ctl"\nlocal_addr = "127.0.0.1:%s"\n' "$B_IPERF"
            printf '\n[client.services.iperf_udp]\ntype = "udp"\ntoken = "bench-iperf_udp"\nlocal_addr = "127.0.0.1:%s"\n' "$B_IPERF"
        fi
    } >"$dir/client$([ "$kind" = udp ] && echo -udp).toml"
}

# frp_configs DIR KIND CTL: frp >= 0.52 TOML; everything but addresses, ports, token and log level
# at frp's defaults (so transport.tcpMux = true).
frp_configs() {
    local dir=$1 kind=$2 ctl=$3 sfx=""
    [ "$kind" = udp ] && sfx="-udp"
    mkdir -p "$dir"
    cat >"$dir/frps$sfx.toml" <<EOF
bindAddr = "127.0.0.1"
bindPort = $ctl
auth.token = "bench"
log.level = "warn"
EOF
    {
        cat <<EOF
serverAddr = "127.0.0.1"
serverPort = $ctl
auth.token = "bench"
log.level = "warn"
EOF
        if [ "$kind" = main ]; then
            for svc in "iperf $B_IPERF $E_IPERF" "http $B_HTTP $E_HTTP" "hold $B_HOLD $E_HOLD"; do
                set -- $svc
                printf '\n[[proxies]]\nname = "%s"\ntype = "tcp"\nlocalIP = "127.0.0.1"\nlocalPort = %s\nremotePort = %s\n' "$1" "$2" "$3"
            done
        else
            printf '\n[[proxies]]\nname = "iperf_ctl"\ntype = "tcp"\nlocalIP = "127.0.0.1"\nlocalPort = %s\nremotePort = %s\n' "$B_IPERF" "$E_UDP"
            printf '\n[[proxies]]\nname = "iperf_udp"\ntype = "udp"\nlocalIP = "127.0.0.1"\nlocalPort = %s\nremotePort = %s\n' "$B_IPERF" "$E_UDP"
        fi
    } >"$dir/frpc$sfx.toml"
}

# wait_tunnel KIND: entry ports listening, then one end-to-end probe per TCP service that has one.
wait_tunnel() {
    local kind=$1
    if [ "$kind" = main ]; then
        for p in "$E_IPERF" "$E_HTTP" "$E_HOLD"; do
            wait_listen "$p" tcp 20 "${INST_PIDS[@]}" || { INST_ERR="entry port $p never listened"; return 1; }
        done
        "$PY" "$LIB/holder.py" probe --port "$E_HOLD" --kind greet --timeout 20 2>>"$WORK/probe.log" \
            || { INST_ERR="no connection through the tunnel to the holder service"; return 1; }
        "$PY" "$LIB/holder.py" probe --port "$E_HTTP" --kind http --timeout 20 2>>"$WORK/probe.log" \
            || { INST_ERR="no HTTP response through the tunnel"; return 1; }
    else
        wait_listen "$E_UDP" tcp 20 "${INST_PIDS[@]}" || { INST_ERR="TCP entry port $E_UDP never listened"; return 1; }
        wait_listen "$E_UDP" udp 10 "${INST_PIDS[@]}" || { INST_ERR="UDP entry port $E_UDP never bound"; return 1; }
    fi
    return 0
}

start_instance() {
    local sys=$1 kind=$2 ctl sfx="" cfg="$OUT/configs/$1"
    INST_PIDS=(); INST_ERR=""
    [ "$kind" = udp ] && sfx="-udp"
    read -r ctl E_IPERF E_HTTP E_HOLD E_UDP M1 M2 M3 <<<"$(free_ports 8)"
    case $sys in
        direct)
            E_IPERF=$B_IPERF; E_HTTP=$B_HTTP; E_HOLD=$B_HOLD; E_UDP=$B_IPERF
            return 0 ;;
        haproxy)
            if [ "$kind" = udp ]; then INST_ERR="HAProxy does not proxy UDP"; return 1; fi
            mkdir -p "$cfg"
            haproxy_hop_cfg "$cfg/hop2.cfg" "$M1:$B_IPERF $M2:$B_HTTP $M3:$B_HOLD"
            haproxy_hop_cfg "$cfg/hop1.cfg" "$E_IPERF:$M1 $E_HTTP:$M2 $E_HOLD:$M3"
            start_bg "$WORK/haproxy-hop2.log" haproxy -db -f "$cfg/hop2.cfg"; INST_PIDS+=("$BG_PID")
            start_bg "$WORK/haproxy-hop1.log" haproxy -db -f "$cfg/hop1.cfg"; INST_PIDS+=("$BG_PID")
            ;;
        ours|rathole)
            local bin=$OURS
            [ "$sys" = rathole ] && bin=$UPSTREAM
            rathole_configs "$cfg" "$kind" "$ctl"
            start_bg "$WORK/$sys-server$sfx.log" env RUST_LOG=warn "$bin" "$cfg/server$sfx.toml"; INST_PIDS+=("$BG_PID")
            wait_listen "$ctl" tcp 20 "${INST_PIDS[@]}" || { INST_ERR="server did not listen on $ctl: $(tail -n 2 "$WORK/$sys-server$sfx.log" | tr '\n' ' ')"; return 1; }
            start_bg "$WORK/$sys-client$sfx.log" env RUST_LOG=warn "$bin" "$cfg/client$sfx.toml"; INST_PIDS+=("$BG_PID")
            ;;
        frp)
            frp_configs "$cfg" "$kind" "$ctl"
            start_bg "$WORK/frps$sfx.log" "$FRPS" -c "$cfg/frps$sfx.toml"; INST_PIDS+=("$BG_PID")
            wait_listen "$ctl" tcp 20 "${INST_PIDS[@]}" || { INST_ERR="frps did not listen on $ctl"; return 1; }
            start_bg "$WORK/frpc$sfx.log" "$FRPC" -c "$cfg/frpc$sfx.toml"; INST_PIDS+=("$BG_PID")
            ;;
    esac
    wait_tunnel "$kind" || {
        local logs
        logs=$(tail -q -n 2 "$WORK"/*"$sfx".log 2>/dev/null | grep -i -E 'error|warn|fail|panic' | head -n 2 | tr '\n' ' ' || true)
        [ -n "$logs" ] && INST_ERR+=" ($logs)"
        return 1
    }
    return 0
}

stop_instance() {
    [ "${#INST_PIDS[@]}" -gt 0 ] && stop_pids "${INST_PIDS[@]}"
    INST_PIDS=()
}

instance_alive() {
    local p
    for p in "${INST_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
    return 0
}

# ------------------------------------------------------------------------------------------------
# Workloads

# iperf_tcp SYS STREAMS KEY
iperf_tcp() {
    local sys=$1 streams=$2 key=$3 out="$WORK/$1-$3.json" t0 t1 bytes try
    for try in 1 2; do
        t0=$(cpu_ticks "${INST_PIDS[@]}")
        if timeout $((D_TCP + 20)) iperf3 -c 127.0.0.1 -p "$E_IPERF" -t "$D_TCP" -P "$streams" \
                --connect-timeout 5000 -J >"$out" 2>>"$WORK/iperf3-client.err"; then
            t1=$(cpu_ticks "${INST_PIDS[@]}")
            bytes=$(json_get "$out" "d['end']['sum_received']['bytes']")
            put "$sys" "${key}_gbps" "$(json_get "$out" "'%.2f' % (d['end']['sum_received']['bits_per_second']/1e9)")"
            [ "${#INST_PIDS[@]}" -gt 0 ] && put "$sys" "${key}_cpu" "$(cpu_per_10gb $((t1 - t0)) "$bytes")"
            log "$sys: TCP $streams stream(s): $(json_get "$out" "'%.2f' % (d['end']['sum_received']['bits_per_second']/1e9)") Gbit/s"
            return 0
        fi
        log "$sys: iperf3 TCP -P $streams failed (try $try): $(json_get "$out" "d.get('error','')" || true)"
        start_iperf_server
        sleep 1
    done
    put "$sys" "${key}_gbps" "failed"
}

# iperf_udp SYS MBIT
iperf_udp() {
    local sys=$1 rate=$2 out="$WORK/$1-udp$2.json"
    if timeout $((D_UDP + 15)) iperf3 -c 127.0.0.1 -p "$E_UDP" -u -b "${rate}M" -l 1400 -w 4M -t "$D_UDP" \
            --connect-timeout 5000 -J >"$out" 2>>"$WORK/iperf3-client.err" \
            && json_get "$out" "d['end']['sum_received']['bits_per_second']" >/dev/null; then
        put "$sys" "udp${rate}_mbps" "$(json_get "$out" "'%.0f' % (d['end']['sum_received']['bits_per_second']/1e6)")"
        put "$sys" "udp${rate}_loss" "$(json_get "$out" "'%.2f' % d['end']['sum_received']['lost_percent']")"
        log "$sys: UDP offered $rate Mbit/s: delivered $(json_get "$out" "'%.0f' % (d['end']['sum_received']['bits_per_second']/1e6)") Mbit/s"
        return 0
    fi
    log "$sys: iperf3 UDP $rate Mbit/s failed: $(json_get "$out" "d.get('error','')" || echo timeout)"
    put "$sys" "udp${rate}_mbps" "n/a"; put "$sys" "udp${rate}_loss" "n/a"
    start_iperf_server
    return 1
}

# http_run SYS KEY [wrk args...]
http_run() {
    local sys=$1 key=$2; shift 2
    local out="$WORK/$sys-$key.wrk" rps p50 p99 errs
    timeout $((D_HTTP + 20)) wrk -t2 -c"$HTTP_CONNS" -d"${D_HTTP}s" --timeout 5s --latency "$@" \
        "http://127.0.0.1:$E_HTTP/index.html" >"$out" 2>&1 || true
    read -r rps p50 p99 errs <<<"$("$PY" "$LIB/report.py" wrk "$out")"
    put "$sys" "${key}_rps" "$rps"; put "$sys" "${key}_p50" "$p50"; put "$sys" "${key}_p99" "$p99"
    [ "${errs:-0}" != 0 ] && note "$sys" "HTTP $key: wrk reported $errs socket errors or non-2xx responses"
    log "$sys: HTTP $key: $rps req/s, p50 $p50 ms, p99 $p99 ms"
}

# mem_run SYS: idle RSS, then RSS while holding each level of connections.
mem_run() {
    local sys=$1 n hpid rel st line i
    [ "${#INST_PIDS[@]}" -ge 2 ] || return 0
    sleep 1
    put "$sys" rss_idle_server_kb "$(rss_kb "${INST_PIDS[0]}")"
    put "$sys" rss_idle_client_kb "$(rss_kb "${INST_PIDS[1]}")"
    for n in $MEM_LEVELS; do
        rel="$WORK/release-$sys-$n"; st="$WORK/hold-$sys-$n.log"
        rm -f "$rel"
        start_bg "$st" "$PY" "$LIB/holder.py" hold --port "$E_HOLD" --count "$n" --concurrency 32 \
            --timeout 120 --release-file "$rel"
        hpid=$BG_PID
        line=""
        for ((i = 0; i < 2600; i++)); do
            line=$(head -n1 "$st" 2>/dev/null || true)
            [ -n "$line" ] && break
            kill -0 "$hpid" 2>/dev/null || break
            sleep 0.05
        done
        if [[ "$line" == held* ]]; then
            sleep 1
            put "$sys" "rss_${n}_server_kb" "$(rss_kb "${INST_PIDS[0]}")"
            put "$sys" "rss_${n}_client_kb" "$(rss_kb "${INST_PIDS[1]}")"
            log "$sys: holding $n connections: RSS server $(rss_kb "${INST_PIDS[0]}") KiB, client $(rss_kb "${INST_PIDS[1]}") KiB"
        else
            note "$sys" "could not hold $n connections: ${line:-holder gave no answer}"
            put "$sys" "rss_${n}_server_kb" "n/a"; put "$sys" "rss_${n}_client_kb" "n/a"
        fi
        touch "$rel"
        for ((i = 0; i < 200; i++)); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.05; done
        stop_pids "$hpid"
        sleep 1
        instance_alive || return 1
    done
}

rate_run() {
    local sys=$1 line
    line=$(timeout $((D_RATE + 30)) "$PY" "$LIB/holder.py" rate --port "$E_HOLD" --seconds "$D_RATE" --concurrency 16 || true)
    set -- $line
    if [ "${1:-}" = rate ]; then
        put "$sys" conn_rate "$2"
        [ "${6:-0}" != 0 ] && note "$sys" "connection setup: $6 of $(( $4 + $6 )) connections failed"
        log "$sys: $2 connections/s ($4 ok, $6 failed)"
    else
        put "$sys" conn_rate "failed"
    fi
}

# restart_if_dead SYS WHAT: restart the main instance when a proxy process died during WHAT.
restart_if_dead() {
    instance_alive && return 0
    note "$1" "a proxy process exited during $2; restarted it for the next workloads"
    stop_instance
    start_instance "$1" main || { note "$1" "restart failed: $INST_ERR"; return 1; }
}

run_system() {
    local sys=$1 k
    log "=== $sys"
    put "$sys" ran 1
    if start_instance "$sys" main; then
        mem_run "$sys" || true
        restart_if_dead "$sys" "the memory test" || { stop_instance; return 0; }
        iperf_tcp "$sys" 1 tcp1
        iperf_tcp "$sys" 8 tcp8
        restart_if_dead "$sys" "the TCP bitrate test" || { stop_instance; return 0; }
        http_run "$sys" http_ka
        http_run "$sys" http_close -H "Connection: close"
        restart_if_dead "$sys" "the HTTP test" || { stop_instance; return 0; }
        rate_run "$sys"
        instance_alive || note "$sys" "a proxy process exited during the connection setup test"
    else
        note "$sys" "TCP tunnel did not come up: $INST_ERR"
        for k in tcp1_gbps tcp1_cpu tcp8_gbps tcp8_cpu http_ka_rps http_ka_p50 http_ka_p99 \
                 http_close_rps http_close_p50 http_close_p99 conn_rate rss_idle_server_kb \
                 rss_idle_client_kb; do
            put "$sys" "$k" "n/a"
        done
        for k in $MEM_LEVELS; do put "$sys" "rss_${k}_server_kb" "n/a"; put "$sys" "rss_${k}_client_kb" "n/a"; done
    fi
    stop_instance
    if start_instance "$sys" udp; then
        local r ok=1
        for r in $UDP_RATES; do
            if [ "$ok" = 1 ]; then iperf_udp "$sys" "$r" || ok=0
            else put "$sys" "udp${r}_mbps" "n/a"; put "$sys" "udp${r}_loss" "n/a"; fi
        done
        [ "$ok" = 0 ] && note "$sys" "UDP: iperf3 -u through the UDP service failed or timed out (n/a)"
    else
        note "$sys" "UDP n/a: $INST_ERR"
        for r in $UDP_RATES; do put "$sys" "udp${r}_mbps" "n/a"; put "$sys" "udp${r}_loss" "n/a"; done
    fi
    stop_instance
}

START=$(date +%s)
for sys in direct haproxy frp rathole ours; do
    selected "$sys" || continue
    case $sys in
        ours) [ -n "$OURS" ] || continue ;;
        rathole) [ -n "$UPSTREAM" ] || continue ;;
        frp) [ -n "$FRPS" ] || continue ;;
    esac
    run_system "$sys"
done
[ -n "$FRPS" ] && note frp "frp ran with its defaults, so transport.tcpMux = true: all visitor connections share one multiplexed TCP connection between frpc and frps"
note _all "all proxies log at warn level (RUST_LOG=warn for both rathole builds, log.level = \"warn\" for frp, no logging in HAProxy), so no system pays for a log line per connection"
put _meta elapsed "$(( $(date +%s) - START ))"

STAMP=$(date +%Y-%m-%d-%H%M)
"$PY" "$LIB/report.py" render "$RES" "$OUT/$STAMP.md" "$OUT"
cp "$OUT/$STAMP.md" "$OUT/latest.md"
echo
log "results: $OUT/$STAMP.md, charts: $OUT/latest-bitrate.png $OUT/latest-http.png $OUT/latest-memory.png, configs: $OUT/configs/ (run took $(( $(date +%s) - START )) s)"
