# The workloads of bench/run.sh. Sourced by run.sh after common.sh and systems.sh. Each one measures
# the running instance (INST_PIDS, entry ports E_*) and records figures with put SYSTEM KEY VALUE
# (the round is added by put). Durations and sizes come from run.sh: D_TCP D_UDP D_HTTP D_RATE,
# MEM_LEVELS, HOLD_N, BURST_N, BURST_DEADLINE.

# iperf_tcp SYS STREAMS KEY: Gbit/s received and the proxies' CPU seconds per 10 GB.
iperf_tcp() {
    local sys=$1 streams=$2 key=$3 out="$WORK/r$ROUND-$1-$3.json" t0 t1 bytes gbps try
    for try in 1 2; do
        t0=$(cpu_ticks "${INST_PIDS[@]}")
        if timeout $((D_TCP + 20)) iperf3 -c 127.0.0.1 -p "$E_IPERF" -t "$D_TCP" -P "$streams" \
                --connect-timeout 5000 -J >"$out" 2>>"$WORK/iperf3-client.err"; then
            t1=$(cpu_ticks "${INST_PIDS[@]}")
            bytes=$(json_get "$out" "d['end']['sum_received']['bytes']")
            gbps=$(json_get "$out" "'%.2f' % (d['end']['sum_received']['bits_per_second']/1e9)")
            put "$sys" "${key}_gbps" "$gbps"
            if [ "${#INST_PIDS[@]}" -gt 0 ]; then
                put "$sys" "${key}_cpu" "$(cpu_per_10gb $((t1 - t0)) "$bytes")"
            fi
            log "$sys: TCP $streams stream(s): $gbps Gbit/s"
            return 0
        fi
        log "$sys: iperf3 TCP -P $streams failed (try $try): $(json_get "$out" "d.get('error','')" || true)"
        start_iperf_server
    done
    put "$sys" "${key}_gbps" "failed"
}

# iperf_udp SYS MBIT: delivered rate and loss at an offered rate; 1 when the UDP path failed.
iperf_udp() {
    local sys=$1 rate=$2 out="$WORK/r$ROUND-$1-udp$2.json" mbps
    if timeout $((D_UDP + 15)) iperf3 -c 127.0.0.1 -p "$E_UDP" -u -b "${rate}M" -l 1400 -w 4M -t "$D_UDP" \
            --connect-timeout 5000 -J >"$out" 2>>"$WORK/iperf3-client.err" \
            && json_get "$out" "d['end']['sum_received']['bits_per_second']" >/dev/null; then
        mbps=$(json_get "$out" "'%.0f' % (d['end']['sum_received']['bits_per_second']/1e6)")
        put "$sys" "udp${rate}_mbps" "$mbps"
        put "$sys" "udp${rate}_loss" "$(json_get "$out" "'%.2f' % d['end']['sum_received']['lost_percent']")"
        log "$sys: UDP offered $rate Mbit/s: delivered $mbps Mbit/s"
        return 0
    fi
    log "$sys: iperf3 UDP $rate Mbit/s failed: $(json_get "$out" "d.get('error','')" || echo timeout)"
    start_iperf_server
    return 1
}

# udp_runs SYS: both offered rates, or n/a when the system has no UDP path.
udp_runs() {
    local sys=$1 r ok=1
    if [ "$sys" = haproxy ]; then
        for r in $UDP_RATES; do put "$sys" "udp${r}_mbps" "n/a"; put "$sys" "udp${r}_loss" "n/a"; done
        return 0
    fi
    if [ "$sys" != direct ] && ! udp_ready; then
        note "$sys" "UDP n/a: the UDP entry port was never bound"
        ok=0
    fi
    for r in $UDP_RATES; do
        if [ "$ok" = 1 ] && iperf_udp "$sys" "$r"; then continue; fi
        if [ "$ok" = 1 ]; then note "$sys" "UDP: iperf3 -u at $r Mbit/s through the tunnel failed or timed out"; fi
        ok=0
        put "$sys" "udp${r}_mbps" "n/a"; put "$sys" "udp${r}_loss" "n/a"
    done
}

# http_run SYS KEY [wrk args...]: req/s and latency percentiles.
http_run() {
    local sys=$1 key=$2; shift 2
    local out="$WORK/r$ROUND-$sys-$key.wrk" rps p50 p99 errs
    timeout $((D_HTTP + 20)) wrk -t2 -c"$HTTP_CONNS" -d"${D_HTTP}s" --timeout 5s --latency "$@" \
        "http://127.0.0.1:$E_HTTP/index.html" >"$out" 2>&1 || true
    read -r rps p50 p99 errs <<<"$("$PY" "$LIB/report.py" wrk "$out")"
    put "$sys" "${key}_rps" "$rps"; put "$sys" "${key}_p50" "$p50"; put "$sys" "${key}_p99" "$p99"
    if [ "${errs:-0}" != 0 ]; then note "$sys" "HTTP $key: wrk reported $errs socket errors or non-2xx responses"; fi
    log "$sys: HTTP $key: $rps req/s, p50 $p50 ms, p99 $p99 ms"
}

# hold_level SYS N: hold N connections through the tunnel (all greeted, then all echo once), read
# RSS (and at HOLD_N the kernel's memory) while they are held, then close them.
hold_level() {
    local sys=$1 n=$2 st="$WORK/r$ROUND-hold-$1-$2.log" hpid line i k0 k1 words
    k0=$(kernel_kb)
    start_bg "$st" "$LOADGEN" hold "$E_HOLD" "$n" 100 "$HOLD_TIMEOUT"
    hpid=$BG_PID
    line=""
    for ((i = 0; i < (HOLD_TIMEOUT + 40) * 20; i++)); do
        line=$(head -n1 "$st" 2>/dev/null || true)
        [ -n "$line" ] && break
        kill -0 "$hpid" 2>/dev/null || break
        sleep 0.05
    done
    read -r -a words <<<"$line"
    if [ "${words[0]:-}" = held ]; then
        sleep 0.2   # the last echoes have just passed through: let the proxies finish that turn
        put "$sys" "held_$n" "${words[1]}"
        put "$sys" "echoed_$n" "${words[3]}"
        if [ "${#INST_PIDS[@]}" -ge 2 ]; then
            put "$sys" "rss_${n}_server_kb" "$(rss_kb "${INST_PIDS[0]}")"
            put "$sys" "rss_${n}_client_kb" "$(rss_kb "${INST_PIDS[1]}")"
        fi
        if [ "$n" = "$HOLD_N" ]; then
            k1=$(kernel_kb)
            put "$sys" kern_slab_kb $(( ${k1% *} - ${k0% *} ))
            put "$sys" kern_tcpmem_kb $(( ${k1#* } - ${k0#* } ))
            if [ "${#INST_PIDS[@]}" -gt 0 ]; then put "$sys" pipes_held "$(pipe_count "${INST_PIDS[@]}")"; fi
        fi
        log "$sys: held ${words[1]} of $n, ${words[3]} echoed; RSS $(rss_kb "${INST_PIDS[@]:-0}") KiB"
        if [ "${words[1]}" != "$n" ] || [ "${words[3]}" != "$n" ]; then
            note "$sys" "held $n: only ${words[1]} held and ${words[3]} echoed"
        fi
    else
        note "$sys" "could not hold $n connections: ${line:-the load generator gave no answer}"
        put "$sys" "held_$n" "failed"
    fi
    stop_pids "$hpid"
    settle
}

# mem_run SYS: idle RSS of each process on the fresh instance, then every level of held
# connections (direct: only HOLD_N, for the kernel baseline and the echo check).
mem_run() {
    local sys=$1 n
    if [ "$sys" = direct ]; then hold_level direct "$HOLD_N"; return 0; fi
    [ "${#INST_PIDS[@]}" -ge 2 ] || return 0
    put "$sys" rss_idle_server_kb "$(rss_kb "${INST_PIDS[0]}")"
    put "$sys" rss_idle_client_kb "$(rss_kb "${INST_PIDS[1]}")"
    put "$sys" rss_idle_anon_kb "$(rss_anon_kb "${INST_PIDS[0]}" "${INST_PIDS[1]}")"
    for n in $MEM_LEVELS; do
        hold_level "$sys" "$n"
        instance_alive || return 1
    done
}

# burst_run SYS: BURST_N visitors connect at once, each sends its own 8 bytes and waits for them.
burst_run() {
    local sys=$1 line w
    line=$(timeout $((BURST_DEADLINE + 30)) "$LOADGEN" burst "$E_HOLD" "$BURST_N" "$BURST_DEADLINE" 2>>"$WORK/burst.err" || true)
    read -r -a w <<<"$line"
    if [ "${w[0]:-}" != burst ]; then
        put "$sys" burst_served failed
        note "$sys" "burst: the load generator gave no answer"
        return 0
    fi
    # burst served S of N closed C wrong W timeout T connect_s X all_s A end_s E
    put "$sys" burst_served "${w[2]}"
    put "$sys" burst_closed "${w[6]}"
    put "$sys" burst_wrong "${w[8]}"
    put "$sys" burst_timeout "${w[10]}"
    put "$sys" burst_connect_s "${w[12]}"
    put "$sys" burst_end_s "${w[16]}"
    if [ "${w[2]}" = "$BURST_N" ]; then put "$sys" burst_all_s "${w[14]}"; else put "$sys" burst_all_s "not all"; fi
    log "$sys: burst: ${w[2]} of $BURST_N served (closed ${w[6]}, wrong bytes ${w[8]}, no answer ${w[10]}); connects took ${w[12]} s, all served: ${w[14]} s, ended at ${w[16]} s"
    if [ "${w[2]}" != "$BURST_N" ]; then
        note "$sys" "burst: ${w[2]} of $BURST_N served, ${w[6]} closed without their echo, ${w[8]} got wrong bytes, ${w[10]} had no answer within ${BURST_DEADLINE} s"
    fi
}

# rate_run SYS: new tunnelled connections per second, 16 in flight.
rate_run() {
    local sys=$1 line w
    line=$(timeout $((D_RATE + 30)) "$LOADGEN" rate "$E_HOLD" "$D_RATE" 16 || true)
    read -r -a w <<<"$line"
    if [ "${w[0]:-}" = rate ]; then
        put "$sys" conn_rate "${w[1]}"
        if [ "${w[5]:-0}" != 0 ]; then note "$sys" "connection setup: ${w[5]} of $(( w[3] + w[5] )) connections failed"; fi
        log "$sys: ${w[1]} connections/s (${w[3]} ok, ${w[5]} failed)"
    else
        put "$sys" conn_rate "failed"
    fi
}
