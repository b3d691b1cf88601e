#!/usr/bin/env bash
# Same-machine, same-run comparison of synod's ZooKeeper front end against
# a real ZooKeeper ensemble with `synod bench`'s ZooKeeper workloads.
#
#   1. installs Debian's zookeeper package if /usr/share/zookeeper is missing;
#   2. builds synod (cargo build --release -p synod-cli; honours
#      CARGO_TARGET_DIR; under `flock /tmp/cargo.lock` when flock exists);
#   3. starts a 3-node synod (`synod dev`: ZooKeeper 2181/22181/32181, etcd
#      API 2379/22379/32379, peers 2380/22380/32380) and a 3-server
#      ZooKeeper ensemble, three JVMs (clients 12181/22281/32281, quorum
#      12888/22888/32888, election 13888/23888/33888), all on 127.0.0.1,
#      data in a temp dir, and waits until every ZooKeeper server answers
#      `srvr` as leader or follower;
#   4. runs every workload against each system, alternating synod and
#      ZooKeeper (and alternating who goes first) for REPS repetitions;
#      both systems run for the whole script, except that each zk-create
#      repetition gets a fresh pair (see zk-create below);
#   5. prints medians per system, the ratios synod/ZooKeeper, and server CPU
#      seconds per 1,000 ops; kills everything it started on exit.
#
# Every address is 127.0.0.1 and none is configurable: this script never
# sends traffic anywhere but this machine's loopback.
#
# Both systems fsync before acknowledging a write: synod always does, and
# ZooKeeper runs with forceSync=yes (its default). ZooKeeper's settings are
# otherwise its defaults (tickTime=2000, NIO connections, snapCount 100000)
# plus maxClientCnxns=0 (no per-IP limit: every bench client comes from
# 127.0.0.1), admin.enableServer=false and 4lw.commands.whitelist=*.
# ZooKeeper's reads are local to the server a session is on; zk-sync-get
# is the read that sees every earlier write.
#
# zk-create: every repetition restarts both systems on empty data dirs,
# so each starts from the same empty tree (creates under a parent with a
# million children from earlier runs would measure another thing).
# ZooKeeper's JVMs then start cold: the warmup and the readiness load come
# before the window, and readiness is checked with zk-set.
#
# Environment (all optional):
#   DURATION=10   measured seconds per run     WARMUP=2   unrecorded seconds before it
#   REPS=3        repetitions per system       CLIENTS=64 closed-loop clients
#                 (one ZooKeeper session each, round-robin over the 3 servers)
#   WORKLOADS="zk-create zk-set zk-get zk-sync-get"  any of those four
#   VALUE_SIZE=256  bytes per znode's data     KEYS=10000  znodes zk-set/zk-get use
#   ZK_HEAP=2g    -Xmx (and -Xms) of each ZooKeeper JVM
#   QUOTA=2147483648  synod's --quota-backend-bytes (ZooKeeper has no such
#                 limit; raise it, or 0 for none, for long zk-create runs)
#   CARGO_LOCK=/tmp/cargo.lock  lock file the build takes (empty: no lock)
#   RESULTS_DIR=  where raw outputs go (default /tmp/bench-vs-zookeeper-<time>)
#
# Server CPU is the utime + stime of the server processes (/proc/PID/stat;
# synod dev is one process for its 3 nodes, ZooKeeper is 3 JVMs, summed).
# `synod bench --cpu-pids` reads it at the two edges of the measured window,
# so it excludes populating and warmup; the whole-invocation delta that this
# script reads around each run is kept in raw.tsv as a cross-check.

set -euo pipefail

readonly HOST=127.0.0.1
readonly SYNOD_ZK_PORTS=(2181 22181 32181)
readonly SYNOD_CLIENT_PORTS=(2379 22379 32379)
readonly SYNOD_PEER_PORTS=(2380 22380 32380)
readonly ZK_CLIENT_PORTS=(12181 22281 32281)
readonly ZK_QUORUM_PORTS=(12888 22888 32888)
readonly ZK_ELECTION_PORTS=(13888 23888 33888)
readonly ZK_HOME=/usr/share/zookeeper
# Seconds a ZooKeeper ensemble may take to start and elect a leader.
readonly ZK_START_TIMEOUT=120

DURATION=${DURATION:-10}
DURATION=${DURATION%s}
WARMUP=${WARMUP:-2}
WARMUP=${WARMUP%s}
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-64}
WORKLOADS=${WORKLOADS:-zk-create zk-set zk-get zk-sync-get}
VALUE_SIZE=${VALUE_SIZE:-256}
KEYS=${KEYS:-10000}
QUOTA=${QUOTA:-2147483648}
ZK_HEAP=${ZK_HEAP:-2g}
CARGO_LOCK=${CARGO_LOCK-/tmp/cargo.lock}
RESULTS_DIR=${RESULTS_DIR:-/tmp/bench-vs-zookeeper-$(date +%Y%m%d-%H%M%S)}

for n in DURATION WARMUP REPS CLIENTS VALUE_SIZE KEYS QUOTA; do
    if ! [[ ${!n} =~ ^[0-9]+$ ]] || [[ $n != WARMUP && $n != QUOTA && ${!n} -eq 0 ]]; then
        echo "error: $n must be a whole number (of seconds, runs, clients or bytes)," \
            "above 0 except WARMUP and QUOTA (got '${!n}')" >&2
        exit 2
    fi
done
if ! [[ $ZK_HEAP =~ ^[1-9][0-9]*[kKmMgG]?$ ]]; then
    echo "error: ZK_HEAP must be a JVM heap size like 2g or 1536m (got '$ZK_HEAP')" >&2
    exit 2
fi
for w in $WORKLOADS; do
    case $w in
        zk-create | zk-set | zk-get | zk-sync-get) ;;
        *) echo "error: unknown workload '$w' in WORKLOADS (zk-create zk-set zk-get zk-sync-get)" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d /tmp/bench-vs-zookeeper-data.XXXXXX)
mkdir -p "$RESULTS_DIR"
STARTED_PIDS=()

# Stops every server this script started (TERM, then KILL after 5 s).
stop_servers() {
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
    STARTED_PIDS=()
}

cleanup() {
    stop_servers
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
                "(a synod dev or a system zookeeper left running?) and run again" >&2
            exit 1
        fi
    done
}

ensure_zookeeper() {
    if [[ -d $ZK_HOME ]] && command -v java >/dev/null; then
        return
    fi
    log "installing zookeeper (apt-get)"
    apt-get -o DPkg::Lock::Timeout=600 update
    apt-get -o DPkg::Lock::Timeout=600 install -y zookeeper
}

# Runs cargo under $CARGO_LOCK when flock exists, so builds on a shared
# machine take turns.
cargo_locked() {
    if [[ -n $CARGO_LOCK ]] && command -v flock >/dev/null; then
        flock "$CARGO_LOCK" cargo "$@"
    else
        cargo "$@"
    fi
}

build_synod() {
    log "building synod (release${CARGO_LOCK:+; waits for $CARGO_LOCK if another build holds it})"
    (cd "$ROOT" && cargo_locked build --release -p synod-cli)
    local target
    target=$(cd "$ROOT" && cargo_locked metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    SYNOD="$target/release/synod"
    [[ -x $SYNOD ]] || { echo "error: $SYNOD was not built" >&2; exit 1; }
}

start_synod() {
    "$SYNOD" dev --data-dir "$TMP/synod" --quota-backend-bytes "$QUOTA" \
        >>"$RESULTS_DIR/synod.log" 2>&1 &
    SYNOD_PID=$!
    STARTED_PIDS+=("$SYNOD_PID")
    SYNOD_PIDS=$SYNOD_PID
    SYNOD_ENDPOINTS=$(for p in "${SYNOD_ZK_PORTS[@]}"; do loopback "$p"; done | paste -sd,)
}

# The classpath zkServer.sh uses (zkEnv.sh: the conf dir and zookeeper.jar,
# whose manifest names the libraries), plus an SLF4J binding: Debian's
# classpath has none, so ZooKeeper would log nothing at all (SLF4J's NOP
# logger). slf4j-simple writes WARN and above to the server's log file.
zk_classpath() {
    local cp=/etc/zookeeper/conf:/usr/share/java/zookeeper.jar
    [[ -f /usr/share/java/slf4j-simple.jar ]] && cp+=:/usr/share/java/slf4j-simple.jar
    echo "$cp"
}

start_zookeeper() {
    local i servers="" cp
    cp=$(zk_classpath)
    for i in 0 1 2; do
        servers+="server.$((i + 1))=$HOST:${ZK_QUORUM_PORTS[$i]}:${ZK_ELECTION_PORTS[$i]}"$'\n'
    done
    ZK_PIDS=""
    for i in 0 1 2; do
        local id=$((i + 1)) dir=$TMP/zookeeper/z$((i + 1))
        mkdir -p "$dir/data" "$dir/log"
        echo "$id" >"$dir/data/myid"
        cat >"$dir/zoo.cfg" <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=${ZK_CLIENT_PORTS[$i]}
clientPortAddress=$HOST
forceSync=yes
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
$servers
EOF
        cp "$dir/zoo.cfg" "$RESULTS_DIR/zookeeper-z$id.cfg"
        java "-Xms$ZK_HEAP" "-Xmx$ZK_HEAP" \
            -Dzookeeper.log.dir="$dir/log" \
            -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
            -Dorg.slf4j.simpleLogger.showDateTime=true \
            -XX:OnOutOfMemoryError='kill -9 %p' \
            -cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
            >>"$RESULTS_DIR/zookeeper-z$id.log" 2>&1 </dev/null &
        STARTED_PIDS+=("$!")
        ZK_PIDS+="${ZK_PIDS:+,}$!"
    done
    ZK_ENDPOINTS=$(for p in "${ZK_CLIENT_PORTS[@]}"; do loopback "$p"; done | paste -sd,)
}

# A ZooKeeper four-letter word's answer (empty if the server does not answer).
four_letter() {
    local port=$1 word=$2
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf %s "$2" >&3 && cat <&3' \
        "$HOST" "$port" "$word" 2>/dev/null || true
}

# Every ZooKeeper server answers `srvr` as leader or follower, one leader.
wait_zookeeper_quorum() {
    local started=$SECONDS port mode modes shown
    log "waiting for the ZooKeeper ensemble to elect a leader (up to ${ZK_START_TIMEOUT}s)"
    while :; do
        check_alive zookeeper "$ZK_PIDS"
        modes="" shown=""
        for port in "${ZK_CLIENT_PORTS[@]}"; do
            mode=$(four_letter "$port" srvr | sed -n 's/^Mode: //p')
            modes+="$mode"$'\n'
            shown+="${shown:+, }$port: ${mode:-no answer}"
        done
        if [[ $(grep -c -E '^(leader|follower)$' <<<"$modes") == 3 &&
            $(grep -c '^leader$' <<<"$modes") == 1 ]]; then
            ZK_VERSION=$(four_letter "${ZK_CLIENT_PORTS[0]}" srvr |
                sed -n 's/^Zookeeper version: \([^-,]*\).*/\1/p')
            log "ZooKeeper ${ZK_VERSION:-?} ensemble is up after $((SECONDS - started))s ($shown)"
            return
        fi
        if ((SECONDS - started >= ZK_START_TIMEOUT)); then
            echo "error: the ZooKeeper ensemble did not elect a leader within" \
                "${ZK_START_TIMEOUT}s ($shown)" >&2
            for port in 1 2 3; do
                echo "--- $RESULTS_DIR/zookeeper-z$port.log (tail):" >&2
                tail -n 20 "$RESULTS_DIR/zookeeper-z$port.log" >&2
            done
            exit 1
        fi
        sleep 0.5
    done
}

# Ready means a short write load through every endpoint has no error
# (zk-set on its own 10 znodes, /bench/0 to /bench/9, with the run's value
# size so a later zk-get with KEYS=10 reads what it expects).
source "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"

# One run: `bench_once SYSTEM WORKLOAD REP`, appends a row to raw.tsv.
bench_once() {
    local system=$1 workload=$2 rep=$3 endpoints pids out
    if [[ $system == synod ]]; then
        endpoints=$SYNOD_ENDPOINTS pids=$SYNOD_PIDS
    else
        endpoints=$ZK_ENDPOINTS pids=$ZK_PIDS
    fi
    out="$RESULTS_DIR/$workload-$system-$rep.txt"
    log "$workload rep $rep: $system"
    local before after
    before=$(cpu_ticks "$pids")
    # The run is bounded: window + warmup + populating + request timeouts.
    timeout $((DURATION + WARMUP + 300)) "$SYNOD" bench --endpoints "$endpoints" \
        --workload "$workload" --keys "$KEYS" --value-size "$VALUE_SIZE" \
        --clients "$CLIENTS" --duration "${DURATION}s" \
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
    # Space the data takes on disk (ZooKeeper's preallocated 64 MiB
    # transaction logs are sparse: their apparent size would overstate it).
    local data_dir=$TMP/$system
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$system" "$rep" \
        "$(field ops_per_s)" "$(field p50_ms)" "$(field p99_ms)" "$(field p999_ms)" \
        "$(field max_ms)" "$(field errors)" "$(field server_cpu_s_per_kop)" "$(field ops)" \
        "$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.3f", t / hz}')" \
        "$(mem_mib VmRSS "$pids")" "$(mem_mib VmHWM "$pids")" \
        "$(( $(du -sk "$data_dir" | cut -f1) / 1024 ))" \
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
    echo "synod vs ZooKeeper ${ZK_VERSION:-3.x} (forceSync=yes, -Xmx$ZK_HEAP):" \
        "medians of $REPS runs, $CLIENTS clients (one session each)," \
        "${DURATION}s measured after ${WARMUP}s warmup," \
        "3 nodes each on $(nproc) cores, ${VALUE_SIZE}-byte values over $KEYS znodes"
    printf '%-12s %-9s %10s %9s %9s %9s %9s %7s %14s %9s %9s\n' workload system ops/s \
        "p50 ms" "p99 ms" "p99.9 ms" "max ms" errors "CPU s/1000 ops" "RSS MiB" "peak MiB"
    for w in $WORKLOADS; do
        declare -A m=()
        for s in synod zookeeper; do
            for c in 4 5 6 7 8 10 13 14; do
                m[$s,$c]=$(column "$w" "$s" "$c" | median)
            done
            m[$s,9]=$(column "$w" "$s" 9 | awk '{t += $1} END {print t + 0}')
            printf '%-12s %-9s %10.1f %9.3f %9.3f %9.3f %9.3f %7s %14.4f %9s %9s\n' "$w" "$s" \
                "${m[$s,4]}" "${m[$s,5]}" "${m[$s,6]}" "${m[$s,7]}" "${m[$s,8]}" \
                "${m[$s,9]}" "${m[$s,10]}" "${m[$s,13]}" "${m[$s,14]}"
        done
        printf '%-12s %-9s' "$w" ratio
        for c in 4 5 6 7 8; do
            awk -v a="${m[synod,$c]}" -v b="${m[zookeeper,$c]}" -v wd=$([[ $c == 4 ]] && echo 10 || echo 9) \
                'BEGIN {if (b > 0) printf " %*.2fx", wd - 1, a / b; else printf " %*s", wd, "-"}'
        done
        printf ' %7s' ""
        awk -v a="${m[synod,10]}" -v b="${m[zookeeper,10]}" \
            'BEGIN {if (b > 0) printf " %13.2fx\n", a / b; else printf " %14s\n", "-"}'
        unset m
    done
    echo "(ratio = synod / ZooKeeper: above 1 is better for ops/s, worse for latency and CPU;" \
        "errors are summed over the runs)"
    echo "raw results: $RESULTS_DIR/raw.tsv and one output file per run"
}

ALL_PORTS=("${SYNOD_ZK_PORTS[@]}" "${SYNOD_CLIENT_PORTS[@]}" "${SYNOD_PEER_PORTS[@]}"
    "${ZK_CLIENT_PORTS[@]}" "${ZK_QUORUM_PORTS[@]}" "${ZK_ELECTION_PORTS[@]}")

# Both systems, started on empty data dirs and ready for load.
start_servers() {
    rm -rf "$TMP/synod" "$TMP/zookeeper"
    start_synod
    start_zookeeper
    wait_zookeeper_quorum
    wait_ready synod "$SYNOD_ENDPOINTS" --workload zk-set --value-size "$VALUE_SIZE"
    wait_ready zookeeper "$ZK_ENDPOINTS" --workload zk-set --value-size "$VALUE_SIZE"
}

# Stops both systems and starts them again, once their ports are free.
restart_servers() {
    log "restarting both systems on empty data dirs"
    stop_servers
    local port
    for port in "${ALL_PORTS[@]}"; do
        for _ in $(seq 100); do
            port_busy "$port" || break
            sleep 0.1
        done
    done
    ensure_ports_free "${ALL_PORTS[@]}"
    start_servers
}

main() {
    ensure_zookeeper
    build_synod
    ensure_ports_free "${ALL_PORTS[@]}"
    start_servers
    # Whether the running servers already served a zk-create run.
    local created=0
    printf 'workload\tsystem\trep\tops_per_s\tp50_ms\tp99_ms\tp999_ms\tmax_ms\terrors\tserver_cpu_s_per_kop\tops\tserver_cpu_s_whole_invocation\trss_mib\tpeak_rss_mib\tdata_mib\n' \
        >"$RESULTS_DIR/raw.tsv"
    local w rep turn=0
    for w in $WORKLOADS; do
        for rep in $(seq "$REPS"); do
            # Alternate who goes first (across workloads too, so that even
            # REPS=1 alternates), so neither always runs on a warmer machine.
            turn=$((turn + 1))
            if [[ $w == zk-create ]]; then
                if ((created)); then restart_servers; fi
                created=1
            fi
            if ((turn % 2)); then
                bench_once synod "$w" "$rep"
                bench_once zookeeper "$w" "$rep"
            else
                bench_once zookeeper "$w" "$rep"
                bench_once synod "$w" "$rep"
            fi
        done
    done
    report | tee "$RESULTS_DIR/report.txt"
}

main "$@"
