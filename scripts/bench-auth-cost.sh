#!/usr/bin/env bash
# What client TLS and etcd auth cost synod itself: two 3-process synod
# clusters on this machine, one plain and one with client TLS (a throwaway
# CA made with openssl) and auth on (a `bench` user whose role reads and
# writes bench/, simple tokens, bcrypt cost 10), measured alternately with
# the same `synod bench` runs; medians of REPS.
#
# Environment (all optional): DURATION=10 WARMUP=2 REPS=3 CLIENTS=64
# WORKLOADS="put get" VALUE_SIZE=256 KEYS=10000
# RESULTS_DIR=/tmp/bench-auth-cost-<time>
# TLS=0 measures auth alone (both clusters plain text);
# SPLIT_AT=bench/2500,bench/5000,bench/7500 shards both clusters there
# (auth in a sharded cluster, design 0018).
#
# Every address is 127.0.0.1 (clients 2379.. and 3379.., peers 2380.. and
# 3380..); nothing leaves this machine's loopback.

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
setup_tmp bench-auth-cost

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-64}
WORKLOADS=${WORKLOADS:-put get}
VALUE_SIZE=${VALUE_SIZE:-256}
KEYS=${KEYS:-10000}
TLS=${TLS:-1}
SPLIT_AT=${SPLIT_AT:-}
RESULTS_DIR=${RESULTS_DIR:-/tmp/bench-auth-cost-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS_DIR"
source "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"

log "building synod (release)"
build_synod

for port in 2379 22379 32379 2380 22380 32380 3379 23379 33379 3380 23380 33380; do
    if port_busy "$port"; then
        echo "error: 127.0.0.1:$port is in use; stop what listens there" >&2
        exit 1
    fi
done

source "$(dirname "${BASH_SOURCE[0]}")/lib/secure.sh"
certs=$TMP/certs
make_certs "$certs"

# `start NAME CLIENT-BASE PEER-BASE EXTRA-FLAGS...`: three `synod server`
# processes on ports BASE, 2BASE+.., sets NAME_PIDS and NAME_ENDPOINTS.
start() {
    local name=$1 cbase=$2 pbase=$3 peers="" i pids="" endpoints=""
    shift 3
    local cports=("$cbase" "2$cbase" "3$cbase") pports=("$pbase" "2$pbase" "3$pbase")
    for i in 0 1 2; do peers+="${peers:+,}$((i + 1))=127.0.0.1:${pports[$i]}"; done
    for i in 0 1 2; do
        "$SYNOD" server --id $((i + 1)) --data-dir "$TMP/$name/n$((i + 1))" \
            --client-addr "127.0.0.1:${cports[$i]}" --peer-addr "127.0.0.1:${pports[$i]}" \
            --peers "$peers" "$@" >"$RESULTS_DIR/$name-n$((i + 1)).log" 2>&1 &
        PIDS+=("$!")
        pids+="${pids:+,}$!"
        disown "$!" # killed on exit without a job-control line
        endpoints+="${endpoints:+,}127.0.0.1:${cports[$i]}"
    done
    printf -v "${name}_PIDS" '%s' "$pids"
    printf -v "${name}_ENDPOINTS" '%s' "$endpoints"
}

SHARDED=()
[[ -n $SPLIT_AT ]] && SHARDED=(--split-at "$SPLIT_AT")
start plain 2379 2380 "${SHARDED[@]}"
if [[ $TLS == 1 ]]; then
    start secure 3379 3380 "${SHARDED[@]}" --cert-file "$certs/server.pem" --key-file "$certs/server.key"
    TLS_FLAGS=(--cacert "$certs/ca.pem")
    SECURE_URL=https://127.0.0.1:3379
else
    start secure 3379 3380 "${SHARDED[@]}"
    TLS_FLAGS=()
    SECURE_URL=http://127.0.0.1:3379
fi
wait_ready plain "$plain_ENDPOINTS" --workload put
wait_ready secure "$secure_ENDPOINTS" --workload put "${TLS_FLAGS[@]}"
enable_auth "$certs/ca.pem" "$SECURE_URL"
SECURE_FLAGS=("${TLS_FLAGS[@]}" --user bench:bench-password)
wait_ready secure "$secure_ENDPOINTS" --workload put "${SECURE_FLAGS[@]}"

printf 'workload\tsystem\trep\tops_per_s\tp50_ms\tp99_ms\terrors\tcpu_s_per_kop\n' >"$RESULTS_DIR/raw.tsv"
once() {
    local system=$1 workload=$2 rep=$3 endpoints pids flags=() out
    if [[ $system == plain ]]; then
        endpoints=$plain_ENDPOINTS pids=$plain_PIDS
    else
        endpoints=$secure_ENDPOINTS pids=$secure_PIDS flags=("${SECURE_FLAGS[@]}")
    fi
    out=$RESULTS_DIR/$workload-$system-$rep.txt
    log "$workload rep $rep: $system"
    timeout $((DURATION + WARMUP + 300)) "$SYNOD" bench --endpoints "$endpoints" \
        --workload "$workload" --keys "$KEYS" --value-size "$VALUE_SIZE" \
        --clients "$CLIENTS" --duration "${DURATION}s" --warmup "${WARMUP}s" \
        --cpu-pids "$pids" "${flags[@]}" >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
    check_alive "$system" "$pids"
    local line
    line=$(grep '^summary:' "$out")
    field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$system" "$rep" "$(field ops_per_s)" \
        "$(field p50_ms)" "$(field p99_ms)" "$(field errors)" "$(field server_cpu_s_per_kop)" \
        >>"$RESULTS_DIR/raw.tsv"
}

for w in $WORKLOADS; do
    for rep in $(seq "$REPS"); do
        if ((rep % 2)); then once plain "$w" "$rep"; once secure "$w" "$rep"
        else once secure "$w" "$rep"; once plain "$w" "$rep"; fi
    done
done

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
col() { awk -F'\t' -v w="$1" -v s="$2" -v c="$3" '$1 == w && $2 == s {print $c}' "$RESULTS_DIR/raw.tsv" | median; }
{
    echo
    echo "synod plain vs synod with auth (client TLS: $TLS; split at: ${SPLIT_AT:-none}):" \
        "medians of $REPS, $CLIENTS clients, ${DURATION}s after ${WARMUP}s warmup," \
        "3 server processes each on $(nproc) cores"
    printf '%-6s %-7s %10s %8s %8s %7s %14s\n' workload system ops/s "p50 ms" "p99 ms" errors "CPU s/1000 ops"
    for w in $WORKLOADS; do
        for s in plain secure; do
            printf '%-6s %-7s %10.1f %8.3f %8.3f %7s %14.4f\n' "$w" "$s" "$(col "$w" "$s" 4)" \
                "$(col "$w" "$s" 5)" "$(col "$w" "$s" 6)" \
                "$(awk -F'\t' -v w="$w" -v s="$s" '$1 == w && $2 == s {t += $7} END {print t + 0}' "$RESULTS_DIR/raw.tsv")" \
                "$(col "$w" "$s" 8)"
        done
        awk -v a="$(col "$w" secure 4)" -v b="$(col "$w" plain 4)" -v c="$(col "$w" secure 8)" -v d="$(col "$w" plain 8)" \
            -v w="$w" 'BEGIN {printf "%-6s secure/plain: throughput %.2fx, CPU per op %.2fx\n", w, a / b, c / d}'
    done
    echo "raw results: $RESULTS_DIR"
} | tee "$RESULTS_DIR/report.txt"
