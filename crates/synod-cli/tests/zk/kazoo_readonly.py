"""kazoo in ZooKeeper's read-only mode against a synod node that lost its
quorum. Run by crates/synod-cli/tests/zookeeper.rs.

    python kazoo_readonly.py readonly HOST
        HOST is the only node left of its cluster (the test killed the
        others, and HOST's `isro` says `ro`). A client with read_only=True
        connects read-only (CONNECTED_RO) and reads what the cluster held
        (/ro is b"before"); its writes and syncs fail with
        NotReadOnlyCallError; a client without read_only is not served.
        Then it prints `WAITING` and reads a line from stdin: the test
        restarts the other nodes meanwhile. The read-only client must end
        up connected read-write (CONNECTED) and its writes succeed.

Prints `ok: NAME` on success; `FAIL: NAME: why` and exit 1 on failure.
"""

import sys

from kazoo_common import (
    Failed,
    check,
    check_eq,
    client,
    require_kazoo,
    run_checks,
    say,
    wait_until,
    watchdog,
)

require_kazoo()

from kazoo.exceptions import NotReadOnlyCallError  # noqa: E402
from kazoo.handlers.threading import KazooTimeoutError  # noqa: E402
from kazoo.protocol.states import KeeperState  # noqa: E402


def refused(call, what):
    """`call` must fail with NotReadOnlyCallError."""
    try:
        call()
    except NotReadOnlyCallError:
        return
    raise Failed(f"{what} did not fail with NotReadOnlyCallError")


def readonly(host):
    c = client(host, timeout=10.0, read_only=True)
    try:
        wait_until(
            lambda: c.client_state == KeeperState.CONNECTED_RO,
            "connected read-only",
            timeout=20,
        )
        data, stat = c.get("/ro")
        check_eq(data, b"before", "/ro read from the read-only node")
        check("ro" in c.get_children("/"), "/ro listed under /")
        check(c.exists("/missing") is None, "exists on a missing node")
        refused(lambda: c.create("/ro/new", b"x"), "create")
        refused(lambda: c.set("/ro", b"after"), "setData")
        refused(lambda: c.delete("/ro"), "delete")
        refused(lambda: c.sync("/"), "sync")
        say("ok: reads_and_refused_writes")
        try:
            plain = client(host, timeout=4.0)
        except KazooTimeoutError:
            plain = None
        if plain is not None:
            plain.stop()
            plain.close()
            raise Failed("a client that did not ask for read-only got a session")
        say("ok: read_write_client_not_served")
        say("WAITING")
        line = sys.stdin.readline().strip()
        check_eq(line, "restarted", "the test's word")
        # The node closes read-only connections once it knows a leader
        # again; kazoo reconnects and gets a read-write session.
        wait_until(
            lambda: c.client_state == KeeperState.CONNECTED,
            "connected read-write after the quorum came back",
            timeout=60,
        )
        c.create("/ro/after", b"rw")
        check_eq(c.get("/ro/after")[0], b"rw", "a write after the quorum came back")
        say("ok: back_to_read_write")
    finally:
        c.stop()
        c.close()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "readonly":
        watchdog(150)
        run_checks([("readonly", lambda: readonly(sys.argv[2]))], [])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
