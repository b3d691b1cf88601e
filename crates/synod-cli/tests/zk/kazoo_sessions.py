"""kazoo sessions against a synod cluster's ZooKeeper front end: expiry
and failover. Run by crates/synod-cli/tests/zookeeper.rs.

    python kazoo_sessions.py expiry HOSTS
        A child process holds an ephemeral through a session of 4000 ms
        (ZooKeeper's least: 2 ticks) and is then frozen (SIGSTOP): it stops
        pinging without closing its session. Another client must see the
        ephemeral go when the session expires, and the child, thawed, must
        learn its session is lost.

    python kazoo_sessions.py orphan FIRST HOSTS
        As expiry, but the frozen holder is connected to FIRST only, prints
        `FROZEN` and reads a line from stdin: the test SIGKILLs FIRST
        meanwhile. The session must still expire: the other nodes delete
        the ephemeral.

    python kazoo_sessions.py failover FIRST HOSTS
        Connects to FIRST (tried first: hosts in the given order), creates an
        ephemeral and a DataWatch, prints `CONNECTED HOST:PORT`, then reads a
        line from stdin: the test SIGKILLs that node meanwhile. The client
        must reconnect to another node with the same session: its ephemeral
        stays, its DataWatch sees a change made after the kill.

Prints `ok: NAME` on success; `FAIL: NAME: why` and exit 1 on failure.
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

from kazoo_common import (
    Failed,
    check,
    check_eq,
    client,
    fresh,
    require_kazoo,
    run_checks,
    say,
    wait_until,
    watchdog,
)

require_kazoo()

from kazoo.protocol.states import EventType, KazooState  # noqa: E402


def lines_of(stream):
    """A queue filled with the stream's lines by a thread (None at EOF)."""
    q = queue.Queue()

    def pump():
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def next_line(q, what, timeout):
    try:
        line = q.get(timeout=timeout)
    except queue.Empty:
        raise Failed(f"{what}: no line within {timeout}s")
    if line is None:
        raise Failed(f"{what}: the stream ended")
    return line


def hold(hosts, path):
    """The child of `expiry`: holds `path` as an ephemeral and reports its
    session's states on stdout."""
    c = client(hosts, timeout=4.0)
    c.add_listener(lambda state: say(f"STATE {state}"))
    c.create(path, b"held", ephemeral=True, makepath=True)
    say(f"HELD {c.client_id[0]}")
    # Until the parent closes stdin.
    sys.stdin.read()
    c.stop()
    c.close()


def expiry(hosts):
    path = "/sessions/expiry/held"
    admin = client(hosts)
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "hold", hosts, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        out = lines_of(child.stdout)
        line = next_line(out, "the holder's HELD line", 30)
        check(line.startswith("HELD "), f"holder said {line!r}")
        session = int(line.split()[1])
        stat = fresh(admin).exists(path)
        check(stat is not None, "the holder's ephemeral is missing")
        check_eq(stat.ephemeralOwner, session, "the ephemeral's owner")
        check_eq(stat.owner_session_id, session, "owner session id")
        gone = threading.Event()
        events = []

        def on_change(event):
            events.append(event)
            gone.set()

        check(admin.exists(path, watch=on_change) is not None, "ephemeral vanished early")
        os.kill(child.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        check(gone.wait(30), "the ephemeral of a silent 4 s session still exists 30 s later")
        after = time.monotonic() - frozen
        check_eq([(e.type, e.path) for e in events], [(EventType.DELETED, path)], "watch events")
        check(admin.exists(path) is None, "the ephemeral exists after its deletion event")
        # The client pings every 4/3 s, so the last ping was at most that
        # long before the freeze: the session may not end much sooner.
        check(after >= 2.0, f"the session expired {after:.1f}s after the client went silent (timeout 4 s)")
        os.kill(child.pid, signal.SIGCONT)
        while True:
            line = next_line(out, "the thawed holder's session state", 30)
            if line == f"STATE {KazooState.LOST}":
                break
            check(line.startswith("STATE "), f"holder said {line!r}")
        say(f"info: the ephemeral went {after:.1f}s after the freeze")
    finally:
        try:
            os.kill(child.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        child.kill()
        child.wait()
        admin.stop()
        admin.close()


def orphan(first, hosts):
    """A session whose node dies with its client: the holder knows only
    FIRST and is frozen; the test SIGKILLs FIRST. The cluster must still
    expire the session and delete its ephemeral."""
    others = ",".join(h for h in hosts.split(",") if h != first)
    path = "/sessions/orphan/held"
    admin = client(others)
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "hold", first, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        out = lines_of(child.stdout)
        line = next_line(out, "the holder's HELD line", 30)
        check(line.startswith("HELD "), f"holder said {line!r}")
        session = int(line.split()[1])
        gone = threading.Event()
        stat = fresh(admin).exists(path, watch=lambda event: gone.set())
        check(stat is not None, "the holder's ephemeral is missing")
        check_eq(stat.ephemeralOwner, session, "the ephemeral's owner")
        os.kill(child.pid, signal.SIGSTOP)
        say("FROZEN")
        line = sys.stdin.readline().strip()
        check_eq(line, "killed", "the test's word")
        killed = time.monotonic()
        check(gone.wait(60), "the ephemeral of a session whose node was killed still exists 60 s later")
        check(admin.exists(path) is None, "the ephemeral exists after its deletion event")
        say(f"info: the ephemeral went {time.monotonic() - killed:.1f}s after the kill")
    finally:
        child.kill()
        child.wait()
        admin.stop()
        admin.close()


def failover(first, hosts):
    others = ",".join(h for h in hosts.split(",") if h != first)
    ordered = ",".join([first] + others.split(","))
    eph, watched = "/sessions/failover/eph", "/sessions/failover/watched"
    states = []
    c = client(ordered, timeout=10.0, randomize=False)
    c.add_listener(lambda state: states.append(state))
    try:
        c.create(eph, b"mine", ephemeral=True, makepath=True)
        c.ensure_path(watched)
        c.set(watched, b"before")
        session = c.client_id[0]
        # kazoo drops its one-shot watches when a connection breaks (it
        # fires them with an event of type NONE); its DataWatch recipe sets
        # them again once reconnected.
        seen = []
        c.DataWatch(watched, func=lambda data, stat: seen.append(data))
        wait_until(lambda: seen == [b"before"], "the DataWatch's first call")
        peer = "%s:%d" % c._connection._socket.getpeername()[:2]
        check_eq(peer, first, "the node the client connected to")
        say(f"CONNECTED {peer}")
        line = sys.stdin.readline().strip()
        check_eq(line, "killed", "the test's word")
        wait_until(
            lambda: KazooState.SUSPENDED in states and states[-1] == KazooState.CONNECTED,
            "reconnected after its node was killed",
            timeout=30,
        )
        check(KazooState.LOST not in states, f"the session was lost: {states}")
        check_eq(c.client_id[0], session, "session id after the reconnection")
        now = "%s:%d" % c._connection._socket.getpeername()[:2]
        check(now != first, f"still connected to the killed node {first}")
        stat = c.exists(eph)
        check(stat is not None, "the ephemeral is gone after the reconnection")
        check_eq(stat.ephemeralOwner, session, "the ephemeral's owner")
        other = client(others)
        try:
            stat = fresh(other).exists(eph)
            check(stat is not None and stat.ephemeralOwner == session,
                  f"another client sees the ephemeral as {stat}")
            # The DataWatch set before the kill watches through the new node.
            other.set(watched, b"after")
            wait_until(lambda: seen[-1] == b"after", "the DataWatch sees a change after the failover")
        finally:
            other.stop()
            other.close()
        say(f"info: reconnected to {now}, states {[str(s) for s in states]}")
    finally:
        c.stop()
        c.close()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "hold":
        hold(sys.argv[2], sys.argv[3])
    elif mode == "expiry":
        watchdog(120)
        run_checks([("expiry", lambda: expiry(sys.argv[2]))], [])
    elif mode == "orphan":
        watchdog(120)
        run_checks([("orphan", lambda: orphan(sys.argv[2], sys.argv[3]))], [])
    elif mode == "failover":
        watchdog(120)
        run_checks([("failover", lambda: failover(sys.argv[2], sys.argv[3]))], [])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
