#!/usr/bin/env bash
# Same-machine, same-run comparison of synod against etcd with `synod bench`.
#
#   1. installs Debian's etcd-server if `etcd` is missing;
#   2. builds synod (cargo build --release -p synod-cli; honours CARGO_TARGET_DIR);
#   3. starts a 3-node synod (`synod dev`: clients 2379/22379/32379, peers
#      2380/22380/32380) and a 3-member etcd cluster (clients 12379/22479/32479,
#      peers 12380/22480/32480), all on 127.0.0.1, data in a temp dir;
#   4. runs every workload against each system, alternating synod and etcd
#      (and alternating who goes first) for REPS repetitions;
#   5. prints medians per system, the ratios synod/etcd, and server CPU
#      seconds per 1,000 ops; kills everything it started on exit.
#
# Every address is 127.0.0.1 and none is configurable: this script never
# sends traffic anywhere but this machine's loopback.
#
# Environment (all optional):
#   DURATION=10   measured seconds per run     WARMUP=2   unrecorded seconds before it
#   REPS=3        repetitions per system       CLIENTS=64 closed-loop clients
#   WORKLOADS="put get txn"  any of: put get get-serializable txn mixed
#                 lease-grant lease-cycle lease-keepalive lock lock-contended watch
#                 (lock-contended: every client on one lock; watch: WATCHERS
#                 watchers of one key, WRITERS closed-loop writers, ops/s is
#                 events delivered)
#   WATCHERS=1000 WRITERS=4
#   VALUE_SIZE=256  bytes per value written   KEYS=10000  size of the key space
#   QUOTA=2147483648  --quota-backend-bytes of both systems (raise it for GB runs)
#   CONNS=        gRPC connections per run (default: one per endpoint)
#   RESULTS_DIR=  where raw outputs go (default /tmp/bench-vs-etcd-<time>)
#   SECURE=1      both systems with client TLS (a throwaway CA made with
#                 openssl) and etcd auth on: a root user and a `bench` user
#                 whose role reads and writes `bench/`, which every run
#                 authenticates as (simple tokens, bcrypt cost 10 on both).
#                 synod then runs as three `synod server` processes, like
#                 etcd's three; peers talk plain TCP on both.
#
# Server CPU is the utime + stime of the server processes (/proc/PID/stat;
# synod dev is one process for its 3 nodes, etcd is 3 processes, summed).
# `synod bench --cpu-pids` reads it at the two edges of the measured window,
# so it excludes populating and warmup; the whole-invocation delta that this
# script reads around each run is kept in raw.tsv as a cross-check.

set -euo pipefail

readonly HOST=127.0.0.1
readonly SYNOD_CLIENT_PORTS=(2379 22379 32379)
readonly SYNOD_PEER_PORTS=(2380 22380 32380)
readonly ETCD_CLIENT_PORTS=(12379 22479 32479)
readonly ETCD_PEER_PORTS=(12380 22480 32480)

DURATION=${DURATION:-10}
DURATION=${DURATION%s}
WARMUP=${WARMUP:-2}
WARMUP=${WARMUP%s}
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-64}
WORKLOADS=${WORKLOADS:-put get txn}
CONNS=${CONNS:-}
WATCHERS=${WATCHERS:-1000}
WRITERS=${WRITERS:-4}
VALUE_SIZE=${VALUE_SIZE:-256}
KEYS=${KEYS:-10000}
QUOTA=${QUOTA:-2147483648}
RESULTS_DIR=${RESULTS_DIR:-/tmp/bench-vs-etcd-$(date +%Y%m%d-%H%M%S)}
SECURE=${SECURE:-0}
[[ $SECURE == 0 || $SECURE == 1 ]] || { echo "error: SECURE must be 0 or 1" >&2; exit 2; }

for n in DURATION WARMUP REPS CLIENTS VALUE_SIZE KEYS QUOTA; do
    if ! [[ ${!n} =~ ^[0-9]+$ ]] || [[ $n != WARMUP && ${!n} -eq 0 ]]; then
        echo "error: $n must be a whole number of seconds or runs, above 0 except WARMUP (got '${!n}')" >&2
        exit 2
    fi
done
if [[ -n $CONNS && ! $CONNS =~ ^[1-9][0-9]*$ ]]; then
    echo "error: CONNS must be a positive whole number (got '$CONNS')" >&2
    exit 2
fi
for w in $WORKLOADS; do
    case $w in
        put | get | get-serializable | txn | mixed) ;;
        lease-grant | lease-cycle | lease-keepalive | lock | lock-contended | watch) ;;
        *) echo "error: unknown workload '$w' in WORKLOADS" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d /tmp/bench-vs-etcd-data.XXXXXX)
mkdir -p "$RESULTS_DIR"
STARTED_PIDS=()

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Every address this script uses goes through here.
loopback() {
    local port=$1
    [[ $port =~ ^[0-9]+$ ]] || { echo "bad port $port" >&2; exit 1; }
    echo "$HOST:$port"
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

ensure_ports_free() {
    local port
    for port in "$@"; do
        if port_busy "$port"; then
            echo "error: $(loopback "$port") is already in use; stop whatever listens there" \
                "(a system etcd service?) and run again" >&2
            exit 1
        fi
    done
}

ensure_etcd() {
    if command -v etcd >/dev/null; then
        return
    fi
    log "installing etcd-server (apt-get)"
    apt-get -o DPkg::Lock::Timeout=600 update
    apt-get -o DPkg::Lock::Timeout=600 install -y etcd-server
}

build_synod() {
    log "building synod (release)"
    (cd "$ROOT" && cargo build --release -p synod-cli)
    local target
    target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    SYNOD="$target/release/synod"
    [[ -x $SYNOD ]] || { echo "error: $SYNOD was not built" >&2; exit 1; }
}

# etcd refuses to start on architectures it does not support unless told.
etcd_arch_env() {
    case $(uname -m) in
        x86_64 | aarch64) ;;
        *) export ETCD_UNSUPPORTED_ARCH=$(dpkg --print-architecture) ;;
    esac
}

# With SECURE=1: the flags every bench run adds.
BENCH_SECURITY=()
source "$(dirname "${BASH_SOURCE[0]}")/lib/secure.sh"

start_synod() {
    SYNOD_ENDPOINTS=$(for p in "${SYNOD_CLIENT_PORTS[@]}"; do loopback "$p"; done | paste -sd,)
    if [[ $SECURE == 0 ]]; then
        "$SYNOD" dev --data-dir "$TMP/synod" --quota-backend-bytes "$QUOTA" \
            >"$RESULTS_DIR/synod.log" 2>&1 &
        SYNOD_PID=$!
        STARTED_PIDS+=("$SYNOD_PID")
        SYNOD_PIDS=$SYNOD_PID
        return
    fi
    local peers="" i
    for i in 0 1 2; do
        peers+="${peers:+,}$((i + 1))=$(loopback "${SYNOD_PEER_PORTS[$i]}")"
    done
    SYNOD_PIDS=""
    for i in 0 1 2; do
        "$SYNOD" server --id $((i + 1)) --data-dir "$TMP/synod/n$((i + 1))" \
            --client-addr "$(loopback "${SYNOD_CLIENT_PORTS[$i]}")" \
            --peer-addr "$(loopback "${SYNOD_PEER_PORTS[$i]}")" --peers "$peers" \
            --quota-backend-bytes "$QUOTA" \
            --cert-file "$CERTS/server.pem" --key-file "$CERTS/server.key" \
            >"$RESULTS_DIR/synod-n$((i + 1)).log" 2>&1 &
        STARTED_PIDS+=("$!")
        SYNOD_PIDS+="${SYNOD_PIDS:+,}$!"
    done
}

start_etcd() {
    etcd_arch_env
    local cluster="" i
    for i in 0 1 2; do
        cluster+="${cluster:+,}e$((i + 1))=http://$(loopback "${ETCD_PEER_PORTS[$i]}")"
    done
    ETCD_PIDS=""
    for i in 0 1 2; do
        local client peer tls=()
        client=http://$(loopback "${ETCD_CLIENT_PORTS[$i]}")
        peer=http://$(loopback "${ETCD_PEER_PORTS[$i]}")
        if [[ $SECURE == 1 ]]; then
            client=https://$(loopback "${ETCD_CLIENT_PORTS[$i]}")
            tls=(--cert-file "$CERTS/server.pem" --key-file "$CERTS/server.key")
        fi
        etcd --name "e$((i + 1))" --data-dir "$TMP/etcd/e$((i + 1))" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token bench-vs-etcd \
            --quota-backend-bytes "$QUOTA" "${tls[@]}" \
            --logger zap --log-level warn \
            >"$RESULTS_DIR/etcd-e$((i + 1)).log" 2>&1 &
        STARTED_PIDS+=("$!")
        ETCD_PIDS+="${ETCD_PIDS:+,}$!"
    done
    ETCD_ENDPOINTS=$(for p in "${ETCD_CLIENT_PORTS[@]}"; do loopback "$p"; done | paste -sd,)
}

# Ready means a short write load through every endpoint has no error.
source "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"

# One run: `bench_once SYSTEM WORKLOAD REP`, appends a row to raw.tsv.
bench_once() {
    local system=$1 workload=$2 rep=$3 endpoints pids flags out
    if [[ $system == synod ]]; then
        endpoints=$SYNOD_ENDPOINTS pids=$SYNOD_PIDS
    else
        endpoints=$ETCD_ENDPOINTS pids=$ETCD_PIDS
    fi
    local clients=$CLIENTS
    case $workload in
        get-serializable) flags=(--workload get --serializable) ;;
        lock-contended) flags=(--workload lock --keys 1) ;;
        watch)
            flags=(--workload watch --keys 1 --writers "$WRITERS")
            clients=$WATCHERS
            ;;
        *) flags=(--workload "$workload" --keys "$KEYS") ;;
    esac
    flags+=(--value-size "$VALUE_SIZE" "${BENCH_SECURITY[@]}")
    [[ -n $CONNS ]] && flags+=(--conns "$CONNS")
    out="$RESULTS_DIR/$workload-$system-$rep.txt"
    log "$workload rep $rep: $system"
    local before after
    before=$(cpu_ticks "$pids")
    # The run is bounded: window + warmup + populating + request timeouts.
    timeout $((DURATION + WARMUP + 300)) "$SYNOD" bench --endpoints "$endpoints" \
        "${flags[@]}" --clients "$clients" --duration "${DURATION}s" \
        --warmup "${WARMUP}s" --cpu-pids "$pids" >"$out" 2>&1 || {
        echo "error: bench failed, output:" >&2
        cat "$out" >&2
        exit 1
    }
    after=$(cpu_ticks "$pids")
    check_alive "$system" "$pids"
    local line
    line=$(grep '^summary:' "$out")
    field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
    local data_dir
    data_dir=$TMP/$system
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$system" "$rep" \
        "$(field ops_per_s)" "$(field p50_ms)" "$(field p99_ms)" "$(field p999_ms)" \
        "$(field max_ms)" "$(field errors)" "$(field server_cpu_s_per_kop)" "$(field ops)" \
        "$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.3f", t / hz}')" \
        "$(mem_mib VmRSS "$pids")" "$(mem_mib VmHWM "$pids")" \
        "$(( $(du -sb "$data_dir" | cut -f1) / 1048576 ))" \
        >>"$RESULTS_DIR/raw.tsv"
    log "    memory: RSS $(mem_mib VmRSS "$pids") MiB, peak $(mem_mib VmHWM "$pids") MiB; data $(du -sh "$data_dir" | cut -f1)"
    grep -E '^(ops/s|latency|errors|server CPU)' "$out" | sed 's/^/    /' >&2
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# Column COL of raw.tsv for WORKLOAD and SYSTEM, one value a line.
column() { awk -F'\t' -v w="$1" -v s="$2" -v c="$3" '$1 == w && $2 == s {print $c}' "$RESULTS_DIR/raw.tsv"; }

report() {
    local w s c
    echo
    local secure=""
    [[ $SECURE == 1 ]] && secure=" with client TLS and auth on (simple tokens)"
    echo "synod vs etcd $(etcd --version | head -1 | sed 's/etcd Version: //')$secure:" \
        "medians of $REPS runs, $CLIENTS clients, ${DURATION}s measured after ${WARMUP}s warmup," \
        "3 nodes each on $(nproc) cores, ${VALUE_SIZE}-byte values over $KEYS keys"
    printf '%-17s %-6s %10s %9s %9s %9s %9s %7s %14s %9s %9s\n' workload system ops/s \
        "p50 ms" "p99 ms" "p99.9 ms" "max ms" errors "CPU s/1000 ops" "RSS MiB" "peak MiB"
    for w in $WORKLOADS; do
        declare -A m=()
        for s in synod etcd; do
            for c in 4 5 6 7 8 10 13 14; do
                m[$s,$c]=$(column "$w" "$s" "$c" | median)
            done
            m[$s,9]=$(column "$w" "$s" 9 | awk '{t += $1} END {print t + 0}')
            printf '%-17s %-6s %10.1f %9.3f %9.3f %9.3f %9.3f %7s %14.4f %9s %9s\n' "$w" "$s" \
                "${m[$s,4]}" "${m[$s,5]}" "${m[$s,6]}" "${m[$s,7]}" "${m[$s,8]}" \
                "${m[$s,9]}" "${m[$s,10]}" "${m[$s,13]}" "${m[$s,14]}"
        done
        printf '%-17s %-6s' "$w" ratio
        for c in 4 5 6 7 8; do
            awk -v a="${m[synod,$c]}" -v b="${m[etcd,$c]}" -v wd=$([[ $c == 4 ]] && echo 10 || echo 9) \
                'BEGIN {if (b > 0) printf " %*.2fx", wd - 1, a / b; else printf " %*s", wd, "-"}'
        done
        printf ' %7s' ""
        awk -v a="${m[synod,10]}" -v b="${m[etcd,10]}" \
            'BEGIN {if (b > 0) printf " %13.2fx\n", a / b; else printf " %14s\n", "-"}'
        unset m
    done
    echo "(ratio = synod / etcd: above 1 is better for ops/s, worse for latency and CPU;" \
        "errors are summed over the runs)"
    echo "raw results: $RESULTS_DIR/raw.tsv and one output file per run"
}

main() {
    ensure_etcd
    build_synod
    ensure_ports_free "${SYNOD_CLIENT_PORTS[@]}" "${SYNOD_PEER_PORTS[@]}" \
        "${ETCD_CLIENT_PORTS[@]}" "${ETCD_PEER_PORTS[@]}"
    if [[ $SECURE == 1 ]]; then
        CERTS=$TMP/certs
        make_certs "$CERTS"
    fi
    start_synod
    start_etcd
    if [[ $SECURE == 1 ]]; then
        # Ready for TLS clients, then auth on.
        BENCH_SECURITY=(--cacert "$CERTS/ca.pem")
        wait_ready synod "$SYNOD_ENDPOINTS" --workload get "${BENCH_SECURITY[@]}"
        wait_ready etcd "$ETCD_ENDPOINTS" --workload get "${BENCH_SECURITY[@]}"
        enable_auth "$CERTS/ca.pem" "https://${SYNOD_ENDPOINTS%%,*}"
        enable_auth "$CERTS/ca.pem" "https://${ETCD_ENDPOINTS%%,*}"
        BENCH_SECURITY+=(--user bench:bench-password)
    fi
    wait_ready synod "$SYNOD_ENDPOINTS" --workload put "${BENCH_SECURITY[@]}"
    wait_ready etcd "$ETCD_ENDPOINTS" --workload put "${BENCH_SECURITY[@]}"
    printf 'workload\tsystem\trep\tops_per_s\tp50_ms\tp99_ms\tp999_ms\tmax_ms\terrors\tserver_cpu_s_per_kop\tops\tserver_cpu_s_whole_invocation\n' \
        >"$RESULTS_DIR/raw.tsv"
    local w rep
    for w in $WORKLOADS; do
        for rep in $(seq "$REPS"); do
            # Alternate who goes first, so neither always runs on a warmer machine.
            if ((rep % 2)); then
                bench_once synod "$w" "$rep"
                bench_once etcd "$w" "$rep"
            else
                bench_once etcd "$w" "$rep"
                bench_once synod "$w" "$rep"
            fi
        done
    done
    report | tee "$RESULTS_DIR/report.txt"
}

main "$@"
