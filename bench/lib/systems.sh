# The systems bench/run.sh compares: their configs, starting and stopping them. Sourced by run.sh
# after common.sh; uses its globals (B_* backend ports, OURS, UPSTREAM, FRPS, FRPC, CERTS, WORK).
#
# start_instance SYSTEM KIND starts one instance, KIND being
#   plain: TCP services iperf, http, hold, plus iperf_ctl (TCP) and iperf_udp (UDP) on one port,
#          with each system's plain transport (frp: transport.tls.enable = false);
#   tls:   TCP services iperf and http over the system's TLS transport (ours and upstream rathole:
#          transport type "tls" with a throwaway CA; frp: its default, TLS on).
# It sets INST_PIDS (server first, then client; HAProxy: hop 1, hop 2), the entry ports E_IPERF
# E_HTTP E_HOLD E_UDP, and INST_FDS (the processes' open fds once idle). On failure it returns 1 with
# INST_ERR set.

INST_PIDS=()
INST_ERR=""
INST_FDS=0
E_IPERF=""; E_HTTP=""; E_HOLD=""; E_UDP=""

# service_table SIDE NAME TYPE ADDR_KEY PORT
service_table() {
    printf '\n[%s.services.%s]\ntype = "%s"\ntoken = "bench-%s"\n%s = "127.0.0.1:%s"\n' "$1" "$2" "$3" "$2" "$4" "$5"
}

# rathole_configs DIR KIND CTL: upstream rathole's TOML format, read by ours and upstream alike.
# Everything not written here (nodelay, heartbeats, pool sizes) stays at rathole's defaults.
rathole_configs() {
    local dir=$1 kind=$2 ctl=$3
    mkdir -p "$dir"
    {
        printf '[server]\nbind_addr = "127.0.0.1:%s"\n' "$ctl"
        if [ "$kind" = tls ]; then
            printf '\n[server.transport]\ntype = "tls"\n\n[server.transport.tls]\npkcs12 = "%s"\npkcs12_password = "%s"\n' \
                "$CERTS/server.p12" "$CERT_PASS"
        fi
        service_table server iperf tcp bind_addr "$E_IPERF"
        service_table server http tcp bind_addr "$E_HTTP"
        if [ "$kind" = plain ]; then
            service_table server hold tcp bind_addr "$E_HOLD"
            service_table server iperf_ctl tcp bind_addr "$E_UDP"
            service_table server iperf_udp udp bind_addr "$E_UDP"
        fi
    } >"$dir/server-$kind.toml"
    {
        printf '[client]\nremote_addr = "127.0.0.1:%s"\n' "$ctl"
        if [ "$kind" = tls ]; then
            printf '\n[client.transport]\ntype = "tls"\n\n[client.transport.tls]\ntrusted_root = "%s"\nhostname = "localhost"\n' \
                "$CERTS/ca.pem"
        fi
        service_table client iperf tcp local_addr "$B_IPERF"
        service_table client http tcp local_addr "$B_HTTP"
        if [ "$kind" = plain ]; then
            service_table client hold tcp local_addr "$B_HOLD"
            service_table client iperf_ctl tcp local_addr "$B_IPERF"
            service_table client iperf_udp udp local_addr "$B_IPERF"
        fi
    } >"$dir/client-$kind.toml"
}

# frp_proxy NAME TYPE LOCAL_PORT REMOTE_PORT
frp_proxy() {
    printf '\n[[proxies]]\nname = "%s"\ntype = "%s"\nlocalIP = "127.0.0.1"\nlocalPort = %s\nremotePort = %s\n' "$@"
}

# frp_configs DIR KIND CTL: frp >= 0.52 TOML. Everything but addresses, ports, token, log level and
# (plain only) transport.tls.enable stays at frp's defaults: transport.tcpMux = true, poolCount = 1.
frp_configs() {
    local dir=$1 kind=$2 ctl=$3
    mkdir -p "$dir"
    printf 'bindAddr = "127.0.0.1"\nbindPort = %s\nauth.token = "bench"\nlog.level = "warn"\n' "$ctl" >"$dir/frps-$kind.toml"
    {
        printf 'serverAddr = "127.0.0.1"\nserverPort = %s\nauth.token = "bench"\nlog.level = "warn"\n' "$ctl"
        # frp >= 0.50 defaults to TLS between frpc and frps; the plain rows compare plain TCP.
        [ "$kind" = plain ] && printf 'transport.tls.enable = false\n'
        frp_proxy iperf tcp "$B_IPERF" "$E_IPERF"
        frp_proxy http tcp "$B_HTTP" "$E_HTTP"
        if [ "$kind" = plain ]; then
            frp_proxy hold tcp "$B_HOLD" "$E_HOLD"
            frp_proxy iperf_ctl tcp "$B_IPERF" "$E_UDP"
            frp_proxy iperf_udp udp "$B_IPERF" "$E_UDP"
        fi
    } >"$dir/frpc-$kind.toml"
}

# wait_tunnel KIND: entry ports listening, then end-to-end probes through the tunnel.
wait_tunnel() {
    local kind=$1 p ports=("$E_IPERF" "$E_HTTP")
    [ "$kind" = plain ] && ports+=("$E_HOLD")
    for p in "${ports[@]}"; do
        wait_listen "$p" tcp 20 "${INST_PIDS[@]}" || { INST_ERR="entry port $p never listened"; return 1; }
    done
    if [ "$kind" = plain ]; then
        "$LOADGEN" probe "$E_HOLD" greet 20 2>>"$WORK/probe.log" \
            || { INST_ERR="no connection through the tunnel to the holder service"; return 1; }
    fi
    "$LOADGEN" probe "$E_HTTP" http 20 2>>"$WORK/probe.log" \
        || { INST_ERR="no HTTP response through the tunnel"; return 1; }
    return 0
}

# udp_ready: the UDP entry port of a plain instance is bound (TCP and UDP), for systems with UDP.
udp_ready() {
    wait_listen "$E_UDP" tcp 10 "${INST_PIDS[@]}" && wait_listen "$E_UDP" udp 10 "${INST_PIDS[@]}"
}

start_instance() {
    local sys=$1 kind=$2 ctl m1 m2 m3 cfg="$WORK/configs/$1"
    INST_PIDS=(); INST_ERR=""; INST_FDS=0
    read -r ctl E_IPERF E_HTTP E_HOLD E_UDP m1 m2 m3 <<<"$(free_ports 8)"
    case $sys in
        direct)
            E_IPERF=$B_IPERF; E_HTTP=$B_HTTP; E_HOLD=$B_HOLD; E_UDP=$B_IPERF
            return 0 ;;
        haproxy)
            mkdir -p "$cfg"
            haproxy_hop_cfg "$cfg/hop2.cfg" "$m1:$B_IPERF $m2:$B_HTTP $m3:$B_HOLD"
            haproxy_hop_cfg "$cfg/hop1.cfg" "$E_IPERF:$m1 $E_HTTP:$m2 $E_HOLD:$m3"
            start_bg "$WORK/r$ROUND-haproxy-hop1.log" haproxy -db -f "$cfg/hop1.cfg"; INST_PIDS+=("$BG_PID")
            start_bg "$WORK/r$ROUND-haproxy-hop2.log" haproxy -db -f "$cfg/hop2.cfg"; INST_PIDS+=("$BG_PID")
            ;;
        ours|rathole)
            local bin=$OURS
            [ "$sys" = rathole ] && bin=$UPSTREAM
            rathole_configs "$cfg" "$kind" "$ctl"
            start_bg "$WORK/r$ROUND-$sys-server-$kind.log" env RUST_LOG=warn "$bin" "$cfg/server-$kind.toml"; INST_PIDS+=("$BG_PID")
            wait_listen "$ctl" tcp 20 "${INST_PIDS[@]}" \
                || { INST_ERR="server did not listen on $ctl: $(tail -n 2 "$WORK/r$ROUND-$sys-server-$kind.log" | tr '\n' ' ')"; return 1; }
            start_bg "$WORK/r$ROUND-$sys-client-$kind.log" env RUST_LOG=warn "$bin" "$cfg/client-$kind.toml"; INST_PIDS+=("$BG_PID")
            ;;
        frp)
            frp_configs "$cfg" "$kind" "$ctl"
            start_bg "$WORK/r$ROUND-frps-$kind.log" "$FRPS" -c "$cfg/frps-$kind.toml"; INST_PIDS+=("$BG_PID")
            wait_listen "$ctl" tcp 20 "${INST_PIDS[@]}" || { INST_ERR="frps did not listen on $ctl"; return 1; }
            start_bg "$WORK/r$ROUND-frpc-$kind.log" "$FRPC" -c "$cfg/frpc-$kind.toml"; INST_PIDS+=("$BG_PID")
            ;;
    esac
    wait_tunnel "$kind" || {
        local logs
        logs=$(tail -q -n 3 "$WORK"/r"$ROUND"-*-"$kind".log "$WORK"/r"$ROUND"-haproxy-*.log 2>/dev/null \
            | grep -i -E 'error|warn|fail|panic|alert' | head -n 2 | tr '\n' ' ' || true)
        [ -n "$logs" ] && INST_ERR+=" ($logs)"
        return 1
    }
    INST_FDS=$(fd_count "${INST_PIDS[@]}")
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

# settle: after connections closed, wait (up to 15 s) until the proxies hold about as many fds as
# when idle, so the next workload starts from a quiet instance.
settle() {
    local i
    [ "${#INST_PIDS[@]}" -gt 0 ] || return 0
    for ((i = 0; i < 300; i++)); do
        [ "$(fd_count "${INST_PIDS[@]}")" -le $((INST_FDS + 64)) ] && return 0
        instance_alive || return 0
        sleep 0.05
    done
    log "proxies still hold $(fd_count "${INST_PIDS[@]}") fds (idle: $INST_FDS) 15 s after the connections closed"
}
