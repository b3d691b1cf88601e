#!/usr/bin/env bash
# Where synod's server CPU goes under one workload: a perf profile of the
# `synod dev` process (all three nodes) while `synod bench` loads it.
#
#   1. builds synod (release, line tables kept: see [profile.release]);
#   2. starts `synod dev` on a temp dir (127.0.0.1 ports 2379/22379/32379);
#   3. runs `synod bench --workload $WORKLOAD` (64 clients over every
#      endpoint) and records the server with `perf record --call-graph dwarf`
#      for PROFILE_SECONDS in the middle of the run;
#   4. writes into OUT_DIR: perf.data, report.txt (top functions by self and
#      by total time), folded.txt (one line per stack, for flame graphs) and,
#      when `inferno-flamegraph` is installed (cargo install inferno),
#      flame.svg.
#
# Needs perf (Debian's linux-perf) and the right to profile (root, or
# kernel.perf_event_paranoid <= 1). Environment: WORKLOAD=put (or zk-set, ...) VALUE_SIZE=256
# KEYS=10000 CLIENTS=64 PROFILE_SECONDS=8 OUT_DIR=/tmp/synod-profile-<time>
# DEV_FLAGS (more `synod dev` flags).

set -euo pipefail

WORKLOAD=${WORKLOAD:-put}
VALUE_SIZE=${VALUE_SIZE:-256}
KEYS=${KEYS:-10000}
CLIENTS=${CLIENTS:-64}
PROFILE_SECONDS=${PROFILE_SECONDS:-8}
OUT_DIR=${OUT_DIR:-/tmp/synod-profile-$(date +%Y%m%d-%H%M%S)}
for n in VALUE_SIZE KEYS CLIENTS PROFILE_SECONDS; do
    [[ ${!n} =~ ^[0-9]+$ ]] || { echo "error: $n must be a whole number (got '${!n}')" >&2; exit 2; }
done
command -v perf >/dev/null || { echo "error: perf not found (apt-get install linux-perf)" >&2; exit 1; }

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
setup_tmp synod-profile
build_synod
mkdir -p "$OUT_DIR"

# DEV_FLAGS: more `synod dev` flags, e.g. DEV_FLAGS="--split-at bench/5000".
# shellcheck disable=SC2086
"$SYNOD" dev --data-dir "$TMP/data" ${DEV_FLAGS:-} >"$TMP/synod.log" 2>&1 &
SYNOD_PID=$!
PIDS+=("$SYNOD_PID")
for _ in $(seq 200); do
    "$SYNOD" bench --workload put --clients 3 --duration 200ms --warmup 0s --keys 10 2>&1 |
        grep -q 'summary:.* errors=0 ' && break
    sleep 0.1
done

run_seconds=$((PROFILE_SECONDS + 8))
log "bench: $WORKLOAD, $CLIENTS clients, ${VALUE_SIZE} B values over $KEYS keys, ${run_seconds}s"
# ZooKeeper workloads load synod dev's ZooKeeper ports.
endpoints=()
[[ $WORKLOAD == zk-* ]] && endpoints=(--endpoints 127.0.0.1:2181,127.0.0.1:22181,127.0.0.1:32181)
"$SYNOD" bench --workload "$WORKLOAD" "${endpoints[@]}" --clients "$CLIENTS" --value-size "$VALUE_SIZE" \
    --keys "$KEYS" --duration "${run_seconds}s" --warmup 0s >"$OUT_DIR/bench.txt" 2>&1 &
BENCH_PID=$!
PIDS+=("$BENCH_PID")
sleep 4
log "perf record for ${PROFILE_SECONDS}s"
perf record -q -F 499 --call-graph dwarf,32768 -p "$SYNOD_PID" -o "$OUT_DIR/perf.data" \
    -- sleep "$PROFILE_SECONDS" 2>/dev/null
wait "$BENCH_PID" || true
grep -E '^(ops/s|latency|errors)' "$OUT_DIR/bench.txt" || true

perf report -i "$OUT_DIR/perf.data" --no-children --sort symbol --percent-limit 0.7 \
    --stdio -g none 2>/dev/null >"$OUT_DIR/report.txt"
perf report -i "$OUT_DIR/perf.data" --children --sort symbol --percent-limit 2 \
    --stdio -g none 2>/dev/null >>"$OUT_DIR/report.txt"
perf script -i "$OUT_DIR/perf.data" 2>/dev/null >"$TMP/script.txt"
if command -v inferno-collapse-perf >/dev/null; then
    inferno-collapse-perf <"$TMP/script.txt" >"$OUT_DIR/folded.txt"
    inferno-flamegraph --title "synod dev, $WORKLOAD" <"$OUT_DIR/folded.txt" >"$OUT_DIR/flame.svg"
fi
log "profile in $OUT_DIR"
