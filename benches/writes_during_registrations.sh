#!/usr/bin/env bash
# Creates of a plain record on SQLite while accounts register: whether password hashing
# (argon2id at its default cost) holds up other writes. For each build, on a fresh
# database: creates alone, then the same creates while `wrk -c4` registers accounts.
# Usage: benches/writes_during_registrations.sh
#   GATEHOUSE_BIN=… (else a release build) BASELINE_BIN=… (a second build, alternated)
#   ROUNDS=2 DURATION=4s (in seconds, with the s)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

rounds=${ROUNDS:-2}
duration=${DURATION:-4s}
need wrk
builds=("$(gatehouse_binary)")
if [ -n "${BASELINE_BIN:-}" ]; then builds=("$BASELINE_BIN" "${builds[@]}"); fi

cat >"$work/register.lua" <<'LUA'
local n = 0
local tag = tostring(math.random(1, 1e9))
request = function()
  n = n + 1
  local body = string.format(
    '{"email":"u%s-%d@example.com","password":"password-123","passwordConfirm":"password-123"}', tag, n)
  return wrk.format("POST", "/api/collections/users/records", {["Content-Type"] = "application/json"}, body)
end
LUA
cat >"$work/note.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"text":"hello"}'
LUA

# Prints "requests/s p99" of creates of notes at $1.
creates() {
    wrk -t1 -c16 -d"$duration" --latency -s "$work/note.lua" "$1/api/collections/notes/records" |
        awk '/Requests\/sec/ {r = $2} $1 == "99%" {p = $2} END {print r, p}'
}

printf '%-6s %-40s %22s %26s %16s\n' round build "creates alone (r/s p99)" "during registrations" "registrations/s"
for round in $(seq "$rounds"); do
    for index in "${!builds[@]}"; do
        bin=${builds[$index]}
        dir="$work/$round-$index"
        mkdir -p "$dir"
        port=$(free_port)
        (
            export GATEHOUSE_ENV=production GATEHOUSE__DATABASE__URL="sqlite://$dir/gatehouse.db?mode=rwc"
            export GATEHOUSE__AUTH__SECRET_FILE="$dir/auth_secret" GATEHOUSE__MAIL__FILE__DIR="$dir/mail"
            export GATEHOUSE__LOG__LEVEL=warn GATEHOUSE__LOG__ACCESS_LOG=false
            export GATEHOUSE__AUTH__RATE_LIMITS__REGISTER_PER_IP__REQUESTS=0 GATEHOUSE__AUTH__VERIFY_EMAIL_ON_REGISTER=false
            "$bin" superuser upsert root@example.com root-password-123 >/dev/null
            exec "$bin" serve --http "127.0.0.1:$port" >"$dir/gatehouse.log" 2>&1
        ) &
        pids+=($!)
        base="http://127.0.0.1:$port"
        wait_up "$base/api/health" 200 "$dir/gatehouse.log"
        token=$(curl -fs -X POST "$base/api/collections/_superusers/auth-with-password" \
            -H 'content-type: application/json' \
            -d '{"identity":"root@example.com","password":"root-password-123"}' |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
        curl -fs -X POST "$base/api/collections" -H "Authorization: $token" -H 'content-type: application/json' \
            -d '{"name":"notes","createRule":"","fields":[{"name":"text","type":"text"}]}' >/dev/null
        alone=$(creates "$base")
        wrk -t1 -c4 -d"$(( ${duration%s} + 2 ))s" -s "$work/register.lua" "$base" >"$dir/registrations" &
        registering=$!
        sleep 1
        during=$(creates "$base")
        wait "$registering"
        registered=$(awk '/Requests\/sec/ {print $2}' "$dir/registrations")
        printf '%-6s %-40s %22s %26s %16s\n' "$round" "$bin" "$alone" "$during" "$registered"
        stop_all
    done
done
