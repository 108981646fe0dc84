#!/usr/bin/env bash
# Starts a three-instance Gatehouse cluster on loopback: two backends (8081, 8082) on
# the shared PostgreSQL and Redis, and the entry point (8080) balancing over them.
#   config/cluster/run.sh           (Ctrl-C stops all three)
# DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test) and REDIS_URL
# (default redis://127.0.0.1:6379) name the shared servers.
set -euo pipefail
cd "$(dirname "$0")/../.."

database=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
redis=${REDIS_URL:-redis://127.0.0.1:6379}
mkdir -p data/cluster
secret_file=data/cluster/shared_secret
[ -s "$secret_file" ] || head -c 48 /dev/urandom | base64 | tr -d '/+=\n' >"$secret_file"

cargo build --release --quiet
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM

for port in 8081 8082; do
    GATEHOUSE__DATABASE__URL="$database" GATEHOUSE__REDIS__URL="$redis" \
    GATEHOUSE__AUTH__TOKEN_SECRET="$(cat "$secret_file")" \
        target/release/gatehouse --config config/cluster/backend.toml serve --http "127.0.0.1:$port" &
    pids+=($!)
done
target/release/gatehouse --config config/cluster/front.toml serve &
pids+=($!)

for url in http://127.0.0.1:8081/readyz http://127.0.0.1:8082/readyz http://127.0.0.1:8080/healthz; do
    until curl -fs "$url" >/dev/null; do sleep 0.2; done
done
echo "cluster ready: http://127.0.0.1:8080 (backends on 8081 and 8082)"
wait
