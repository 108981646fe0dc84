#!/usr/bin/env bash
# User-space CPU instructions per proxied request, Gatehouse against nginx, counted by
# valgrind's callgrind: unlike requests per second, the count does not move with the
# machine's load. Each server (one worker) proxies to a one-worker nginx upstream
# answering 12 bytes; a client sends REQUESTS keep-alive GETs one after another. Each
# server runs twice, with 0 and with REQUESTS requests, and the difference divided by
# REQUESTS is the cost of one request (start-up and shutdown cancel out).
#
#   bash benches/proxy_instructions.sh                    # REQUESTS=4000
#   GATEHOUSE_BIN=/tmp/gatehouse-old bash benches/proxy_instructions.sh
#
# Installs nginx and valgrind from Debian when missing; builds the release binary
# unless GATEHOUSE_BIN names one.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-4000}
GATEHOUSE_BIN=${GATEHOUSE_BIN:-}
FRONT_PORT=${FRONT_PORT:-19180}
UPSTREAM_PORT=${UPSTREAM_PORT:-19182}

if ! command -v nginx >/dev/null || ! command -v valgrind >/dev/null; then
    echo "bench: installing nginx and valgrind" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx valgrind >/dev/null
fi
if [ -z "$GATEHOUSE_BIN" ]; then
    echo "bench: building Gatehouse (release)" >&2
    cargo build --release --quiet --bin gatehouse
    GATEHOUSE_BIN=$PWD/target/release/gatehouse
fi

work=$(mktemp -d)
cleanup() {
    [ -f "$work/upstream.pid" ] && kill "$(cat "$work/upstream.pid")" 2>/dev/null || true
    sleep 0.3
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/data" "$work/public"

cat > "$work/upstream.conf" <<EOC
user root; worker_processes 1; pid $work/upstream.pid; error_log $work/upstream.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / { default_type text/plain; return 200 "hello world\n"; }
    }
}
EOC
cat > "$work/nginx.conf" <<EOC
user root; worker_processes 1; daemon off; master_process off;
pid $work/nginx.pid; error_log $work/nginx.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$FRONT_PORT;
        location /proxy/ { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
        location = /healthz { return 200 "ok"; }
    }
}
EOC
cat > "$work/gatehouse.toml" <<EOC
[server]
bind = "127.0.0.1:$FRONT_PORT"
workers = 1
[database]
url = "sqlite://$work/data/gatehouse.db?mode=rwc"
actors = 1
[static]
root = "$work/public"
[log]
level = "warn"
access_log = false
[upstreams.app]
servers = [{ url = "http://127.0.0.1:$UPSTREAM_PORT" }]
[[routes]]
path = "/api"
handler = "api"
[[routes]]
path = "/proxy"
handler = "proxy"
upstream = "app"
EOC
nginx -c "$work/upstream.conf"

# count NAME N COMMAND... -> the instructions callgrind counted for N requests
count() {
    local name=$1 n=$2
    shift 2
    (cd "$work" && exec valgrind --tool=callgrind --callgrind-out-file="$work/$name.$n.out" "$@" \
        >"$work/$name.log" 2>&1) &
    local pid=$!
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$FRONT_PORT/healthz" >/dev/null 2>&1 && break
        sleep 1
    done
    python3 - "$n" "$FRONT_PORT" <<'PY'
import http.client, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
connection = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    connection.request("GET", "/proxy/x")
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200 and body == b"hello world\n", (response.status, body)
PY
    # valgrind runs the program in its own process: the signal reaches it.
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    awk '/^(summary|totals):/ { print $2; exit }' "$work/$name.$n.out"
}

per_request() {
    local name=$1
    shift
    local idle busy
    idle=$(count "$name" 0 "$@")
    busy=$(count "$name" "$REQUESTS" "$@")
    echo $(((busy - idle) / REQUESTS))
}

export GATEHOUSE_ENV=production GATEHOUSE__AUTH__SECRET_FILE="$work/data/secret"
g=$(per_request gatehouse "$GATEHOUSE_BIN" --config "$work/gatehouse.toml" serve)
n=$(per_request nginx nginx -c "$work/nginx.conf")
echo
echo "user-space instructions per proxied request (callgrind, $REQUESTS keep-alive requests, 1 worker)"
printf '%-12s %12s\n' gatehouse "$g" nginx "$n"
awk -v g="$g" -v n="$n" 'BEGIN { printf "%-12s %11.2fx\n", "ratio", g / n }'
