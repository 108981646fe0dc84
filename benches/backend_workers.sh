#!/usr/bin/env bash
# The cost of the hop to in-process backend workers: the same API requests answered by
# the front end itself (route handler "api") and through its proxy by two backend
# workers (`backend://1`, `backend://2`), in one run on one machine, Gatehouse on SQLite.
#   health  GET /api/health                  (the hop alone: the handler does nothing)
#   list    GET /api/collections/users/records as a superuser (a database read)
# Each case runs ROUNDS times, the two set-ups alternating; medians are printed.
#
#   bash benches/backend_workers.sh              # WORKERS=2 CONNECTIONS=32 DURATION=5s ROUNDS=3
#   GATEHOUSE_BIN=/tmp/gatehouse-old bash benches/backend_workers.sh
#
# Installs wrk from Debian when missing; builds the release binary unless GATEHOUSE_BIN
# names one. A benchmark, not a test: it prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
DIRECT_PORT=${DIRECT_PORT:-18180}
WORKERS_PORT=${WORKERS_PORT:-18181}
admin_email=bench-root@example.com
admin_password=bench-root-password-123

need wrk
gatehouse=$(gatehouse_binary)

# One instance per set-up, each with its own database.
start() {
    local name=$1 port=$2 routes=$3
    mkdir -p "$work/$name/public"
    cat > "$work/$name/gatehouse.toml" <<EOF
[server]
bind = "127.0.0.1:$port"
workers = $WORKERS
[database]
url = "sqlite://$work/$name/gatehouse.db?mode=rwc"
[static]
root = "$work/$name/public"
[log]
level = "warn"
access_log = false
$routes
EOF
    "$gatehouse" --config "$work/$name/gatehouse.toml" superuser upsert \
        "$admin_email" "$admin_password" >/dev/null
    GATEHOUSE_ENV=production GATEHOUSE__AUTH__SECRET_FILE="$work/$name/secret" \
        "$gatehouse" --config "$work/$name/gatehouse.toml" serve >"$work/$name.log" 2>&1 &
    pids+=($!)
    wait_up "http://127.0.0.1:$port/api/health" 100 "$work/$name.log"
}

start direct "$DIRECT_PORT" ''
start workers "$WORKERS_PORT" '
[[routes]]
path = "/api"
handler = "proxy"
upstream = "api"
[upstreams.api]
servers = [{ url = "backend://1" }, { url = "backend://2" }]
strategy = "least_connections"
health_check = { path = "/readyz", interval = "2s" }'

token() {
    curl -fs "http://127.0.0.1:$1/api/collections/_superusers/auth-with-password" \
        -H 'content-type: application/json' \
        -d "{\"identity\":\"$admin_email\",\"password\":\"$admin_password\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
declare -A auth=([direct]=$(token "$DIRECT_PORT") [workers]=$(token "$WORKERS_PORT"))
declare -A port=([direct]=$DIRECT_PORT [workers]=$WORKERS_PORT)

rate() { # name path [header]
    local out
    out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" ${3:+-H "$3"} "http://127.0.0.1:${port[$1]}$2")
    awk '/Requests\/sec/ {print $2}' <<<"$out"
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '\nfront end answering itself vs two backend workers behind its proxy, %s HTTP workers, wrk -t2 -c%s -d%s, median of %s\n' \
    "$WORKERS" "$CONNECTIONS" "$DURATION" "$ROUNDS"
printf '%-8s %14s %14s %8s\n' case direct workers ratio
for case in "health|/api/health" "list|/api/collections/users/records"; do
    name=${case%%|*} path=${case#*|}
    declare -a direct=() workers=()
    for _ in $(seq 1 "$ROUNDS"); do
        direct+=("$(rate direct "$path" "Authorization: ${auth[direct]}")")
        workers+=("$(rate workers "$path" "Authorization: ${auth[workers]}")")
    done
    d=$(median "${direct[@]}") w=$(median "${workers[@]}")
    printf '%-8s %14.0f %14.0f %7.2fx\n' "$name" "$d" "$w" "$(python3 -c "print($w / $d)")"
done
