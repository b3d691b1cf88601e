# Shared by the measurement scripts (source it; it is not run alone):
# a temp dir removed on exit, every process in PIDS killed on exit, a
# timestamped log, the release `synod` binary built and found, and a
# check for a taken loopback port.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#   setup_tmp restart-with-data    # sets ROOT and TMP, installs the traps
#   build_synod                    # sets SYNOD
#   wait_serving                   # until puts through $EPS succeed
#   mib DIR                        # DIR's size in MiB
#   bench_puts N SECS WARMUP OUT   # N clients put $VALUE_SIZE over $KEYS

PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}

setup_tmp() {
    ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

build_synod() {
    (cd "$ROOT" && cargo build --release -p synod-cli)
    SYNOD=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/synod
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until puts through every endpoint of $EPS succeed (the groups
# elected), for up to a minute; exits with the logs' place otherwise.
wait_serving() {
    for _ in $(seq 600); do
        "$SYNOD" bench --endpoints "$EPS" --workload put --clients 3 --duration 200ms \
            --warmup 0s --keys 10 2>&1 | grep -q 'summary:.* errors=0 ' && return
        sleep 0.1
    done
    echo "error: the cluster never served; logs in $TMP" >&2
    exit 1
}

mib() { echo $(( $(du -sb "$1" | cut -f1) / 1048576 )); }

# N closed-loop clients put VALUE_SIZE-byte values over KEYS keys through
# $EPS for SECS seconds after WARMUP; the bench's report goes to OUT.
bench_puts() {
    "$SYNOD" bench --endpoints "$EPS" --workload put --clients "$1" --value-size "$VALUE_SIZE" \
        --keys "$KEYS" --duration "${2}s" --warmup "${3}s" >"$4" 2>&1
}
