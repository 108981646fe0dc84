#!/usr/bin/env bash
# Records API throughput, Gatehouse (on SQLite and on PostgreSQL) against the real
# PocketBase, in one run, under the same load generator (wrk):
#   list      a filtered, sorted page with totals (filter on an indexed number field)
#   skipTotal the same page with skipTotal=1
#   view      one record by id
#   create    an authenticated create (createRule: @request.auth.id != "")
#   health    GET /api/health
# Each server is seeded through the same API (POST /api/batch, 50 records a request)
# with the same collection; the table is printed for 10k records, then again after
# topping up to 100k. RSS is read before the load and sampled during it.
# Usage: benches/pocketbase.sh
#   DURATION=10s CONNECTIONS=32 THREADS=2   the load of each case
#   SIZES="10000 100000"                    record counts, ascending
#   PG_URL=postgres://…                     PostgreSQL server (a private schema is created
#                                           and dropped); PG_URL= skips it. Default: the
#                                           local server's Unix socket, as a deployment on
#                                           one machine connects, else 127.0.0.1:5432 (over
#                                           TCP, sqlx negotiates TLS when the server offers
#                                           it, as Debian's does: see the README)
#   GATEHOUSE_BIN=/path/to/gatehouse        use that build instead of building one
#   BASELINE_BIN=/tmp/gatehouse-old         also run that build on PostgreSQL (its own
#                                           schema), case by case in turn with the others,
#                                           for a same-run A/B
#   BASELINE_PG_URL=postgres://…            connect that instance there instead (the same
#                                           server by another way: TCP against the socket)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

duration=${DURATION:-10s}
connections=${CONNECTIONS:-32}
threads=${THREADS:-2}
sizes=${SIZES:-10000 100000}
if [ -S /var/run/postgresql/.s.PGSQL.5432 ]; then
    pg_url=${PG_URL-postgres://postgres@localhost/test?host=/var/run/postgresql}
else
    pg_url=${PG_URL-postgres://postgres@127.0.0.1:5432/test}
fi
pb_version=${POCKETBASE_VERSION:-0.40.6}
admin_email=bench-root@example.com
admin_password=bench-root-password-123
user_email=bench-user@example.com
user_password=bench-user-password-123
schema=bench_pocketbase_$$
baseline_bin=${BASELINE_BIN:-}
baseline_pg_url=${BASELINE_PG_URL:-$pg_url}

need wrk
gatehouse_bin=$(gatehouse_binary)
pocketbase=$(pocketbase_binary "$pb_version")

on_exit() {
    if [ -n "$pg_url" ]; then
        for s in "$schema" "${schema}_baseline"; do psql -q "$pg_url" -c "DROP SCHEMA IF EXISTS $s CASCADE" 2>/dev/null || true; done
    fi
}

declare -A base pid_of
targets=(pocketbase gatehouse-sqlite)

port=$(free_port)
"$pocketbase" superuser upsert "$admin_email" "$admin_password" --dir "$work/pb" >/dev/null
"$pocketbase" serve --http "127.0.0.1:$port" --dir "$work/pb" >"$work/pocketbase.log" 2>&1 &
pids+=($!); pid_of[pocketbase]=$!; base[pocketbase]="http://127.0.0.1:$port"

# Gatehouse as a deployment would run it, except that the registration limit is off so
# that seeding is not throttled, and no verification mail is queued.
start_gatehouse() {
    local name=$1 url=$2 bin=${3:-$gatehouse_bin} db_schema=${4:-$schema} port
    port=$(free_port)
    mkdir -p "$work/$name"
    (
        export GATEHOUSE_ENV=production GATEHOUSE__DATABASE__URL="$url" GATEHOUSE__DATABASE__SCHEMA="$db_schema"
        export GATEHOUSE__AUTH__SECRET_FILE="$work/$name/auth_secret" GATEHOUSE__MAIL__FILE__DIR="$work/$name/mail"
        export GATEHOUSE__LOG__LEVEL=warn GATEHOUSE__LOG__ACCESS_LOG=false GATEHOUSE__BATCH__ENABLED=true
        export GATEHOUSE__AUTH__RATE_LIMITS__REGISTER_PER_IP__REQUESTS=0 GATEHOUSE__AUTH__VERIFY_EMAIL_ON_REGISTER=false
        "$bin" superuser upsert "$admin_email" "$admin_password" >/dev/null
        exec "$bin" serve --http "127.0.0.1:$port" >"$work/$name.log" 2>&1
    ) &
    pids+=($!); pid_of[$name]=$!; base[$name]="http://127.0.0.1:$port"
}
start_gatehouse gatehouse-sqlite "sqlite://$work/gatehouse.db?mode=rwc"
if [ -n "$pg_url" ]; then
    start_gatehouse gatehouse-postgres "$pg_url"
    targets+=(gatehouse-postgres)
    if [ -n "$baseline_bin" ]; then
        start_gatehouse gatehouse-pg-baseline "$baseline_pg_url" "$baseline_bin" "${schema}_baseline"
        targets+=(gatehouse-pg-baseline)
    fi
fi
for target in "${targets[@]}"; do wait_up "${base[$target]}/api/health"; done


declare -A admin_token user_token record_id
for target in "${targets[@]}"; do
    read -r admin_token[$target] user_token[$target] < <(python3 benches/records_api.py setup "${base[$target]}" \
        "$admin_email" "$admin_password" "$user_email" "$user_password" "$target")
done

filter=$(python3 -c 'import urllib.parse; print(urllib.parse.quote("n >= 1000 && n < 6000"))')
list_path="/api/collections/bench/records?filter=$filter&sort=-n&perPage=30&page=3"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Samples the RSS of $1 every 100 ms into $2 (the highest value) until killed.
sample_rss() {
    local pid=$1 out=$2 high=0 now
    while now=$(rss_kb "$pid" 2>/dev/null); do
        if [ "$now" -gt "$high" ]; then high=$now; echo "$high" >"$out"; fi
        sleep 0.1
    done
}
rps() { wrk -t"$threads" -c"$connections" -d"$duration" "$@" | awk '/Requests\/sec/ {print $2}'; }
mb() { python3 -c "print(f'{$1 / 1024:.0f} MB')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}x' if $2 else '-')"; }

declare -A result before samplers
seeded=0
for size in $sizes; do
    for target in "${targets[@]}"; do
        record_id[$target]=$(python3 benches/records_api.py seed "${base[$target]}" "${admin_token[$target]}" "$seeded" "$size")
    done
    seeded=$size
    # Bring PostgreSQL's statistics and visibility map to where autovacuum leaves them a
    # minute after a bulk load; without them the planner guesses ~40 rows for any range
    # and sorts instead of reading the index in order.
    for target in "${targets[@]}"; do
        case $target in
            gatehouse-postgres) psql -q "$pg_url" -c "VACUUM ANALYZE $schema.bench" ;;
            gatehouse-pg-baseline) psql -q "$pg_url" -c "VACUUM ANALYZE ${schema}_baseline.bench" ;;
        esac
    done

    for target in "${targets[@]}"; do
        before[$target]=$(rss_kb "${pid_of[$target]}")
        sample_rss "${pid_of[$target]}" "$work/$target.rss" &
        samplers[$target]=$!
    done
    for case in list skipTotal view create health; do
        for target in "${targets[@]}"; do
            url=${base[$target]}
            case $case in
                list) result[$target-$case]=$(rps "$url$list_path") ;;
                skipTotal) result[$target-$case]=$(rps "$url$list_path&skipTotal=1") ;;
                view) result[$target-$case]=$(rps "$url/api/collections/bench/records/${record_id[$target]}") ;;
                create)
                    cat >"$work/create.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "${user_token[$target]}"
wrk.body = '{"title":"created under load","n":-1}'
EOF
                    result[$target-$case]=$(rps -s "$work/create.lua" "$url/api/collections/bench/records") ;;
                health) result[$target-$case]=$(rps "$url/api/health") ;;
            esac
        done
    done
    for target in "${targets[@]}"; do kill "${samplers[$target]}" 2>/dev/null || true; done

    printf '\n%s records, wrk -t%s -c%s -d%s (requests/s; ratio = Gatehouse / PocketBase)\n' "$size" "$threads" "$connections" "$duration"
    if [ -n "$pg_url" ]; then printf 'GH PostgreSQL at %s\n' "$pg_url"; fi
    if [ -n "$pg_url" ] && [ -n "$baseline_bin" ]; then printf 'PG baseline (%s) at %s\n' "$baseline_bin" "$baseline_pg_url"; fi
    header="%-12s %12s %16s %8s"
    row=(case PocketBase "GH SQLite" ratio)
    if [ -n "$pg_url" ]; then header+=" %16s %8s"; row+=("GH PostgreSQL" ratio); fi
    if [ -n "$pg_url" ] && [ -n "$baseline_bin" ]; then header+=" %16s %8s"; row+=("PG baseline" ratio); fi
    header+=" %8s\n"; row+=(target)
    # shellcheck disable=SC2059
    printf "$header" "${row[@]}"
    for case in list skipTotal view create health; do
        case $case in list | skipTotal | view) goal='>= 2x' ;; create) goal='>= 1.5x' ;; health) goal='>= 3x' ;; esac
        pb=${result[pocketbase-$case]}
        row=("$case" "$pb" "${result[gatehouse-sqlite-$case]}" "$(ratio "${result[gatehouse-sqlite-$case]}" "$pb")")
        if [ -n "$pg_url" ]; then row+=("${result[gatehouse-postgres-$case]}" "$(ratio "${result[gatehouse-postgres-$case]}" "$pb")"); fi
        if [ -n "$pg_url" ] && [ -n "$baseline_bin" ]; then row+=("${result[gatehouse-pg-baseline-$case]}" "$(ratio "${result[gatehouse-pg-baseline-$case]}" "$pb")"); fi
        row+=("$goal")
        # shellcheck disable=SC2059
        printf "$header" "${row[@]}"
    done
    for kind in before peak; do
        row=("RSS $kind")
        for target in "${targets[@]}"; do
            if [ "$kind" = before ]; then kb=${before[$target]}; else kb=$(cat "$work/$target.rss"); fi
            [ "$target" = pocketbase ] && pb_kb=$kb
            row+=("$(mb "$kb")")
            [ "$target" = pocketbase ] || row+=("$(ratio "$kb" "$pb_kb")")
        done
        row+=("$([ "$kind" = peak ] && echo '<= 0.5x' || echo '')")
        # shellcheck disable=SC2059
        printf "$header" "${row[@]}"
    done
done
