#!/usr/bin/env bash
# User-space CPU instructions per request, Gatehouse against nginx, counted by
# valgrind's callgrind: unlike requests per second, the count does not move with the
# machine's load. Both servers (one worker each) are configured as benches/front_of_house.sh
# configures them (benches/front_of_house_setup.sh), with a one-worker nginx upstream
# answering 12 cacheable bytes. A client sends one warm-up request, zeroes callgrind's
# counters (callgrind_control), sends REQUESTS keep-alive GETs one after another,
# without Accept-Encoding as wrk does, and has the counters dumped: the count divided
# by REQUESTS is the cost of one request, without start-up, warm-up or shutdown.
# SCENARIO picks the request:
#   proxy   GET /proxy/x, proxied to the upstream (default)
#   static  GET /1k.txt, a 1 KiB file from the static root
#   cache   GET /cached/x, a cache hit (nginx: proxy_cache; the warm-up fills the cache)
#
#   bash benches/proxy_instructions.sh                    # SCENARIO=proxy REQUESTS=4000
#   SCENARIO=static bash benches/proxy_instructions.sh
#   GATEHOUSE_BIN=/tmp/gatehouse-old bash benches/proxy_instructions.sh
#   KEEP=/tmp/out bash benches/proxy_instructions.sh      # keep the counts for callgrind_annotate
#
# Installs nginx and valgrind from Debian when missing; builds the release binary
# unless GATEHOUSE_BIN names one.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

SCENARIO=${SCENARIO:-proxy}
REQUESTS=${REQUESTS:-4000}
FRONT_PORT=${FRONT_PORT:-19180}
UPSTREAM_PORT=${UPSTREAM_PORT:-19182}
KEEP=${KEEP:-}

case "$SCENARIO" in
    proxy) path=/proxy/x ;;
    static) path=/1k.txt ;;
    cache) path=/cached/x ;;
    *) echo "bench: SCENARIO must be proxy, static or cache, not $SCENARIO" >&2; exit 2 ;;
esac

need nginx valgrind
gatehouse=$(gatehouse_binary)

on_exit() {
    [ -f "$work/upstream.pid" ] && kill "$(cat "$work/upstream.pid")" 2>/dev/null || true
    sleep 0.3
}

. benches/front_of_house_setup.sh
# Gatehouse and nginx take turns on the same port.
front_of_house_setup "$work" 1 "$FRONT_PORT" "$FRONT_PORT" "$UPSTREAM_PORT"
nginx -c "$work/upstream.conf"

# per_request NAME COMMAND... -> the instructions callgrind counts for one request
per_request() {
    local name=$1
    shift
    # Each run starts with an empty cache: the warm-up request fills it.
    rm -rf "${work:?}/cache" && mkdir "$work/cache"
    (cd "$work" && exec valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" "$@" \
        >"$work/$name.log" 2>&1) &
    local pid=$!
    # Any answer means the server listens (nginx has no /healthz: a 404).
    for _ in $(seq 1 300); do
        curl -s -o /dev/null "http://127.0.0.1:$FRONT_PORT/healthz" && break
        sleep 1
    done
    python3 - "$REQUESTS" "$FRONT_PORT" "$path" "$work/public/1k.txt" "$pid" <<'PY'
import http.client, subprocess, sys
n, port, path, static_file, pid = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:]
expected = open(static_file, "rb").read() if path == "/1k.txt" else b"hello world\n"
connection = http.client.HTTPConnection("127.0.0.1", port)

def get():
    connection.putrequest("GET", path, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200 and body == expected, (response.status, body)
    return response.getheader("X-Cache")

def callgrind(command):
    subprocess.run(["callgrind_control", command, pid], check=True, stdout=subprocess.DEVNULL)

get()
callgrind("-z")
for _ in range(n):
    # Gatehouse says how it answered: after the warm-up, every answer is a hit.
    assert get() in (None, "HIT")
callgrind("-d")
PY
    # valgrind runs the program in its own process: the signal reaches it.
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    [ -n "$KEEP" ] && mkdir -p "$KEEP" && cp "$work/$name.out.1" "$KEEP/$SCENARIO.$name.out"
    awk -v n="$REQUESTS" '/^(summary|totals):/ { printf "%d\n", $2 / n; exit }' "$work/$name.out.1"
}

export GATEHOUSE_ENV=production GATEHOUSE__AUTH__SECRET_FILE="$work/data/secret"
g=$(per_request gatehouse "$gatehouse" --config "$work/gatehouse.toml" serve)
n=$(per_request nginx nginx -c "$work/nginx.conf" -g "daemon off; master_process off;")
echo
echo "user-space instructions per request, $SCENARIO $path (callgrind, $REQUESTS keep-alive requests, 1 worker)"
printf '%-12s %12s\n' gatehouse "$g" nginx "$n"
awk -v g="$g" -v n="$n" 'BEGIN { printf "%-12s %11.2fx\n", "ratio", g / n }'
