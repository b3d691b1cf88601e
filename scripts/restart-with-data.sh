#!/usr/bin/env bash
# How fast a synod cluster with GBs of data serves again after kill -9.
#
#   1. builds synod (release) and starts `synod dev` (3 nodes, 127.0.0.1
#      ports 2379/22379/32379 and 2380/22380/32380) on a temp dir;
#   2. loads it with `synod bench` puts of VALUE_SIZE bytes over KEYS keys
#      until each node's data dir holds TARGET_MIB (or LOAD_MAX seconds
#      pass), clients spread over every endpoint;
#   3. kills the process with SIGKILL while the load runs;
#   4. starts it again on the same data and measures the time until a
#      put through every endpoint succeeds, then a short load has no errors;
#   5. prints the data size, the restart time and the process's RSS.
#
# Environment (all optional): VALUE_SIZE=4096 KEYS=1000000 TARGET_MIB=2048
# LOAD_MAX=600 CLIENTS=64. Every address is 127.0.0.1.

set -euo pipefail

VALUE_SIZE=${VALUE_SIZE:-4096}
KEYS=${KEYS:-1000000}
TARGET_MIB=${TARGET_MIB:-2048}
LOAD_MAX=${LOAD_MAX:-600}
CLIENTS=${CLIENTS:-64}
for n in VALUE_SIZE KEYS TARGET_MIB LOAD_MAX CLIENTS; do
    [[ ${!n} =~ ^[0-9]+$ ]] || { echo "error: $n must be a whole number (got '${!n}')" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d /tmp/restart-with-data.XXXXXX)
ENDPOINTS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

(cd "$ROOT" && cargo build --release -p synod-cli)
SYNOD=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/synod

start() {
    "$SYNOD" dev --data-dir "$TMP/data" --quota-backend-bytes 0 >>"$TMP/synod.log" 2>&1 &
    SYNOD_PID=$!
    PIDS+=("$SYNOD_PID")
}

# Seconds (with ms) until a short put load through every endpoint has no error.
wait_serving() {
    local t0=$1 out
    while true; do
        out=$("$SYNOD" bench --endpoints "$ENDPOINTS" --workload put --clients 3 \
            --duration 200ms --warmup 0s --keys 10 2>&1) || true
        if grep -q 'summary:.* errors=0 ' <<<"$out"; then
            awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}'
            return
        fi
        sleep 0.05
    done
}

node_mib() { echo $(( $(du -sb "$TMP/data/node1" | cut -f1) / 1048576 )); }

start
log "first start: serving after $(wait_serving "$(date +%s.%N)") s"
log "loading ${VALUE_SIZE}-byte values over $KEYS keys until node1 holds $TARGET_MIB MiB"
"$SYNOD" bench --endpoints "$ENDPOINTS" --workload put --clients "$CLIENTS" \
    --value-size "$VALUE_SIZE" --keys "$KEYS" --duration "${LOAD_MAX}s" --warmup 0s \
    >"$TMP/load.txt" 2>&1 &
LOAD_PID=$!
loaded=0
for _ in $(seq "$LOAD_MAX"); do
    sleep 1
    loaded=$(node_mib)
    ((loaded >= TARGET_MIB)) && break
    kill -0 "$LOAD_PID" 2>/dev/null || break
done
rss=$(awk '$1 == "VmRSS:" {print int($2 / 1024)}' "/proc/$SYNOD_PID/status")
log "node1 holds $loaded MiB; RSS of the 3-node process $rss MiB; kill -9 under load"
kill -KILL "$SYNOD_PID"
wait "$SYNOD_PID" 2>/dev/null || true
kill -INT "$LOAD_PID" 2>/dev/null || true
wait "$LOAD_PID" 2>/dev/null || true
t0=$(date +%s.%N)
start
took=$(wait_serving "$t0")
rss=$(awk '$1 == "VmRSS:" {print int($2 / 1024)}' "/proc/$SYNOD_PID/status")
echo "restart after kill -9 with $loaded MiB per node ($(du -sh "$TMP/data" | cut -f1) in all):" \
    "serving through every endpoint after $took s; RSS $rss MiB"
out=$("$SYNOD" bench --endpoints "$ENDPOINTS" --workload get --clients 16 --keys 1000 \
    --duration 3s --warmup 0s 2>&1) || true
grep -E '^(ops/s|errors)' <<<"$out" | sed 's/^/after restart: /'
