# Shared by the measurement scripts (source it; it is not run alone):
# a temp dir removed on exit, every process in PIDS killed on exit, a
# timestamped log, the release `synod` binary built and found, and a
# check for a taken loopback port.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#   setup_tmp restart-with-data    # sets ROOT and TMP, installs the traps
#   build_synod                    # sets SYNOD

PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}

setup_tmp() {
    ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

build_synod() {
    (cd "$ROOT" && cargo build --release -p synod-cli)
    SYNOD=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/synod
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
