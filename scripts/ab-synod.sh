#!/usr/bin/env bash
# A/B of two synod binaries on the same machine, same run, alternating:
# what a change costs or gains (e.g. the metrics layer of issue 13).
#
#   A=/tmp/synod-before B=target/release/synod scripts/ab-synod.sh
#
# Each repetition starts a fresh `synod dev` (3 nodes, one process) with
# A, loads it, stops it, then the same with B. The load comes from B's
# `synod bench` both times, so the client is the same. Prints, per
# workload, every run's ops/s, server CPU seconds per 1,000 ops, p99 and
# max latency (ms), and the medians. Settings: WORKLOADS (put get), REPS
# (3), DURATION (8), WARMUP (2), CLIENTS (64), VALUE_SIZE (256),
# DEV_FLAGS (extra `synod dev` flags, e.g. "--split-at bench/5"). ZooKeeper
# workloads (zk-create, zk-set, ...) load `synod dev`'s ZooKeeper ports.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${A:?A=path of the first synod binary}" "${B:?B=path of the second synod binary}"
WORKLOADS=${WORKLOADS:-"put get"}
REPS=${REPS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CLIENTS=${CLIENTS:-64}
VALUE_SIZE=${VALUE_SIZE:-256}
read -r -a DEV_FLAGS <<<"${DEV_FLAGS:-}"
ENDPOINTS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
ZK_ENDPOINTS=127.0.0.1:2181,127.0.0.1:22181,127.0.0.1:32181
SYNOD=$B
RESULTS_DIR=$(mktemp -d -t synod-ab.XXXXXX)
log() { echo "[ab] $*" >&2; }
# shellcheck source=lib/procs.sh
source scripts/lib/procs.sh

run_one() { # binary label workload rep
    local bin=$1 label=$2 workload=$3 rep=$4 dir pid out
    dir=$RESULTS_DIR/$label-$workload-$rep
    mkdir -p "$dir"
    (cd "$dir" && exec "$bin" dev "${DEV_FLAGS[@]}" >"$dir/dev.log" 2>&1) &
    pid=$!
    wait_ready "$label" "$ENDPOINTS" --workload put
    local eps=$ENDPOINTS
    [[ $workload == zk-* ]] && eps=$ZK_ENDPOINTS
    out=$("$SYNOD" bench --endpoints "$eps" --workload "$workload" --clients "$CLIENTS" \
        --value-size "$VALUE_SIZE" --duration "${DURATION}s" --warmup "${WARMUP}s" --cpu-pids "$pid" 2>/dev/null)
    echo "$out" >"$dir/bench.txt"
    check_alive "$label" "$pid"
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    local ops cpu p99 max
    ops=$(awk '/^ops\/s:/ {print $2}' <<<"$out")
    cpu=$(awk '/server CPU/ {for (i = 1; i <= NF; i++) if ($i == "per") {print substr($(i-2), 2); exit}}' <<<"$out")
    p99=$(awk '/^latency ms:/ {for (i = 1; i <= NF; i++) if ($i == "p99") {print $(i+1); exit}}' <<<"$out")
    max=$(awk '/^latency ms:/ {for (i = 1; i <= NF; i++) if ($i == "max") {print $(i+1); exit}}' <<<"$out")
    echo "$label $workload $ops ${cpu:-?} ${p99:-?} ${max:-?}" | tee -a "$RESULTS_DIR/results"
}

for rep in $(seq "$REPS"); do
    for w in $WORKLOADS; do
        run_one "$A" A "$w" "$rep"
        run_one "$B" B "$w" "$rep"
    done
done
echo "medians (ops/s, server CPU s per 1,000 ops, p99 ms, max ms; each column on its own):"
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
for w in $WORKLOADS; do
    for label in A B; do
        rows=$(awk -v l="$label" -v w="$w" '$1 == l && $2 == w' "$RESULTS_DIR/results")
        printf "  %-6s %s: %s ops/s, %s, p99 %s, max %s\n" "$w" "$label" \
            "$(awk '{print $3}' <<<"$rows" | median)" "$(awk '{print $4}' <<<"$rows" | median)" \
            "$(awk '{print $5}' <<<"$rows" | median)" "$(awk '{print $6}' <<<"$rows" | median)"
    done
done
echo "runs and logs in $RESULTS_DIR"
