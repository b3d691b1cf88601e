#!/usr/bin/env bash
# What shards cost and how they scale on this machine (issue 10), same
# run, alternating: `synod dev` (3 nodes, one process) unsharded and with
# 1, 2, 4, ... shards, loaded by `synod bench` with uniform puts over
# KEYS keys through every endpoint. Prints every run's ops/s, server CPU
# seconds per 1,000 ops and errors, and the medians per shard count.
#
#   scripts/bench-shards.sh                       # SHARDS="0 1 2 4 8 16"
#   SHARDS="0 1 64" WORKLOADS="put get" REPS=3 scripts/bench-shards.sh
#
# 0 is the unsharded cluster (group 1 holds every key). With ROUTING=1
# it also measures, with one shard, puts sent only to the shard's leader
# against puts sent only to a follower (which forwards them).
# Settings: SHARDS, WORKLOADS (put), REPS (3), DURATION (8), WARMUP (2),
# CLIENTS (64), KEYS (100000), VALUE_SIZE (256), ROUTING (0).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=${SHARDS:-"0 1 2 4 8 16"}
WORKLOADS=${WORKLOADS:-put}
REPS=${REPS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CLIENTS=${CLIENTS:-64}
KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-256}
ROUTING=${ROUTING:-0}
ENDPOINTS=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
SYNOD=${SYNOD:-target/release/synod}
RESULTS_DIR=$(mktemp -d -t synod-shards.XXXXXX)
log() { echo "[shards] $*" >&2; }
# shellcheck source=lib/procs.sh
source scripts/lib/procs.sh
[ -x "$SYNOD" ] || cargo build --release -q

# Split points that cut `synod bench`'s keys (bench/ and the number,
# zero-padded to the digits of KEYS-1) into n equal shards.
splits() {
    local n=$1 width i points=""
    width=${#KEYS}
    [ $((KEYS - 1)) -lt $((10 ** (width - 1))) ] && width=$((width - 1))
    for ((i = 1; i < n; i++)); do
        points+="${points:+,}bench/$(printf "%0${width}d" $((i * KEYS / n)))"
    done
    echo "$points"
}

run_one() { # shards workload rep [endpoints label]
    local n=$1 workload=$2 rep=$3 eps=${4:-$ENDPOINTS} label=${5:-all} dir pid out
    dir=$RESULTS_DIR/$n-$workload-$rep-$label
    mkdir -p "$dir"
    local flags=()
    if [ "$n" -eq 1 ]; then
        # One shard needs a split point too: one past every bench key
        # (group 2 holds them all, group 3 nothing).
        flags=(--split-at "bench0")
    elif [ "$n" -gt 1 ]; then
        flags=(--split-at "$(splits "$n")")
    fi
    local bin
    bin=$(realpath "$SYNOD")
    (cd "$dir" && exec "$bin" dev "${flags[@]}" >"$dir/dev.log" 2>&1) &
    pid=$!
    wait_ready "shards=$n" "$ENDPOINTS" --workload put
    if [ "$label" != all ]; then
        eps=$(routing_endpoint "$label")
    fi
    out=$("$SYNOD" bench --endpoints "$eps" --workload "$workload" --clients "$CLIENTS" \
        --keys "$KEYS" --value-size "$VALUE_SIZE" \
        --duration "${DURATION}s" --warmup "${WARMUP}s" --cpu-pids "$pid" 2>/dev/null)
    echo "$out" >"$dir/bench.txt"
    check_alive "shards=$n" "$pid"
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    local ops cpu errors
    ops=$(awk '/^ops\/s:/ {print $2}' <<<"$out")
    cpu=$(awk '/server CPU/ {for (i = 1; i <= NF; i++) if ($i == "per") {print substr($(i-2), 2); exit}}' <<<"$out")
    errors=$(awk '/^errors:/ {print $2}' <<<"$out")
    echo "$n $workload $label $ops ${cpu:-?} ${errors:-?}" | tee -a "$RESULTS_DIR/results"
}

# The etcd endpoint of the node leading shard group 2 (leader), or of
# another node (follower), from `synod shards`.
routing_endpoint() {
    local which=$1 leader
    leader=$("$SYNOD" shards --json | awk -F'[:,]' '/"leader"/ {gsub(/[^0-9]/, "", $2); print $2; exit}')
    local ports=(0 2379 22379 32379)
    if [ "$which" = leader ]; then
        echo "127.0.0.1:${ports[$leader]}"
    else
        echo "127.0.0.1:${ports[$((leader % 3 + 1))]}"
    fi
}

for rep in $(seq "$REPS"); do
    for w in $WORKLOADS; do
        for n in $SHARDS; do
            log "rep $rep: $w with $n shards"
            run_one "$n" "$w" "$rep"
        done
        if [ "$ROUTING" = 1 ]; then
            run_one 1 "$w" "$rep" "" leader
            run_one 1 "$w" "$rep" "" follower
        fi
    done
done
echo "medians (shards workload endpoints: ops/s, server CPU s per 1,000 ops, errors):"
awk '{print $1, $2, $3}' "$RESULTS_DIR/results" | sort -u | while read -r n w label; do
    awk -v n="$n" -v w="$w" -v l="$label" '$1 == n && $2 == w && $3 == l {print $4, $5, $6}' "$RESULTS_DIR/results" |
        sort -n | awk -v n="$n" -v w="$w" -v l="$label" '{o[NR] = $1; c[NR] = $2; e[NR] = $3} END {m = int((NR + 1) / 2); printf "  %3s shards %-4s %-8s %8s ops/s  %s  errors %s\n", n, w, l, o[m], c[m], e[m]}'
done
echo "runs and logs in $RESULTS_DIR"
