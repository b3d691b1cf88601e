#!/usr/bin/env bash
# How fast a synod cluster with GBs of data serves again after kill -9.
#
#   1. builds synod (release) and starts `synod dev` (3 nodes, 127.0.0.1
#      ports 2379/22379/32379 and 2380/22380/32380) on a temp dir;
#   2. loads it with `synod bench` puts of VALUE_SIZE bytes over KEYS keys
#      for LOAD_SECONDS, clients spread over every endpoint, and reports the
#      bytes acknowledged;
#   3. starts a second load and kills the process with SIGKILL under it;
#   4. starts it again on the same data and measures the time until a
#      short put load through every endpoint has no error (the node logs
#      how long opening the file and loading the groups took);
#   5. prints the data size, the restart time and the process's RSS;
#   6. checks that every put either load saw acknowledged is still there
#      (`synod bench --ack-log` / `--verify-acks`): exits non-zero if one
#      was lost.
#
# Environment (all optional): VALUE_SIZE=4096 KEYS=1000000 LOAD_SECONDS=100
# CLIENTS=64 QUICK_REPAIR=0 (1: run synod dev --quick-repair). Every address
# is 127.0.0.1.

set -euo pipefail

VALUE_SIZE=${VALUE_SIZE:-4096}
KEYS=${KEYS:-1000000}
LOAD_SECONDS=${LOAD_SECONDS:-100}
CLIENTS=${CLIENTS:-64}
QUICK_REPAIR=${QUICK_REPAIR:-0}
EXTRA=()
[[ $QUICK_REPAIR == 1 ]] && EXTRA+=(--quick-repair)
for n in VALUE_SIZE KEYS LOAD_SECONDS CLIENTS; do
    [[ ${!n} =~ ^[0-9]+$ ]] || { echo "error: $n must be a whole number (got '${!n}')" >&2; exit 2; }
done

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
setup_tmp restart-with-data
ENDPOINTS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
build_synod

start() {
    local port
    for port in 2379 22379 32379 2380 22380 32380; do
        for _ in $(seq 100); do port_busy "$port" || break; sleep 0.1; done
    done
    RUST_LOG=synod_server::node=info "$SYNOD" dev --data-dir "$TMP/data" \
        --quota-backend-bytes 0 "${EXTRA[@]}" >>"$TMP/synod.log" 2>&1 &
    SYNOD_PID=$!
    PIDS+=("$SYNOD_PID")
}

# Seconds (with ms) until a short put load through every endpoint has no error.
wait_serving() {
    local t0=$1 out
    while true; do
        if ! kill -0 "$SYNOD_PID" 2>/dev/null; then
            echo "error: synod dev exited; its log:" >&2
            tail -20 "$TMP/synod.log" >&2
            exit 1
        fi
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
first=$(wait_serving "$(date +%s.%N)") || exit 1
log "first start: serving after $first s"
log "loading ${VALUE_SIZE}-byte values over $KEYS keys for $LOAD_SECONDS s"
"$SYNOD" bench --endpoints "$ENDPOINTS" --workload put --clients "$CLIENTS" \
    --value-size "$VALUE_SIZE" --keys "$KEYS" --duration "${LOAD_SECONDS}s" --warmup 0s \
    --ack-log "$TMP/acks-load.txt" >"$TMP/load.txt" 2>&1
ops=$(sed -n 's/^summary:.* ops=\([0-9]*\) .*/\1/p' "$TMP/load.txt")
grep -E '^(ops/s|latency|errors)' "$TMP/load.txt" | sed 's/^/load: /'
written=$((ops * VALUE_SIZE / 1048576))
loaded=$(node_mib)
"$SYNOD" bench --endpoints "$ENDPOINTS" --workload put --clients "$CLIENTS" \
    --value-size "$VALUE_SIZE" --keys "$KEYS" --duration 8s --warmup 0s \
    --ack-log "$TMP/acks-killed.txt" >"$TMP/killed.txt" 2>&1 &
LOAD_PID=$!
sleep 3
rss=$(awk '$1 == "VmRSS:" {print int($2 / 1024)}' "/proc/$SYNOD_PID/status")
log "$ops puts acknowledged ($written MiB of values); node1's file $loaded MiB;" \
    "RSS of the 3-node process $rss MiB; kill -9 under load"
kill -KILL "$SYNOD_PID"
wait "$SYNOD_PID" 2>/dev/null || true
# The load ends by itself (its requests fail from now on) and writes the
# puts acknowledged before the kill.
wait "$LOAD_PID" 2>/dev/null || true
grep '^acknowledged puts' "$TMP/killed.txt" | sed 's/^/killed load: /'
t0=$(date +%s.%N)
start
took=$(wait_serving "$t0") || exit 1
rss=$(awk '$1 == "VmRSS:" {print int($2 / 1024)}' "/proc/$SYNOD_PID/status")
echo "restart after kill -9 with $written MiB of values written ($loaded MiB file per node," \
    "$(du -sh "$TMP/data" | cut -f1) on disk in all): serving through every endpoint after $took s; RSS $rss MiB"
grep 'storage opened' "$TMP/synod.log" | tail -3 | sed 's/^/node: /'

out=$("$SYNOD" bench --endpoints "$ENDPOINTS" --workload get --clients 16 --keys 1000 \
    --duration 3s --warmup 0s 2>&1) || true
grep -E '^(ops/s|errors)' <<<"$out" | sed 's/^/after restart: /'

"$SYNOD" bench --endpoints 127.0.0.1:2379 --keys "$KEYS" \
    --verify-acks "$TMP/acks-load.txt,$TMP/acks-killed.txt"
