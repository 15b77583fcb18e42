# Shared helpers for bench/run.sh and the perf/ scripts. Source it; do not run it.
# Every process started through start_bg is recorded and ended by cleanup (installed as an EXIT trap
# by the caller), so a run never leaves a process or a bound port behind.

BENCH_PIDS=()
# The real interpreter, resolved once (a pyenv shim costs tens of milliseconds per call).
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || echo python3)

log() { printf '%s %s\n' "[$(date +%H:%M:%S)]" "$*" >&2; }
die() { log "error: $*"; exit 1; }

APT_UPDATED=0
# ensure_tool COMMAND PACKAGE: install PACKAGE with apt-get when COMMAND is missing.
ensure_tool() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    [ -x "/usr/sbin/$cmd" ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "$cmd is missing and apt-get is not available: install $pkg"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing $pkg (for $cmd)"
    if [ "$APT_UPDATED" = 0 ]; then
        $sudo apt-get update -qq >/dev/null 2>&1 || true
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null 2>&1 \
        || die "apt-get install $pkg failed"
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || die "$pkg installed but $cmd not found"
}

# free_ports N: print N distinct free TCP+UDP ports on 127.0.0.1, below the ephemeral range so that
# outgoing connections made during the run cannot take them.
free_ports() {
    "$PY" - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
lo_eph = 32768
try:
    lo_eph = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except Exception:
    pass
lo, hi = 20000, max(20000 + 4 * n + 100, lo_eph - 1)
chosen = []
tries = 0
while len(chosen) < n:
    tries += 1
    if tries > 100000:
        sys.exit("no free ports")
    p = random.randint(lo, hi)
    if p in chosen:
        continue
    ok = True
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        finally:
            s.close()
    if ok:
        chosen.append(p)
print(" ".join(map(str, chosen)))
PY
}

# is_listening PORT [tcp|udp]: true when some socket listens on (tcp) or is bound to (udp) PORT.
is_listening() {
    local port=$1 proto=${2:-tcp} hex
    hex=$(printf '%04X' "$port")
    if [ "$proto" = tcp ]; then
        awk -v h="$hex" 'NR>1 { split($2, a, ":"); if (a[2] == h && $4 == "0A") f=1 } END { exit !f }' \
            /proc/net/tcp /proc/net/tcp6 2>/dev/null
    else
        awk -v h="$hex" 'NR>1 { split($2, a, ":"); if (a[2] == h) f=1 } END { exit !f }' \
            /proc/net/udp /proc/net/udp6 2>/dev/null
    fi
}

# wait_listen PORT PROTO TIMEOUT_S [PID...]: poll until PORT is listening; fail early when a PID died.
wait_listen() {
    local port=$1 proto=$2 timeout=$3; shift 3
    local deadline=$(( $(date +%s%N) / 1000000 + timeout * 1000 )) p
    while :; do
        is_listening "$port" "$proto" && return 0
        for p in "$@"; do
            kill -0 "$p" 2>/dev/null || { log "process $p exited while waiting for port $port/$proto"; return 1; }
        done
        [ $(( $(date +%s%N) / 1000000 )) -ge "$deadline" ] && { log "timeout waiting for port $port/$proto"; return 1; }
        sleep 0.05
    done
}

# wait_port_free PORT TIMEOUT_S: poll until nothing listens on PORT (tcp).
wait_port_free() {
    local port=$1 timeout=$2 i
    for ((i = 0; i < timeout * 20; i++)); do
        is_listening "$port" tcp || return 0
        sleep 0.05
    done
    return 1
}

# start_bg LOGFILE CMD...: run CMD in the background with stdout+stderr to LOGFILE; sets BG_PID.
start_bg() {
    local logf=$1; shift
    "$@" >"$logf" 2>&1 </dev/null &
    BG_PID=$!
    BENCH_PIDS+=("$BG_PID")
}

# stop_pids PID...: SIGTERM, wait up to 3 s, then SIGKILL; reaps them.
stop_pids() {
    local p i alive
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for ((i = 0; i < 60; i++)); do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.05
    done
    for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
    local keep=() q found
    for q in "${BENCH_PIDS[@]}"; do
        found=0
        for p in "$@"; do [ "$q" = "$p" ] && found=1; done
        [ "$found" = 0 ] && keep+=("$q")
    done
    BENCH_PIDS=("${keep[@]}")
}

cleanup_all() {
    [ "${#BENCH_PIDS[@]}" -gt 0 ] && stop_pids "${BENCH_PIDS[@]}"
    return 0
}

# cpu_ticks PID...: utime+stime of all threads of the processes, in clock ticks.
cpu_ticks() {
    local p total=0 t
    for p in "$@"; do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# rss_kb PID...: sum of VmRSS in KiB.
rss_kb() {
    local p total=0 r
    for p in "$@"; do
        r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
        total=$((total + ${r:-0}))
    done
    echo "$total"
}

# rss_anon_kb PID...: sum of RssAnon in KiB (RSS without the program's file pages).
rss_anon_kb() {
    local p total=0 r
    for p in "$@"; do
        r=$(awk '/^RssAnon:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
        total=$((total + ${r:-0}))
    done
    echo "$total"
}

# fd_count PID...: open file descriptors of the processes together.
fd_count() {
    local p total=0 n
    for p in "$@"; do
        n=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        total=$((total + n))
    done
    echo "$total"
}

# pipe_count PID...: pipe ends the processes hold.
pipe_count() {
    local p total=0 n
    for p in "$@"; do
        n=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 -lname 'pipe:*' 2>/dev/null | wc -l)
        total=$((total + n))
    done
    echo "$total"
}

# kernel_kb: "SLAB_KB TCPMEM_KB", the kernel's slab memory (/proc/meminfo Slab: sockets, files,
# epoll and io_uring entries, pipe buffer arrays) and TCP socket buffers (/proc/net/sockstat, pages).
kernel_kb() {
    local slab pages
    slab=$(awk '/^Slab:/ { print $2 }' /proc/meminfo)
    pages=$(awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat)
    echo "$slab $(( ${pages:-0} * $(getconf PAGESIZE) / 1024 ))"
}

# json_get FILE EXPR: evaluate a python expression over the parsed JSON document `d`.
json_get() {
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null
}

# cpu_per_10gb TICKS BYTES: CPU seconds per 10 GB (1e10 bytes), 2 decimals.
cpu_per_10gb() {
    "$PY" -c 'import sys; t,b,hz=map(float,sys.argv[1:]); print("%.2f" % (t/hz*1e10/b) if b>0 else "n/a")' "$1" "$2" "$CLK_TCK"
}

# round_order N NAME...: the names in round N's order: rotated left by N-1, so that over as many
# rounds as names each one runs once in every position (a Latin square), first and last alike.
round_order() {
    local n=$1; shift
    local k=$# i names=("$@")
    for ((i = 0; i < k; i++)); do printf '%s ' "${names[$(( (i + n - 1) % k ))]}"; done
}

# machine_line: cores, CPU, memory, kernel, open-file limit and load, for result headers.
machine_line() {
    echo "$(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), open-file limit $(ulimit -n), load average before the run $(cut -d' ' -f1-3 /proc/loadavg)"
}

# ours_commit ROOT: the checked-out commit and the hash of its Sources tree (which a rebase keeps
# as long as Sources is the same, so a result still names the code it measured after the commit
# hash changed), marked when Sources or Package.swift have local changes.
ours_commit() {
    local root=$1 c
    c=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    c+=", Sources tree $(git -C "$root" rev-parse --short HEAD:Sources 2>/dev/null || echo unknown)"
    git -C "$root" diff --quiet HEAD -- Sources Package.swift 2>/dev/null || c+=", with uncommitted changes"
    echo "$c"
}

# rathole_binary ROOT SCRATCH BUILD: print the release rathole a script runs: $RATHOLE_BIN when set,
# else SCRATCH/release/rathole, built first when BUILD is 1. Exits 1 when there is none.
rathole_binary() {
    local root=$1 scratch=$2 build=$3 bin=${RATHOLE_BIN:-}
    if [ -z "$bin" ]; then
        bin=$scratch/release/rathole
        if [ "$build" = 1 ]; then
            log "building rathole (swift build -c release --static-swift-stdlib --product rathole)"
            (cd "$root" && swift build -c release --static-swift-stdlib --product rathole --scratch-path "$scratch" >&2) \
                || die "swift build failed"
        fi
    fi
    [ -x "$bin" ] || die "rathole not found at $bin (build it, or pass --scratch-path / RATHOLE_BIN=)"
    echo "$bin"
}

# nginx_static DIR PORT: write DIR/nginx.conf, one worker serving DIR/www (index.html, 1 KiB) on
# 127.0.0.1:PORT with keep-alive; run it with `nginx -c DIR/nginx.conf -p DIR`. The worker runs as
# nobody, so DIR's parents must be searchable by everyone.
nginx_static() {
    local dir=$1 port=$2
    mkdir -p "$dir/www" "$dir/tmp"
    chmod 755 "$dir" "$dir/www"
    "$PY" -c 'import sys; sys.stdout.write("<html><body>" + "x" * 998 + "</body></html>\n")' >"$dir/www/index.html"
    chmod 644 "$dir/www/index.html"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    default_type text/html;
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $dir/www;
        location / { }
    }
}
EOF
}

# haproxy_hop_cfg FILE "LISTEN_PORT:TARGET_PORT ..." : write a one-thread tcp-mode HAProxy config that
# splices each LISTEN_PORT on 127.0.0.1 to TARGET_PORT on 127.0.0.1. maxconn 9000 (global and per
# frontend) lets a hop hold the 8,000 connections of the held and burst workloads. HAProxy sizes its
# fd limit from maxconn and maxpipes (2 fds each; maxpipes defaults to maxconn / 4, which would ask
# for 22,516 fds): 500 pipes keep it under the 20,000 open-file limit and are plenty for splicing
# the few busy connections of the bitrate runs.
haproxy_hop_cfg() {
    local file=$1 pairs=$2 pair l t
    {
        cat <<CFG
global
    nbthread 1
    maxconn 9000
    maxpipes 500
    tune.pipesize 262144

defaults
    mode tcp
    maxconn 9000
    option splice-request
    option splice-response
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout client-fin 5s
    timeout server-fin 5s
CFG
        for pair in $pairs; do
            l=${pair%%:*}; t=${pair##*:}
            cat <<CFG

listen hop_$l
    bind 127.0.0.1:$l
    server target 127.0.0.1:$t
CFG
        done
    } >"$file"
}
