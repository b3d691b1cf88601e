#!/usr/bin/env bash
# What a backup costs (design 0020): `etcdctl snapshot save` against a
# follower while clients keep writing, then `synod restore` of the file.
#
#   1. builds synod (release) and starts three `synod server` processes,
#      with --split-at $SPLIT_AT (4 shards over the bench keys; empty: one
#      group), on a temp dir;
#   2. loads them with `synod bench` puts of VALUE_SIZE bytes over KEYS keys
#      for LOAD_SECONDS, and measures a steady put load of CLIENTS clients;
#   3. under the same load, saves a snapshot through node 2 and times it;
#   4. restores the file into a new data dir and times that;
#   5. reports the bytes, the times, the rates, and the load's throughput,
#      p99 and errors before and during the save.
#
# Environment (all optional): VALUE_SIZE=4096 KEYS=100000 LOAD_SECONDS=20
# CLIENTS=16 DURING_SECONDS=20 SPLIT_AT=bench/25,bench/50,bench/75
# SERVER_FLAGS="--split-size 4294967296" (more `synod server` flags; that
# one keeps size splits, and their copy's stall, out of the measurement).
# Needs etcdctl.

set -euo pipefail

VALUE_SIZE=${VALUE_SIZE:-4096}
KEYS=${KEYS:-100000}
LOAD_SECONDS=${LOAD_SECONDS:-20}
CLIENTS=${CLIENTS:-16}
DURING_SECONDS=${DURING_SECONDS:-20}
SPLIT_AT=${SPLIT_AT-bench/25,bench/50,bench/75}
for n in VALUE_SIZE KEYS LOAD_SECONDS CLIENTS DURING_SECONDS; do
    [[ ${!n} =~ ^[0-9]+$ ]] || { echo "error: $n must be a whole number (got '${!n}')" >&2; exit 2; }
done
command -v etcdctl >/dev/null || { echo "error: etcdctl not found (apt-get install etcd-client)" >&2; exit 2; }

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
setup_tmp backup-sharded
PEERS=1=127.0.0.1:2380,2=127.0.0.1:22380,3=127.0.0.1:32380
CLIENTS_MAP=1=127.0.0.1:2379,2=127.0.0.1:22379,3=127.0.0.1:32379
EPS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
SHARD_FLAGS=()
[[ -n $SPLIT_AT ]] && SHARD_FLAGS=(--split-at "$SPLIT_AT")
read -r -a EXTRA_FLAGS <<<"${SERVER_FLAGS:-}"
SHARD_FLAGS+=("${EXTRA_FLAGS[@]}")
build_synod

start_node() {
    local id=$1 client=$2 peer=$3 http=$4
    "$SYNOD" server --id "$id" --data-dir "$TMP/node$id" \
        --client-addr "127.0.0.1:$client" --peer-addr "127.0.0.1:$peer" \
        --metrics-addr "127.0.0.1:$http" --peers "$PEERS" --clients "$CLIENTS_MAP" \
        "${SHARD_FLAGS[@]}" --quota-backend-bytes 0 >>"$TMP/node$id.log" 2>&1 &
    PIDS+=("$!")
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }

start_node 1 2379 2380 2381
start_node 2 22379 22380 22381
start_node 3 32379 32380 32381
wait_serving
log "loading ${VALUE_SIZE}-byte values over $KEYS keys for $LOAD_SECONDS s (split at '${SPLIT_AT}')"
bench_puts 64 "$LOAD_SECONDS" 0 "$TMP/load.txt"
grep -E '^(ops/s|errors)' "$TMP/load.txt" | sed 's/^/load: /'
log "node 2's data dir: $(mib "$TMP/node2") MiB"
bench_puts "$CLIENTS" 10 1 "$TMP/before.txt"
grep -E '^(ops/s|latency|errors)' "$TMP/before.txt" | sed 's/^/steady: /'

bench_puts "$CLIENTS" "$DURING_SECONDS" 0 "$TMP/during.txt" &
LOAD_PID=$!
sleep 3
t0=$(now)
ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:22379 --command-timeout 600s \
    snapshot save "$TMP/backup.db" >"$TMP/save.txt" 2>&1 ||
    { cat "$TMP/save.txt" >&2; exit 1; }
SAVE_S=$(since "$t0")
FILE_MIB=$(mib "$TMP/backup.db")
log "saved $FILE_MIB MiB in $SAVE_S s; waiting for the load to end"
wait "$LOAD_PID" || true
grep -E '^(ops/s|latency|errors)' "$TMP/during.txt" | sed 's/^/during the save: /'

t0=$(now)
"$SYNOD" restore "$TMP/backup.db" --data-dir "$TMP/restored" --id 1 --peers "$PEERS" \
    >"$TMP/restore.txt" 2>&1 || { cat "$TMP/restore.txt" >&2; exit 1; }
RESTORE_S=$(since "$t0")
sed 's/^/restore: /' "$TMP/restore.txt" | grep -v '^restore: restoring:' || true
awk -v m="$FILE_MIB" -v s="$SAVE_S" -v r="$RESTORE_S" 'BEGIN {
    printf "snapshot save: %d MiB in %.2f s (%.0f MiB/s); synod restore: %.2f s (%.0f MiB/s)\n", m, s, m / s, r, m / r }'
