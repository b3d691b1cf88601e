# Helpers the same-run comparisons (bench-vs-etcd.sh, bench-vs-zookeeper.sh)
# share: readiness, liveness, CPU and memory of server processes. Needs
# the caller's $SYNOD, $RESULTS_DIR and log().

# `wait_ready NAME ENDPOINTS BENCH-FLAGS...`: until a tiny `synod bench`
# with those flags runs with no error (60 tries, 0.5 s apart), or exit.
wait_ready() {
    local name=$1 endpoints=$2 out
    shift 2
    for _ in $(seq 60); do
        out=$("$SYNOD" bench --endpoints "$endpoints" "$@" --clients 3 \
            --duration 300ms --warmup 0s --keys 10 2>&1) || true
        if grep -q 'summary:.* errors=0 ' <<<"$out"; then
            log "$name is ready"
            return
        fi
        sleep 0.5
    done
    echo "error: $name did not become ready; last attempt:" >&2
    echo "$out" >&2
    exit 1
}

# `check_alive NAME PIDS`: exits naming the dead one if any of the
# comma-separated pids is gone.
check_alive() {
    local name=$1 pids=$2 pid
    for pid in ${pids//,/ }; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: a $name server process ($pid) died; logs in $RESULTS_DIR" >&2
            exit 1
        fi
    done
}

# utime + stime in clock ticks, summed over the comma-separated pids.
cpu_ticks() {
    local total=0 pid fields
    for pid in ${1//,/ }; do
        fields=$(sed 's/^.*) //' "/proc/$pid/stat")
        total=$((total + $(awk '{print $12 + $13}' <<<"$fields")))
    done
    echo "$total"
}

# Resident and peak resident memory in MiB, summed over the comma-separated pids.
mem_mib() {
    local field=$1 total=0 pid kb
    for pid in ${2//,/ }; do
        kb=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status")
        total=$((total + ${kb:-0}))
    done
    echo $((total / 1024))
}
