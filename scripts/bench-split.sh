#!/usr/bin/env bash
# What a shard split costs (issue 10, design 0016): `synod dev --shards
# auto` (3 nodes, one process) loaded with SIZE_MB of puts into its one
# shard, then a put load through every endpoint while `synod split` cuts
# the shard at its middle key, against the same load with no split, same
# run, alternating. Prints per run: the split's wall time (the HTTP call
# returns once the split applied on node 1), the data file's growth
# across the split, the load's p99 / max latency and errors; and the
# medians.
#
#   scripts/bench-split.sh                 # SIZE_MB=64 REPS=3
#   SIZE_MB=16 REPS=1 scripts/bench-split.sh
#
# Settings: SIZE_MB (64), REPS (3), CLIENTS (64), VALUE_SIZE (1024),
# DURATION (10, seconds of measured load; the split comes at a third).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-64}
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-64}
VALUE_SIZE=${VALUE_SIZE:-1024}
DURATION=${DURATION:-10}
ENDPOINTS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
SYNOD=${SYNOD:-target/release/synod}
RESULTS_DIR=$(mktemp -d -t synod-split.XXXXXX)
log() { echo "[split] $*" >&2; }
# shellcheck source=lib/procs.sh
source scripts/lib/procs.sh
[ -x "$SYNOD" ] || cargo build --release -q
# Keys bench/00000 .. bench/KEYS-1: the middle one is the split point.
KEYS=$((SIZE_MB * 1024 * 1024 / VALUE_SIZE))
WIDTH=${#KEYS}
[ $((KEYS - 1)) -lt $((10 ** (WIDTH - 1))) ] && WIDTH=$((WIDTH - 1))
MIDDLE="bench/$(printf "%0${WIDTH}d" $((KEYS / 2)))"

shard_bytes() { # the bytes of the shard holding every key, on node 1
    "$SYNOD" shards --json | awk -F'[:,]' '/"bytes"/ {gsub(/[^0-9]/, "", $2); s += $2} END {print s + 0}'
}

run_one() { # rep split(0|1)
    local rep=$1 split=$2 dir pid bin out
    dir=$RESULTS_DIR/$rep-$split
    mkdir -p "$dir"
    bin=$(realpath "$SYNOD")
    (cd "$dir" && exec "$bin" dev --shards auto --split-size 0 >"$dir/dev.log" 2>&1) &
    pid=$!
    wait_ready "rep $rep" "$ENDPOINTS" --workload put
    # Every key written once (and then some), until the shard holds SIZE_MB.
    while [ "$(shard_bytes)" -lt $((SIZE_MB * 1024 * 1024)) ]; do
        "$SYNOD" bench --endpoints "$ENDPOINTS" --workload put --clients "$CLIENTS" \
            --keys "$KEYS" --value-size "$VALUE_SIZE" --duration 5s --warmup 0s >/dev/null 2>&1
    done
    local before after took=-
    before=$(du -sk "$dir/synod-data" | cut -f1)
    "$SYNOD" bench --endpoints "$ENDPOINTS" --workload put --clients "$CLIENTS" \
        --keys "$KEYS" --value-size "$VALUE_SIZE" --duration "${DURATION}s" --warmup 1s \
        >"$dir/bench.txt" 2>/dev/null &
    local bench=$!
    sleep $((1 + DURATION / 3))
    if [ "$split" = 1 ]; then
        local t0 t1
        t0=$(date +%s%N)
        "$SYNOD" split "$MIDDLE" >"$dir/split.txt"
        t1=$(date +%s%N)
        took=$(((t1 - t0) / 1000000))
    fi
    wait "$bench"
    after=$(du -sk "$dir/synod-data" | cut -f1)
    check_alive "rep $rep" "$pid"
    "$SYNOD" shards >"$dir/shards.txt"
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    out=$(cat "$dir/bench.txt")
    local p99 max errors ops
    ops=$(grep -o 'ops_per_s=[0-9.]*' <<<"$out" | cut -d= -f2)
    p99=$(grep -o 'p99_ms=[0-9.]*' <<<"$out" | cut -d= -f2)
    max=$(grep -o 'max_ms=[0-9.]*' <<<"$out" | cut -d= -f2)
    errors=$(grep -o 'errors=[0-9]*' <<<"$out" | cut -d= -f2)
    echo "$split $took $(((after - before) / 1024)) $ops $p99 $max $errors" | tee -a "$RESULTS_DIR/results"
}

log "$SIZE_MB MiB in one shard ($KEYS keys of $VALUE_SIZE bytes), split at $MIDDLE"
echo "split(0/1) split_ms data_growth_MiB ops/s p99_ms max_ms errors"
for rep in $(seq "$REPS"); do
    run_one "$rep" 0
    run_one "$rep" 1
done
echo "medians:"
for split in 0 1; do
    awk -v s="$split" '$1 == s' "$RESULTS_DIR/results" | sort -k5 -n | awk -v s="$split" \
        '{r[NR] = $0} END {m = int((NR + 1) / 2); split(r[m], f, " "); printf "  %s: split %s ms, data +%s MiB, %s ops/s, p99 %s ms, max %s ms, errors %s\n", (s == 1 ? "with a split" : "no split    "), f[2], f[3], f[4], f[5], f[6], f[7]}'
done
echo "runs and logs in $RESULTS_DIR"
