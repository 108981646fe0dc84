#!/usr/bin/env bash
# Gatehouse against nginx on the same machine, in the same run, with the same load
# generator: a 1 KiB static file, a 100 KiB static file, a proxied request, and a cache
# hit (nginx: proxy_cache). Both servers get the same worker count; access logs are off
# on both. A third process (a one-worker nginx) is the upstream both of them proxy to.
#
#   bash benches/front_of_house.sh     # WORKERS=2 CONNECTIONS=64 DURATION=5s ROUNDS=3
#   WORKERS=1 DURATION=10s ROUNDS=5 bash benches/front_of_house.sh
#   SCENARIOS=proxy bash benches/front_of_house.sh        # only the proxied request
#   GATEHOUSE_BIN=/tmp/gatehouse-old bash benches/...     # another build, not rebuilt
#   PERF_STAT=1 bash benches/front_of_house.sh            # + CPU time per request (perf stat)
#
# SCENARIOS picks scenarios by key: static1k, static100k, proxy, cache (default: all).
#
# Each scenario runs ROUNDS times, Gatehouse and nginx alternating, and the medians are
# printed, so that load from elsewhere on the machine hits both alike.
#
# Installs nginx and wrk from Debian when missing. This is a benchmark, not a test: it
# prints figures and always exits 0 once it has measured.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
SCENARIOS=${SCENARIOS:-static1k static100k proxy cache}
GATEHOUSE_PORT=${GATEHOUSE_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
UPSTREAM_PORT=${UPSTREAM_PORT:-18082}

need nginx wrk
gatehouse=$(gatehouse_binary)

on_exit() {
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    [ -f "$work/upstream.pid" ] && kill "$(cat "$work/upstream.pid")" 2>/dev/null || true
    sleep 0.5
}

. benches/front_of_house_setup.sh
front_of_house_setup "$work" "$WORKERS" "$GATEHOUSE_PORT" "$NGINX_PORT" "$UPSTREAM_PORT"

nginx -c "$work/upstream.conf"
nginx -c "$work/nginx.conf"
GATEHOUSE_ENV=production GATEHOUSE__AUTH__SECRET_FILE="$work/data/secret" \
    "$gatehouse" --config "$work/gatehouse.toml" serve \
    >"$work/gatehouse.log" 2>&1 &
pids+=($!)

for port in "$GATEHOUSE_PORT" "$NGINX_PORT" "$UPSTREAM_PORT"; do
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$port/index.html" >/dev/null 2>&1 && break
        curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
# Sanity: both answer every path with 200, and both caches are warm.
for port in "$GATEHOUSE_PORT" "$NGINX_PORT"; do
    for path in /1k.txt /100k.txt /proxy/x /cached/x /cached/x; do
        status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$path")
        if [ "$status" != 200 ]; then
            echo "bench: $path on port $port answered $status" >&2
            cat "$work/gatehouse.log" >&2
            exit 1
        fi
    done
done
cache_label=$(curl -s -D - -o /dev/null "http://127.0.0.1:$GATEHOUSE_PORT/cached/x" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
[ "$cache_label" = HIT ] || { echo "bench: Gatehouse cache answered X-Cache: $cache_label" >&2; exit 1; }

# run URL PIDS -> "requests_per_second p99_ms cpu_us_per_request"
# With PERF_STAT=1 the server's processes (PIDS, comma-separated) are watched by
# `perf stat` while wrk runs: CPU time per request, which other load on the machine
# changes less than it changes requests per second.
run() {
    local seconds=${DURATION%s}
    if [ "${PERF_STAT:-0}" = 1 ]; then
        perf stat -x, -e task-clock -p "$2" -o "$work/perf.txt" -- sleep "$seconds" &
        local perf_pid=$!
    fi
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1" 2>/dev/null > "$work/wrk.txt"
    local cpu_ms=0
    if [ "${PERF_STAT:-0}" = 1 ]; then
        wait "$perf_pid" || true
        cpu_ms=$(awk -F, '$3 ~ /^task-clock/ { print $1 }' "$work/perf.txt")
    fi
    awk -v cpu_ms="${cpu_ms:-0}" -v seconds="$seconds" '
        /Requests\/sec/ { rps = $2 }
        /^ +99%/ {
            v = $2
            if (v ~ /us$/) { sub(/us$/, "", v); v = v / 1000 }
            else if (v ~ /ms$/) { sub(/ms$/, "", v) }
            else if (v ~ /s$/) { sub(/s$/, "", v); v = v * 1000 }
            p99 = v
        }
        END {
            requests = rps * seconds
            cpu_us = 0
            if (requests > 0) cpu_us = cpu_ms * 1000 / requests
            printf "%.0f %.2f %.1f\n", rps, p99, cpu_us
        }' "$work/wrk.txt"
}

# median of the numbers on stdin
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo
echo "Gatehouse vs nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), $WORKERS workers each, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS alternating rounds, $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg) at start"
printf '%-22s %14s %10s %14s %10s %8s\n' scenario "gatehouse r/s" "p99 ms" "nginx r/s" "p99 ms" ratio
gatehouse_pids=${pids[0]}
# nginx's workers only: its cache loader exits a minute after start, and perf stat
# refuses a list naming a process that is gone.
nginx_pids=$(ps --ppid "$(cat "$work/nginx.pid")" -o pid=,args= | awk '/worker process/ { print $1 }' | paste -sd,)
for scenario in "static1k|1 KiB static|/1k.txt" "static100k|100 KiB static|/100k.txt" "proxy|proxied request|/proxy/x" "cache|cache hit|/cached/x"; do
    key=${scenario%%|*}
    rest=${scenario#*|}
    name=${rest%%|*}
    path=${rest##*|}
    case " $SCENARIOS " in *" $key "*) ;; *) continue ;; esac
    wrk -t1 -c8 -d1s "http://127.0.0.1:$GATEHOUSE_PORT$path" >/dev/null 2>&1
    wrk -t1 -c8 -d1s "http://127.0.0.1:$NGINX_PORT$path" >/dev/null 2>&1
    : > "$work/g.txt"
    : > "$work/n.txt"
    for _ in $(seq 1 "$ROUNDS"); do
        run "http://127.0.0.1:$GATEHOUSE_PORT$path" "$gatehouse_pids" >> "$work/g.txt"
        run "http://127.0.0.1:$NGINX_PORT$path" "$nginx_pids" >> "$work/n.txt"
    done
    g_rps=$(cut -d' ' -f1 "$work/g.txt" | median)
    g_p99=$(cut -d' ' -f2 "$work/g.txt" | median)
    n_rps=$(cut -d' ' -f1 "$work/n.txt" | median)
    n_p99=$(cut -d' ' -f2 "$work/n.txt" | median)
    ratio=$(awk -v g="$g_rps" -v n="$n_rps" 'BEGIN { if (n > 0) printf "%.2f", g / n; else print "-" }')
    printf '%-22s %14.0f %10.2f %14.0f %10.2f %7sx\n' "$name" "$g_rps" "$g_p99" "$n_rps" "$n_p99" "$ratio"
    if [ "${PERF_STAT:-0}" = 1 ]; then
        g_cpu=$(cut -d' ' -f3 "$work/g.txt" | median)
        n_cpu=$(cut -d' ' -f3 "$work/n.txt" | median)
        printf '%-22s %14s %10s %14s %10s\n' "  CPU per request" "$g_cpu us" "" "$n_cpu us" ""
    fi
done
