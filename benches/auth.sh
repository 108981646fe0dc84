#!/usr/bin/env bash
# Auth throughput, Gatehouse against the real PocketBase on this machine, same load:
#   1. POST auth-with-password (password hashing dominates: Gatehouse uses argon2id,
#      19 MiB / 2 iterations; PocketBase uses bcrypt)
#   2. GET of the caller's own record with its token (token + session check)
# Usage: benches/auth.sh            (DURATION=10s CONNECTIONS=32 THREADS=2 to change the load)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

duration=${DURATION:-10s}
connections=${CONNECTIONS:-32}
threads=${THREADS:-2}
pb_version=${POCKETBASE_VERSION:-0.40.6}
email=bench@example.com
password=bench-password-123

need wrk
gatehouse=$(gatehouse_binary)
pocketbase=$(pocketbase_binary "$pb_version")

# Gatehouse on SQLite, rate limits off (this measures capacity, not abuse protection).
gh_port=$(free_port)
export GATEHOUSE__DATABASE__URL="sqlite://$work/gatehouse.db?mode=rwc"
export GATEHOUSE__AUTH__SECRET_FILE="$work/auth_secret"
export GATEHOUSE__LOG__LEVEL=warn GATEHOUSE__LOG__ACCESS_LOG=false
for bucket in LOGIN_PER_IP LOGIN_PER_ACCOUNT REGISTER_PER_IP; do
    export "GATEHOUSE__AUTH__RATE_LIMITS__${bucket}__REQUESTS=0"
done
"$gatehouse" serve --http "127.0.0.1:$gh_port" >"$work/gatehouse.log" 2>&1 &
pids+=($!)
pb_port=$(free_port)
"$pocketbase" serve --http "127.0.0.1:$pb_port" --dir "$work/pb" >"$work/pocketbase.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$gh_port/api/health"
wait_up "http://127.0.0.1:$pb_port/api/health"

json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
prepare() {
    local base=$1
    curl -fs -X POST "$base/api/collections/users/records" -H 'content-type: application/json' \
        -d "{\"email\":\"$email\",\"password\":\"$password\",\"passwordConfirm\":\"$password\"}" >/dev/null
    curl -fs -X POST "$base/api/collections/users/auth-with-password" -H 'content-type: application/json' \
        -d "{\"identity\":\"$email\",\"password\":\"$password\"}"
}

cat >"$work/login.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"identity":"$email","password":"$password"}'
EOF

# Prints "requests/s p99".
measure() {
    local out
    out=$(wrk -t"$threads" -c"$connections" -d"$duration" --latency "$@")
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "$rps $p99"
}

declare -A results
for target in gatehouse pocketbase; do
    if [ "$target" = gatehouse ]; then base="http://127.0.0.1:$gh_port"; else base="http://127.0.0.1:$pb_port"; fi
    answer=$(prepare "$base")
    token=$(json "['token']" <<<"$answer")
    id=$(json "['record']['id']" <<<"$answer")
    results[$target-login]=$(measure -s "$work/login.lua" "$base/api/collections/users/auth-with-password")
    results[$target-authed]=$(measure -H "Authorization: $token" "$base/api/collections/users/records/$id")
done

printf '\n%-28s %14s %10s %14s %10s %8s\n' "$connections connections, $duration" "Gatehouse r/s" "p99" "PocketBase r/s" "p99" "ratio"
for case in login authed; do
    read -r g_rps g_p99 <<<"${results[gatehouse-$case]}"
    read -r p_rps p_p99 <<<"${results[pocketbase-$case]}"
    label=$([ "$case" = login ] && echo "auth-with-password" || echo "authenticated GET record")
    ratio=$(python3 -c "print(f'{$g_rps / $p_rps:.2f}x')")
    printf '%-28s %14s %10s %14s %10s %8s\n' "$label" "$g_rps" "$g_p99" "$p_rps" "$p_p99" "$ratio"
done
