#!/usr/bin/env bash
# A/B of two synod binaries on the same machine, same run, alternating:
# what a change costs or gains (e.g. the metrics layer of issue 13).
#
#   A=/tmp/synod-before B=target/release/synod scripts/ab-synod.sh
#
# Each repetition starts a fresh `synod dev` (3 nodes, one process) with
# A, loads it, stops it, then the same with B. The load comes from B's
# `synod bench` both times, so the client is the same. Prints, per
# workload, every run's ops/s and server CPU seconds per 1,000 ops, and
# the medians. Settings: WORKLOADS (put get), REPS (3), DURATION (8),
# WARMUP (2), CLIENTS (64).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${A:?A=path of the first synod binary}" "${B:?B=path of the second synod binary}"
WORKLOADS=${WORKLOADS:-"put get"}
REPS=${REPS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CLIENTS=${CLIENTS:-64}
ENDPOINTS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
SYNOD=$B
RESULTS_DIR=$(mktemp -d -t synod-ab.XXXXXX)
log() { echo "[ab] $*" >&2; }
# shellcheck source=lib/procs.sh
source scripts/lib/procs.sh

run_one() { # binary label workload rep
    local bin=$1 label=$2 workload=$3 rep=$4 dir pid out
    dir=$RESULTS_DIR/$label-$workload-$rep
    mkdir -p "$dir"
    (cd "$dir" && exec "$bin" dev >"$dir/dev.log" 2>&1) &
    pid=$!
    wait_ready "$label" "$ENDPOINTS" --workload put
    out=$("$SYNOD" bench --endpoints "$ENDPOINTS" --workload "$workload" --clients "$CLIENTS" \
        --duration "${DURATION}s" --warmup "${WARMUP}s" --cpu-pids "$pid" 2>/dev/null)
    echo "$out" >"$dir/bench.txt"
    check_alive "$label" "$pid"
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    local ops cpu
    ops=$(awk '/^ops\/s:/ {print $2}' <<<"$out")
    cpu=$(awk '/server CPU/ {for (i = 1; i <= NF; i++) if ($i == "per") {print substr($(i-2), 2); exit}}' <<<"$out")
    echo "$label $workload $ops ${cpu:-?}" | tee -a "$RESULTS_DIR/results"
}

for rep in $(seq "$REPS"); do
    for w in $WORKLOADS; do
        run_one "$A" A "$w" "$rep"
        run_one "$B" B "$w" "$rep"
    done
done
echo "medians (ops/s, server CPU s per 1,000 ops):"
for w in $WORKLOADS; do
    for label in A B; do
        awk -v l="$label" -v w="$w" '$1 == l && $2 == w {print $3, $4}' "$RESULTS_DIR/results" |
            sort -n | awk -v l="$label" -v w="$w" '{o[NR] = $1; c[NR] = $2} END {m = int((NR + 1) / 2); printf "  %-6s %s: %s ops/s, %s\n", w, l, o[m], c[m]}'
    done
done
echo "runs and logs in $RESULTS_DIR"
