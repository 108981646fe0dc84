#!/usr/bin/env bash
# Cluster benchmarks: two Gatehouse processes (A and B) sharing one PostgreSQL schema and
# one Redis key prefix, as a cluster runs.
#
# Sections:
#   1. setup        build, start A and B, create a superuser and log in
#   2. invalidation cross-instance cache invalidation latency, p50/p99
#                   (benches/invalidation_latency.rs)
#   Further sections (throughput) go after section 2 and may use $a, $b and $token.
#
# Usage: benches/cluster.sh
#   DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test), REDIS_URL (default
#   redis://127.0.0.1:6379), ITERATIONS=500 rounds, DURATION=0 (seconds; 0 = no cap),
#   PROFILE=release (or dev, for a quick smoke run with the debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

database=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
redis=${REDIS_URL:-redis://127.0.0.1:6379}
profile=${PROFILE:-release}
case "$profile" in
    release) bin=target/release/gatehouse ;;
    dev) bin=target/debug/gatehouse ;;
    *) echo "PROFILE must be release or dev" >&2; exit 2 ;;
esac

# ---- 1. setup ---------------------------------------------------------------------
cargo build --quiet --profile "$profile" --bin gatehouse
run_id=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:12])')
schema="bench_$run_id"
prefix="bench-$run_id"
on_exit() {
    psql "$database" -qc "DROP SCHEMA IF EXISTS \"$schema\" CASCADE" >/dev/null 2>&1 || true
    redis-cli -u "$redis" --scan --pattern "$prefix:*" | xargs -r -d '\n' redis-cli -u "$redis" unlink >/dev/null || true
}

export GATEHOUSE__DATABASE__URL="$database"
export GATEHOUSE__DATABASE__SCHEMA="$schema"
export GATEHOUSE__REDIS__URL="$redis"
export GATEHOUSE__REDIS__KEY_PREFIX="$prefix"
export GATEHOUSE__AUTH__TOKEN_SECRET="bench-cluster-secret-0123456789abcdefghijklmnopqrstuvwxyz"
export GATEHOUSE__AUTH__SECRET_FILE="$work/auth_secret"
export GATEHOUSE__STATIC__ROOT="$PWD/public"
export GATEHOUSE__LOG__LEVEL=warn
export GATEHOUSE__LOG__ACCESS_LOG=false
export GATEHOUSE__CACHE__COLLECTIONS__BENCH_POSTS__TTL=1h
export GATEHOUSE__MAIL__FILE__DIR="$work/mail"

# start NAME: runs an instance (log in $work/NAME.log); its base URL is left in $url.
start() {
    local port
    port=$(free_port)
    "$bin" serve --http "127.0.0.1:$port" >"$work/$1.log" 2>&1 &
    pids+=($!)
    url="http://127.0.0.1:$port"
    wait_up "$url/readyz" 300
}
start a; a=$url
start b; b=$url
"$bin" superuser upsert bench@example.com bench-password-123 >/dev/null
token=$(curl -fs "$a/api/collections/_superusers/auth-with-password" \
    -H 'content-type: application/json' \
    -d '{"identity":"bench@example.com","password":"bench-password-123"}' \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
echo "A: $a   B: $b   ($profile build, schema $schema, Redis prefix $prefix)"

# ---- 2. cross-instance cache invalidation latency ---------------------------------
echo
echo "== cross-instance cache invalidation latency (ITERATIONS=${ITERATIONS:-500}, DURATION=${DURATION:-0}s)"
BENCH_A="$a" BENCH_B="$b" BENCH_TOKEN="$token" \
    cargo bench --quiet --profile "$profile" --bench invalidation_latency
