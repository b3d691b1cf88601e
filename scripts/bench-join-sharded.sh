#!/usr/bin/env bash
# What adding a member to a sharded cluster costs (design 0019): every
# shard's leader adds the new node and streams it the shard's snapshot,
# while clients keep writing.
#
#   1. builds synod (release) and starts three `synod server --split-at`
#      processes (4 shards over the bench keys) on a temp dir;
#   2. loads them with `synod bench` puts of VALUE_SIZE bytes over KEYS keys
#      for LOAD_SECONDS, and measures a steady put load of CLIENTS clients;
#   3. under the same load, `etcdctl member add n4 --learner`, starts node 4
#      joining, and times until node 4's replica of every shard holds the
#      revision that shard had when node 4 started (all the data it was
#      added with), then `member promote 4`;
#   4. reports the bytes, the time, the rate, and the load's throughput,
#      p99 and errors before and during.
#
# Environment (all optional): VALUE_SIZE=4096 KEYS=100000 LOAD_SECONDS=20
# CLIENTS=16 DURING_SECONDS=40 (the load around the join) CATCHUP_SECONDS=120.
# Needs etcdctl and curl.

set -euo pipefail

VALUE_SIZE=${VALUE_SIZE:-4096}
KEYS=${KEYS:-100000}
LOAD_SECONDS=${LOAD_SECONDS:-20}
CLIENTS=${CLIENTS:-16}
CATCHUP_SECONDS=${CATCHUP_SECONDS:-120}
DURING_SECONDS=${DURING_SECONDS:-40}
for n in VALUE_SIZE KEYS LOAD_SECONDS CLIENTS CATCHUP_SECONDS DURING_SECONDS; do
    [[ ${!n} =~ ^[0-9]+$ ]] || { echo "error: $n must be a whole number (got '${!n}')" >&2; exit 2; }
done
command -v etcdctl >/dev/null || { echo "error: etcdctl not found (apt-get install etcd-client)" >&2; exit 2; }

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
setup_tmp join-sharded
SPLITS=bench/25,bench/50,bench/75
PEERS=1=127.0.0.1:2380,2=127.0.0.1:22380,3=127.0.0.1:32380
CLIENTS_MAP=1=127.0.0.1:2379,2=127.0.0.1:22379,3=127.0.0.1:32379
EPS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
build_synod

# start_node ID CLIENT PEER HTTP PEERS CLIENTS [FLAGS...]
start_node() {
    local id=$1 client=$2 peer=$3 http=$4 peers=$5 clients=$6
    shift 6
    "$SYNOD" server --id "$id" --data-dir "$TMP/node$id" \
        --client-addr "127.0.0.1:$client" --peer-addr "127.0.0.1:$peer" \
        --metrics-addr "127.0.0.1:$http" --peers "$peers" --clients "$clients" \
        --split-at "$SPLITS" --quota-backend-bytes 0 "$@" >>"$TMP/node$id.log" 2>&1 &
    PIDS+=("$!")
}

# Each shard's revision on the node whose HTTP address is $1, one per line.
revisions() {
    curl -sf "http://$1/api/shards" | python3 -c '
import json, sys
for s in json.load(sys.stdin)["shards"]:
    print(s.get("revision", -1))'
}

start_node 1 2379 2380 2381 "$PEERS" "$CLIENTS_MAP"
start_node 2 22379 22380 22381 "$PEERS" "$CLIENTS_MAP"
start_node 3 32379 32380 32381 "$PEERS" "$CLIENTS_MAP"
wait_serving
log "loading ${VALUE_SIZE}-byte values over $KEYS keys for $LOAD_SECONDS s"
bench_puts 64 "$LOAD_SECONDS" 0 "$TMP/load.txt"
grep -E '^(ops/s|errors)' "$TMP/load.txt" | sed 's/^/load: /'
DATA_MIB=$(mib "$TMP/node1")
log "node 1's data dir: $DATA_MIB MiB"
bench_puts "$CLIENTS" 10 1 "$TMP/before.txt"
grep -E '^(ops/s|latency|errors)' "$TMP/before.txt" | sed 's/^/steady: /'

bench_puts "$CLIENTS" "$DURING_SECONDS" 0 "$TMP/during.txt" &
LOAD_PID=$!
sleep 2
out=$(ETCDCTL_API=3 etcdctl --endpoints "$EPS" member add n4 --learner \
    --peer-urls=http://127.0.0.1:42380)
CLUSTER_HEX=$(sed -nE 's/.*added to cluster +([0-9a-f]+).*/\1/p' <<<"$out")
[[ -n $CLUSTER_HEX ]] || { echo "error: member add said: $out" >&2; exit 1; }
mapfile -t WANT < <(revisions 127.0.0.1:2381)
t0=$(date +%s.%N)
log "node 4 added as a learner; starting it (every shard at revisions ${WANT[*]})"
start_node 4 42379 42380 42381 "$PEERS,4=127.0.0.1:42380" "$CLIENTS_MAP,4=127.0.0.1:42379" \
    --initial-cluster-state existing --cluster-id "$CLUSTER_HEX"
caught=""
for _ in $(seq $((CATCHUP_SECONDS * 10))); do
    mapfile -t HAVE < <(revisions 127.0.0.1:42381 2>/dev/null || true)
    if [[ ${#HAVE[@]} -eq ${#WANT[@]} ]]; then
        behind=0
        for i in "${!WANT[@]}"; do
            (( HAVE[i] >= WANT[i] )) || behind=1
        done
        if (( behind == 0 )); then
            caught=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
            break
        fi
    fi
    sleep 0.1
done
[[ -n $caught ]] || { echo "error: node 4 did not catch up within $CATCHUP_SECONDS s; logs in $TMP" >&2; exit 1; }
for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$EPS" member promote 4 >/dev/null 2>&1 && break
    sleep 0.2
done
log "node 4 promoted; waiting for the load to end"
wait "$LOAD_PID" || true
grep -E '^(ops/s|latency|errors)' "$TMP/during.txt" | sed 's/^/during the join: /'
awk -v m="$DATA_MIB" -v t="$caught" 'BEGIN {
    printf "node 4 held every shard'"'"'s data (%d MiB on node 1) %.2f s after it started: %.0f MiB/s\n", m, t, m / t }'
echo "node 4's data dir: $(mib "$TMP/node4") MiB"
