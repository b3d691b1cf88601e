"""What the kazoo scripts of crates/synod-cli/tests/zookeeper.rs share.

Every check raises `Failed` with a message naming what was expected and
what happened; `main` turns it into a non-zero exit, and a watchdog ends a
script that hangs.
"""

import os
import sys
import threading
import time
import traceback


def require_kazoo():
    """Imports kazoo or exits with how to install it."""
    try:
        import kazoo  # noqa: F401
    except ImportError as e:
        print(
            f"FAIL: cannot import kazoo with {sys.executable} ({e}).\n"
            "Install it in a venv and point the tests at it (from the workspace root):\n"
            "  python3 -m venv target/kazoo-venv && "
            "target/kazoo-venv/bin/pip install kazoo==2.11.0\n"
            "  export SYNOD_KAZOO_PYTHON=$PWD/target/kazoo-venv/bin/python\n"
            "(.ci/run does this.)",
            file=sys.stderr,
        )
        sys.exit(2)


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def check_eq(actual, expected, what):
    if actual != expected:
        raise Failed(f"{what}: expected {expected!r}, got {actual!r}")


def fresh(c):
    """`c` after a sync: its reads then show every write acknowledged to
    any client before (ZooKeeper's reads are a node's own view)."""
    c.sync("/")
    return c


def wait_until(cond, what, timeout=10.0):
    """Polls `cond` until it is true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout}s")
        time.sleep(0.02)


def say(line):
    print(line, flush=True)


def watchdog(seconds):
    """Ends the whole process if it still runs after `seconds`."""

    def fire():
        say(f"FAIL: the script did not finish within {seconds}s")
        for tid, frame in sys._current_frames().items():
            print(f"--- thread {tid}", file=sys.stderr)
            traceback.print_stack(frame, file=sys.stderr)
        sys.stderr.flush()
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def client(hosts, timeout=10.0, randomize=True, **kw):
    """A started KazooClient; every request retried on connection loss as
    kazoo's own retry policy does (no more)."""
    from kazoo.client import KazooClient
    from kazoo.retry import KazooRetry

    c = KazooClient(
        hosts=hosts,
        timeout=timeout,
        randomize_hosts=randomize,
        connection_retry=KazooRetry(max_tries=-1, max_delay=1.0),
        command_retry=KazooRetry(max_tries=10, max_delay=1.0),
        **kw,
    )
    c.start(timeout=15)
    return c


def run_checks(checks, only):
    """Runs the named checks in order; exits non-zero on the first failure."""
    names = only or [name for name, _ in checks]
    table = dict(checks)
    for name in names:
        if name not in table:
            say(f"FAIL: no check named {name!r} (have: {', '.join(table)})")
            sys.exit(2)
    for name in names:
        started = time.monotonic()
        try:
            table[name]()
        except Failed as e:
            say(f"FAIL: {name}: {e}")
            sys.exit(1)
        except Exception:
            say(f"FAIL: {name}: unexpected exception")
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
            sys.exit(1)
        say(f"ok: {name} ({time.monotonic() - started:.1f}s)")
