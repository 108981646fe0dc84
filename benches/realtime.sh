#!/usr/bin/env bash
# Realtime capacity, Gatehouse against the real PocketBase on this machine, same load:
#   1. hold CLIENTS concurrent SSE connections, each having received its PB_CONNECT,
#      and read each server's resident memory (RSS);
#   2. subscribe FANOUT of them to one collection and time ROUNDS record creations
#      from the create request to each subscriber's receipt (p50 / max).
# Usage: benches/realtime.sh          (CLIENTS=10000 FANOUT=1000 ROUNDS=5 to change it;
#        GATEHOUSE_BIN=target/debug/gatehouse skips the release build, for a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

export CLIENTS=${CLIENTS:-10000} FANOUT=${FANOUT:-1000} ROUNDS=${ROUNDS:-5}
pb_version=${POCKETBASE_VERSION:-0.40.6}
email=bench@example.com
password=bench-password-123

# Each connection is a file descriptor in the server and in the load client.
ulimit -n "$(( CLIENTS * 2 + 4096 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
bin=$(gatehouse_binary)
pocketbase=$(pocketbase_binary "$pb_version")

json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

export GATEHOUSE__DATABASE__URL="sqlite://$work/gatehouse.db?mode=rwc"
export GATEHOUSE__AUTH__SECRET_FILE="$work/auth_secret"
export GATEHOUSE__LOG__LEVEL=warn GATEHOUSE__LOG__ACCESS_LOG=false
"$bin" superuser upsert "$email" "$password" >/dev/null
"$pocketbase" superuser upsert "$email" "$password" --dir "$work/pb" >/dev/null

gh_port=$(free_port)
"$bin" serve --http "127.0.0.1:$gh_port" >"$work/gatehouse.log" 2>&1 &
gh_pid=$!; pids+=($gh_pid)
pb_port=$(free_port)
"$pocketbase" serve --http "127.0.0.1:$pb_port" --dir "$work/pb" >"$work/pocketbase.log" 2>&1 &
pb_pid=$!; pids+=($pb_pid)
wait_up "http://127.0.0.1:$gh_port/api/health"
wait_up "http://127.0.0.1:$pb_port/api/health"

# A superuser token and a public collection `bench` on each server.
prepare() {
    local base=$1 token
    token=$(curl -fs -X POST "$base/api/collections/_superusers/auth-with-password" \
        -H 'content-type: application/json' \
        -d "{\"identity\":\"$email\",\"password\":\"$password\"}" | json "['token']")
    curl -fs -X POST "$base/api/collections" -H 'content-type: application/json' \
        -H "authorization: $token" \
        -d '{"name":"bench","type":"base","listRule":"","viewRule":"","createRule":"","fields":[{"name":"title","type":"text"}]}' >/dev/null
    echo "$token"
}

declare -A results
for name in gatehouse pocketbase; do
    if [ "$name" = gatehouse ]; then port=$gh_port pid=$gh_pid; else port=$pb_port pid=$pb_pid; fi
    base="http://127.0.0.1:$port"
    token=$(prepare "$base")
    echo "$name: opening $CLIENTS SSE clients…" >&2
    results[$name]=$(node benches/realtime_load.mjs "$base" "$pid" "$token" bench)
done

python3 - "${results[gatehouse]}" "${results[pocketbase]}" <<'PY'
import json, sys
gh, pb = (json.loads(arg) for arg in sys.argv[1:3])
rows = [
    ("clients held", "held", "{}"),
    ("time to connect all (s)", "connectSeconds", "{}"),
    ("RSS idle (MiB)", "rssBeforeMiB", "{}"),
    ("RSS with clients (MiB)", "rssMiB", "{}"),
    ("KiB per client", "kibPerClient", "{}"),
    ("fan-out subscribers", "fanout", "{}"),
    ("delivered per round", "deliveredPerRound", "{}"),
    ("fan-out p50 (ms)", "fanoutP50ms", "{}"),
    ("fan-out max (ms)", "fanoutMaxMs", "{}"),
]
print(f"{'':28}{'gatehouse':>22}{'pocketbase':>22}")
for label, key, fmt in rows:
    print(f"{label:28}{fmt.format(gh[key]):>22}{fmt.format(pb[key]):>22}")
print(f"RSS ratio gatehouse / pocketbase: {gh['rssMiB'] / pb['rssMiB']:.2f}")
PY
