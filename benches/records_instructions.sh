#!/usr/bin/env bash
# User-space CPU instructions per records API request, counted by valgrind's callgrind:
# unlike requests per second, the count moves little with the machine's load.
# Gatehouse on SQLite is seeded like benches/pocketbase.sh (the same collection and
# records, through benches/records_api.py), then runs under callgrind once idle and once
# per case while a client sends REQUESTS keep-alive requests one after another; the
# difference to the idle run divided by REQUESTS is the cost of one request (start-up,
# seeding and shutdown cancel out; what the server does on timers while a run lasts
# does not, so REQUESTS keeps it small against the requests). The cases are those of
# benches/pocketbase.sh:
#   list      a filtered, sorted page with totals
#   skipTotal the same page with skipTotal=1
#   view      one record by id
#   create    an authenticated create (createRule: @request.auth.id != "")
#   health    GET /api/health
#
#   bash benches/records_instructions.sh                  # REQUESTS=1000 SIZE=10000
#   GATEHOUSE_BIN=/tmp/gatehouse-old bash benches/records_instructions.sh
#
# Installs valgrind from Debian when missing; builds the release binary unless
# GATEHOUSE_BIN names one.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

REQUESTS=${REQUESTS:-1000}
SIZE=${SIZE:-10000}
PORT=${PORT:-19190}
admin_email=bench-root@example.com
admin_password=bench-root-password-123
user_email=bench-user@example.com
user_password=bench-user-password-123

need valgrind
gatehouse=$(gatehouse_binary)

# Gatehouse as benches/pocketbase.sh runs it, with one HTTP worker.
export GATEHOUSE_ENV=production GATEHOUSE__DATABASE__URL="sqlite://$work/gatehouse.db?mode=rwc"
export GATEHOUSE__AUTH__SECRET_FILE="$work/auth_secret" GATEHOUSE__MAIL__FILE__DIR="$work/mail"
export GATEHOUSE__LOG__LEVEL=warn GATEHOUSE__LOG__ACCESS_LOG=false GATEHOUSE__BATCH__ENABLED=true
export GATEHOUSE__AUTH__RATE_LIMITS__REGISTER_PER_IP__REQUESTS=0 GATEHOUSE__AUTH__VERIFY_EMAIL_ON_REGISTER=false
export GATEHOUSE__SERVER__WORKERS=1
base=http://127.0.0.1:$PORT
serve=("$gatehouse" serve --http "127.0.0.1:$PORT")

# Under valgrind start-up takes a while.
up() { wait_up "$base/api/health" 3000 "$work/$1.log"; }
stop() {
    # valgrind runs the program in its own process: the signal reaches it.
    kill -TERM "${pids[0]}"
    wait "${pids[0]}" 2>/dev/null || true
    pids=()
}

echo "bench: seeding $SIZE records" >&2
"$gatehouse" superuser upsert "$admin_email" "$admin_password" >/dev/null
"${serve[@]}" >"$work/seed.log" 2>&1 &
pids=($!)
up seed
read -r admin_token user_token < <(python3 benches/records_api.py setup "$base" \
    "$admin_email" "$admin_password" "$user_email" "$user_password" gatehouse)
record_id=$(python3 benches/records_api.py seed "$base" "$admin_token" 0 "$SIZE")
stop

filter=$(python3 -c 'import urllib.parse; print(urllib.parse.quote("n >= 1000 && n < 6000"))')
list_path="/api/collections/bench/records?filter=$filter&sort=-n&perPage=30&page=3"

# count CASE N -> the instructions callgrind counted while serving N requests of CASE
count() {
    local case=$1 n=$2
    valgrind --tool=callgrind --callgrind-out-file="$work/$case.$n.out" "${serve[@]}" \
        >"$work/$case.log" 2>&1 &
    pids=($!)
    up "$case"
    local repeat=(python3 benches/records_api.py repeat "$base" "$n")
    case $case in
        idle) ;;
        list) "${repeat[@]}" GET "$list_path" ;;
        skipTotal) "${repeat[@]}" GET "$list_path&skipTotal=1" ;;
        view) "${repeat[@]}" GET "/api/collections/bench/records/$record_id" ;;
        create) "${repeat[@]}" POST /api/collections/bench/records "$user_token" \
            '{"title":"created under load","n":-1}' ;;
        health) "${repeat[@]}" GET /api/health ;;
    esac
    stop
    awk '/^(summary|totals):/ { print $2; exit }' "$work/$case.$n.out"
}

idle=$(count idle 0)
echo
echo "user-space instructions per request (callgrind, SQLite, $SIZE records, $REQUESTS keep-alive requests, 1 worker)"
# create last: it adds records (with n = -1, outside the listed range)
for case in list skipTotal view health create; do
    busy=$(count "$case" "$REQUESTS")
    printf '%-10s %12s\n' "$case" $(((busy - idle) / REQUESTS))
done
