#!/usr/bin/env bash
# How a node that was down while GBs were written catches up: from a
# snapshot streamed by the leader (the log it missed is compacted), while
# clients keep writing through the other two nodes.
#
#   1. builds synod (release) and starts three `synod server` processes
#      (127.0.0.1, client ports 2379/22379/32379, peer ports
#      2380/22380/32380) on a temp dir;
#   2. stops node 3 (SIGKILL) and loads the other two with `synod bench`
#      puts of VALUE_SIZE bytes over KEYS keys for LOAD_SECONDS;
#   3. starts a background put load through nodes 1 and 2 (CLIENTS
#      clients) and restarts node 3, which needs a snapshot;
#   4. reports when the leader started streaming, when node 3 installed
#      the snapshot, the stream's rate, node 3's first successful
#      linearizable read through its own endpoint, and the background
#      load's throughput, latency and errors over the catch-up.
#
# Environment (all optional): VALUE_SIZE=4096 KEYS=300000 LOAD_SECONDS=60
# CLIENTS=16 CATCHUP_SECONDS=60.

set -euo pipefail

VALUE_SIZE=${VALUE_SIZE:-4096}
KEYS=${KEYS:-300000}
LOAD_SECONDS=${LOAD_SECONDS:-60}
CLIENTS=${CLIENTS:-16}
CATCHUP_SECONDS=${CATCHUP_SECONDS:-60}
for n in VALUE_SIZE KEYS LOAD_SECONDS CLIENTS CATCHUP_SECONDS; do
    [[ ${!n} =~ ^[0-9]+$ ]] || { echo "error: $n must be a whole number (got '${!n}')" >&2; exit 2; }
done

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
setup_tmp snapshot-catchup
CLIENT_PORTS=(2379 22379 32379)
PEER_PORTS=(2380 22380 32380)
PEERS=1=127.0.0.1:2380,2=127.0.0.1:22380,3=127.0.0.1:32380
CLIENTS_MAP=1=127.0.0.1:2379,2=127.0.0.1:22379,3=127.0.0.1:32379
declare -A PID
build_synod

start_node() {
    local id=$1 i=$(($1 - 1)) port
    for port in "${CLIENT_PORTS[$i]}" "${PEER_PORTS[$i]}"; do
        for _ in $(seq 100); do port_busy "$port" || break; sleep 0.1; done
    done
    RUST_LOG=synod_server=info "$SYNOD" server --id "$id" --data-dir "$TMP/node$id" \
        --client-addr "127.0.0.1:${CLIENT_PORTS[$i]}" --peer-addr "127.0.0.1:${PEER_PORTS[$i]}" \
        --peers "$PEERS" --clients "$CLIENTS_MAP" --quota-backend-bytes 0 \
        >>"$TMP/node$id.log" 2>&1 &
    PID[$id]=$!
    PIDS+=("$!")
}

# Waits until puts through `endpoints` succeed.
wait_serving() {
    local endpoints=$1 out
    for _ in $(seq 600); do
        out=$("$SYNOD" bench --endpoints "$endpoints" --workload put --clients 3 \
            --duration 200ms --warmup 0s --keys 10 2>&1) || true
        grep -q 'summary:.* errors=0 ' <<<"$out" && return
        sleep 0.1
    done
    echo "error: $endpoints never served; logs in $TMP" >&2
    exit 1
}

# The log line's time (seconds since midnight, UTC) for the first match.
log_time() {
    grep -m1 "$2" "$1" | sed -E 's/^[^T]*T([0-9]+):([0-9]+):([0-9.]+)Z.*/\1 \2 \3/' |
        awk '{printf "%.3f", $1 * 3600 + $2 * 60 + $3}'
}

for id in 1 2 3; do start_node "$id"; done
wait_serving 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
log "cluster up; stopping node 3 and loading ${VALUE_SIZE}-byte values over $KEYS keys for $LOAD_SECONDS s"
kill -KILL "${PID[3]}"
wait "${PID[3]}" 2>/dev/null || true
unset 'PID[3]'
TWO=127.0.0.1:2379,127.0.0.1:22379
"$SYNOD" bench --endpoints "$TWO" --workload put --clients 64 --value-size "$VALUE_SIZE" \
    --keys "$KEYS" --duration "${LOAD_SECONDS}s" --warmup 0s >"$TMP/load.txt" 2>&1
grep -E '^(ops/s|errors)' "$TMP/load.txt" | sed 's/^/load: /'
mib() { echo $(( $(du -sb "$1" | cut -f1) / 1048576 )); }
log "node1's data dir: $(mib "$TMP/node1") MiB; node3's: $(mib "$TMP/node3") MiB"

"$SYNOD" bench --endpoints "$TWO" --workload put --clients "$CLIENTS" --value-size "$VALUE_SIZE" \
    --keys "$KEYS" --duration "${CATCHUP_SECONDS}s" --warmup 0s >"$TMP/during.txt" 2>&1 &
LOAD_PID=$!
sleep 2
t0=$(date +%s.%N)
log "restarting node 3 under a put load of $CLIENTS clients through nodes 1 and 2"
start_node 3
serving=""
for _ in $(seq $((CATCHUP_SECONDS * 10))); do
    if grep -q "snapshot installed" "$TMP/node3.log" &&
        "$SYNOD" bench --endpoints 127.0.0.1:32379 --workload get --clients 1 --keys 10 \
            --duration 100ms --warmup 0s 2>&1 | grep -q 'summary:.* errors=0 '; then
        serving=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
        break
    fi
    sleep 0.1
done
wait "$LOAD_PID" || true
grep -E '^(ops/s|latency|errors)' "$TMP/during.txt" | sed 's/^/during catch-up: /'
leader_log=$(grep -l "streaming a snapshot" "$TMP"/node1.log "$TMP"/node2.log | head -1 || true)
if [[ -z $leader_log || -z $serving ]]; then
    echo "error: node 3 did not catch up from a snapshot within $CATCHUP_SECONDS s; logs:" >&2
    tail -5 "$TMP"/node*.log >&2
    exit 1
fi
sent=$(log_time "$leader_log" "streaming a snapshot")
installed=$(log_time "$TMP/node3.log" "snapshot installed")
rows=$(grep -m1 "snapshot received" "$TMP/node3.log" | sed -E 's/\x1b\[[0-9;]*m//g' |
    sed -E 's/.*bytes=([0-9]+).*/\1/')
awk -v s="$sent" -v i="$installed" -v b="$rows" 'BEGIN {
    printf "snapshot: %d MiB of rows streamed, loaded and installed in %.2f s (%.0f MiB/s)\n", b / 1048576, i - s, b / 1048576 / (i - s) }'
echo "node 3 served a linearizable get through its own endpoint $serving s after its restart"
grep -hE "streaming a snapshot|snapshot (read|received|installed|not needed)" "$TMP"/node*.log |
    sed -E 's/\x1b\[[0-9;]*m//g; s/^/log: /' | head -10
