#!/usr/bin/env bash
# Cluster scaling: an authenticated records read through the entry point (one
# Gatehouse balancing with config/cluster/front.toml) over 1, then 2 backend
# instances on the shared PostgreSQL and Redis, each backend pinned to its own core
# with taskset. The entry point and wrk are not pinned; on a 2-core machine they share
# the cores with the backends, so efficiency below 100% is partly their cost.
#   benches/cluster_scaling.sh      (DURATION=10s CONNECTIONS=32 THREADS=2 to change the load)
# DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test) and REDIS_URL
# (default redis://127.0.0.1:6379) name the shared servers; the bench uses a schema
# and key prefix of its own and drops the schema afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

duration=${DURATION:-10s}
connections=${CONNECTIONS:-32}
threads=${THREADS:-2}
database=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
redis=${REDIS_URL:-redis://127.0.0.1:6379}
cores=$(nproc)
[ "$cores" -ge 2 ] || { echo "needs at least 2 cores" >&2; exit 1; }

need wrk
gatehouse=$(gatehouse_binary)

schema="bench_scaling_$$"
on_exit() {
    psql "$database" -qc "DROP SCHEMA IF EXISTS \"$schema\" CASCADE" >/dev/null 2>&1 || true
}

json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

export GATEHOUSE__DATABASE__URL="$database" GATEHOUSE__DATABASE__SCHEMA="$schema"
export GATEHOUSE__REDIS__URL="$redis" GATEHOUSE__REDIS__KEY_PREFIX="bench-scaling-$$"
export GATEHOUSE__AUTH__TOKEN_SECRET
GATEHOUSE__AUTH__TOKEN_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '/+=\n')
export GATEHOUSE__LOG__LEVEL=warn GATEHOUSE__LOG__ACCESS_LOG=false
for bucket in LOGIN_PER_IP LOGIN_PER_ACCOUNT REGISTER_PER_IP; do
    export "GATEHOUSE__AUTH__RATE_LIMITS__${bucket}__REQUESTS=0"
done

# Backend $1 (0 or 1) on core $1, listening on port $2.
backend() {
    taskset -c "$1" "$gatehouse" --config config/cluster/backend.toml \
        serve --http "127.0.0.1:$2" >"$work/backend-$1.log" 2>&1 &
    pids+=($!)
    wait_up "http://127.0.0.1:$2/readyz"
}

# The entry point over the given backend ports, on port $1.
front() {
    local port=$1; shift
    local servers=""
    for backend_port in "$@"; do servers+="{ url = \"http://127.0.0.1:$backend_port\" }, "; done
    sed -e "s|^servers = .*|servers = [${servers%, }]|" \
        -e "s|data/cluster|$work/front|g" config/cluster/front.toml >"$work/front.toml"
    (unset GATEHOUSE__DATABASE__URL GATEHOUSE__DATABASE__SCHEMA GATEHOUSE__REDIS__URL
     exec "$gatehouse" --config "$work/front.toml" serve --http "127.0.0.1:$port") \
        >"$work/front.log" 2>&1 &
    pids+=($!)
    wait_up "http://127.0.0.1:$port/healthz"
}

# Seed once through one backend: a superuser, a collection readable by signed-in
# users, 200 records and a signed-in reader.
"$gatehouse" --config config/cluster/backend.toml migrate up >/dev/null
"$gatehouse" --config config/cluster/backend.toml superuser upsert admin@example.com admin-password-123 >/dev/null
seed_port=$(free_port)
backend 1 "$seed_port"
base="http://127.0.0.1:$seed_port"
admin=$(curl -fs -X POST "$base/api/collections/_superusers/auth-with-password" -H 'content-type: application/json' \
    -d '{"identity":"admin@example.com","password":"admin-password-123"}' | json "['token']")
curl -fs -X POST "$base/api/collections" -H "authorization: $admin" -H 'content-type: application/json' -d '{
    "name": "notes", "type": "base",
    "fields": [{"name": "title", "type": "text", "required": true}, {"name": "rank", "type": "number"}],
    "indexes": ["CREATE INDEX idx_notes_rank ON notes (rank)"],
    "listRule": "@request.auth.id != \"\"", "viewRule": "@request.auth.id != \"\""
}' >/dev/null
for i in $(seq 1 200); do
    curl -fs -X POST "$base/api/collections/notes/records" -H "authorization: $admin" \
        -H 'content-type: application/json' -d "{\"title\":\"note $i\",\"rank\":$i}" >/dev/null
done
curl -fs -X POST "$base/api/collections/users/records" -H 'content-type: application/json' \
    -d '{"email":"reader@example.com","password":"reader-password-123","passwordConfirm":"reader-password-123"}' >/dev/null
token=$(curl -fs -X POST "$base/api/collections/users/auth-with-password" -H 'content-type: application/json' \
    -d '{"identity":"reader@example.com","password":"reader-password-123"}' | json "['token']")
stop_all

path="/api/collections/notes/records?perPage=20&sort=-rank&filter=rank%3E50"
# Prints "requests/s p99" for the read through the entry point on port $1.
measure() {
    local out
    out=$(wrk -t"$threads" -c"$connections" -d"$duration" --latency -H "Authorization: $token" "http://127.0.0.1:$1$path")
    if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers: $out" >&2; exit 1; fi
    echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1 == "99%" {print $2}' <<<"$out")"
}

declare -A results
for count in 1 2; do
    ports=()
    for core in $(seq 0 $((count - 1))); do
        port=$(free_port)
        backend "$((1 - core))" "$port"
        ports+=("$port")
    done
    front_port=$(free_port)
    front "$front_port" "${ports[@]}"
    sleep 3 # both health checks pass (healthy_threshold = 2, interval 1s)
    results[$count]=$(measure "$front_port")
    stop_all
done

read -r one_rps one_p99 <<<"${results[1]}"
read -r two_rps two_p99 <<<"${results[2]}"
printf '\nauthenticated records list through the entry point, %s connections, %s\n' "$connections" "$duration"
printf '%-12s %14s %10s\n' "backends" "requests/s" "p99"
printf '%-12s %14s %10s\n' 1 "$one_rps" "$one_p99" 2 "$two_rps" "$two_p99"
python3 -c "print(f'speed-up {$two_rps / $one_rps:.2f}x, scaling efficiency {$two_rps / (2 * $one_rps):.0%}')"
