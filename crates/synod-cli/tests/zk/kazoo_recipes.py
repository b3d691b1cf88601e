"""kazoo's recipes against a synod cluster's ZooKeeper front end.

    python kazoo_recipes.py HOST:PORT,HOST:PORT,... [CHECK ...]

Runs every check (or the named ones) in order, printing `ok: NAME` for
each; the first failure prints `FAIL: NAME: why` and exits 1. Each check
works under its own path, so a rerun against the same cluster needs a
fresh cluster. Run by crates/synod-cli/tests/zookeeper.rs.
"""

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
    wait_until,
    watchdog,
)

require_kazoo()

from kazoo.exceptions import (  # noqa: E402
    BadVersionError,
    NoNodeError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.protocol.states import EventType  # noqa: E402
from kazoo.recipe.cache import TreeCache, TreeEvent  # noqa: E402

HOSTS = sys.argv[1]
ADMIN = None


def threads(targets, what, timeout=60.0):
    """Runs each callable on its own thread; fails with the first error
    any of them raised, or if one does not finish in time."""
    errors = []

    def wrap(f):
        def run():
            try:
                f()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        return run

    ts = [threading.Thread(target=wrap(f), daemon=True) for f in targets]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            raise Failed(f"{what}: a thread did not finish within {timeout}s")
    if errors:
        e = errors[0]
        raise e if isinstance(e, Failed) else Failed(f"{what}: {e!r}")


def own_client(**kw):
    return client(HOSTS, **kw)


def closing(c):
    c.stop()
    c.close()


# --- Lock: mutual exclusion and no lost update -----------------------------

def lock():
    path, counter = "/recipes/lock", "/recipes/lock-counter"
    ADMIN.create(counter, b"0", makepath=True)
    workers, rounds = 4, 5
    mu = threading.Lock()
    state = {"holders": 0, "max": 0}

    def worker(i):
        def run():
            c = own_client()
            try:
                lk = c.Lock(path, f"w{i}")
                for _ in range(rounds):
                    check(lk.acquire(timeout=30), f"w{i}: no lock within 30s")
                    try:
                        with mu:
                            state["holders"] += 1
                            state["max"] = max(state["max"], state["holders"])
                        # Read, pause, write without a version: only the
                        # lock keeps increments from being lost.
                        data, _ = c.get(counter)
                        time.sleep(0.01)
                        c.set(counter, str(int(data) + 1).encode())
                        with mu:
                            state["holders"] -= 1
                    finally:
                        lk.release()
                check(not lk.is_acquired, f"w{i}: still holds after release")
            finally:
                closing(c)

        return run

    threads([worker(i) for i in range(workers)], "lock workers", timeout=120)
    check_eq(state["max"], 1, "most lock holders at once")
    data, _ = fresh(ADMIN).get(counter)
    check_eq(int(data), workers * rounds, "counter incremented under the lock")
    check_eq(fresh(ADMIN).get_children(path), [], "lock nodes left behind")


# --- Election: one leader at a time, each contender leads once ---------------

def election():
    path = "/recipes/election"
    mu = threading.Lock()
    state = {"current": None, "led": [], "overlaps": [], "first": []}
    observer = ADMIN.Election(path)
    clients = [own_client() for _ in range(3)]

    def lead(ident):
        with mu:
            if state["current"] is not None:
                state["overlaps"].append((state["current"], ident))
            state["current"] = ident
            state["led"].append(ident)
        # The leader is the first contender the observer sees.
        fresh(ADMIN)
        state["first"].append((ident, observer.contenders()[:1]))
        time.sleep(0.3)
        with mu:
            state["current"] = None

    try:
        elections = [c.Election(path, f"e{i}") for i, c in enumerate(clients)]
        threads(
            [lambda e=e, i=i: e.run(lead, f"e{i}") for i, e in enumerate(elections)],
            "election contenders",
        )
    finally:
        for c in clients:
            closing(c)
    check_eq(sorted(state["led"]), ["e0", "e1", "e2"], "contenders that led")
    check_eq(state["overlaps"], [], "two leaders at once")
    for ident, first in state["first"]:
        check_eq(first, [ident], f"first contender while {ident} leads")
    fresh(ADMIN)
    check_eq(observer.contenders(), [], "contenders after all left")


# --- Barrier and DoubleBarrier ---------------------------------------------

def barrier():
    path = "/recipes/barrier"
    b = ADMIN.Barrier(path)
    check(b.wait(timeout=5), "waiting on a barrier that does not exist blocks")
    b.create()
    c = own_client()
    try:
        passed = []
        t = threading.Thread(
            target=lambda: passed.append(fresh(c).Barrier(path).wait(timeout=30)), daemon=True
        )
        t.start()
        time.sleep(0.5)
        check_eq(passed, [], "a waiter passed a standing barrier")
        check(b.remove(), "removing the barrier")
        t.join(30)
        check_eq(passed, [True], "the waiter passed once the barrier was removed")
    finally:
        closing(c)


def double_barrier():
    path, n = "/recipes/double-barrier", 3
    mu = threading.Lock()
    state = {"arrived": 0, "entered": [], "leaving": 0, "left": []}
    clients = [own_client() for _ in range(n)]

    def member(i, c):
        def run():
            db = c.DoubleBarrier(path, n, identifier=f"m{i}")
            time.sleep(0.3 * i)  # arrive one after another
            with mu:
                state["arrived"] += 1
            db.enter()
            with mu:
                state["entered"].append(state["arrived"])
            time.sleep(0.3 * (n - i))  # leave in the other order
            with mu:
                state["leaving"] += 1
            db.leave()
            with mu:
                state["left"].append(state["leaving"])

        return run

    try:
        threads([member(i, c) for i, c in enumerate(clients)], "double barrier")
    finally:
        for c in clients:
            closing(c)
    check_eq(state["entered"], [n] * n, "members that had arrived when each entered")
    check_eq(state["left"], [n] * n, "members leaving when each left")


# --- Counter -----------------------------------------------------------------

def counter():
    path = "/recipes/counter"
    clients = [own_client() for _ in range(3)]

    def bump(c):
        def run():
            cnt = c.Counter(path)
            for _ in range(10):
                cnt += 1

        return run

    try:
        threads([bump(c) for c in clients], "counter increments")
    finally:
        for c in clients:
            closing(c)
    cnt = fresh(ADMIN).Counter(path)
    check_eq(cnt.value, 30, "counter after 3 x 10 concurrent increments")
    cnt -= 5
    check_eq((cnt.pre_value, cnt.post_value, cnt.value), (30, 25, 25), "counter -= 5")


# --- Queue and LockingQueue ----------------------------------------------------

def queue():
    path = "/recipes/queue"
    q = ADMIN.Queue(path)
    for i in range(5):
        q.put(f"i{i}".encode())
    q.put(b"urgent", priority=1)
    check_eq(len(q), 6, "queue length")
    c = own_client()
    try:
        q2 = c.Queue(path)
        fresh(c)
        got = [q2.get() for _ in range(7)]
    finally:
        closing(c)
    check_eq(
        got,
        [b"urgent", b"i0", b"i1", b"i2", b"i3", b"i4", None],
        "items taken (priority first, then FIFO, then empty)",
    )


def locking_queue():
    path = "/recipes/locking-queue"
    c1, c2 = own_client(), own_client()
    try:
        q1, q2 = c1.LockingQueue(path), c2.LockingQueue(path)
        q1.put_all([b"a", b"b"])
        q1.put(b"c", priority=200)
        check_eq(len(q1), 3, "locking queue length")
        check_eq(q1.get(timeout=5), b"a", "first client's item")
        check(q1.holds_lock(), "the first client holds its item")
        check_eq(q2.get(timeout=5), b"b", "second client skips the locked item")
        check(q2.release(), "second client puts its item back")
        check(q1.consume(), "first client consumes its item")
        check_eq(q2.get(timeout=5), b"b", "released item taken again")
        check(q2.consume(), "second client consumes")
        # A holder whose session ends gives its item back.
        check_eq(q1.get(timeout=5), b"c", "last item")
        closing(c1)
        check_eq(q2.get(timeout=15), b"c", "item of a closed session taken over")
        check(q2.consume(), "consume the taken-over item")
        check_eq(q2.get(timeout=0.5), None, "empty queue")
        check_eq(len(q2), 0, "queue length at the end")
    finally:
        closing(c1)
        closing(c2)


# --- Party ---------------------------------------------------------------------

def party():
    path = "/recipes/party"
    c1, c2 = own_client(), own_client()
    try:
        p1, p2 = c1.Party(path, "alice"), c2.Party(path, "bob")
        p1.join()
        p2.join()
        fresh(c1)
        check_eq(sorted(p1), ["alice", "bob"], "party members")
        check_eq(len(fresh(ADMIN).Party(path)), 2, "party size")
        check_eq(sorted(fresh(ADMIN).ShallowParty(path + "-shallow")), [], "empty shallow party")
        s = c1.ShallowParty(path + "-shallow", "carol")
        s.join()
        check_eq(list(fresh(ADMIN).ShallowParty(path + "-shallow")), ["carol"], "shallow party")
        p2.leave()
        check_eq(list(fresh(ADMIN).Party(path)), ["alice"], "party after bob left")
        closing(c1)
        check_eq(list(fresh(ADMIN).Party(path)), [], "party after alice's session closed")
        check_eq(list(fresh(ADMIN).ShallowParty(path + "-shallow")), [], "shallow party after close")
    finally:
        closing(c1)
        closing(c2)


# --- Semaphore -----------------------------------------------------------------

def semaphore():
    path = "/recipes/semaphore"
    clients = [own_client() for _ in range(3)]
    try:
        a, b, c = (cl.Semaphore(path, f"s{i}", max_leases=2) for i, cl in enumerate(clients))
        check(a.acquire(timeout=10), "first lease")
        check(b.acquire(timeout=10), "second lease")
        check(not c.acquire(blocking=False), "a third lease of two granted")
        check_eq(sorted(fresh(ADMIN).Semaphore(path, max_leases=2).lease_holders()), ["s0", "s1"], "lease holders")
        a.release()
        check(c.acquire(timeout=10), "third client gets the freed lease")
        check_eq(sorted(fresh(ADMIN).Semaphore(path, max_leases=2).lease_holders()), ["s1", "s2"], "lease holders")
        b.release()
        c.release()
    finally:
        for cl in clients:
            closing(cl)

    # Under contention: never more than max_leases holders.
    mu = threading.Lock()
    state = {"holders": 0, "max": 0, "done": 0}
    clients = [own_client() for _ in range(5)]

    def worker(i, cl):
        def run():
            sem = cl.Semaphore(path + "-busy", f"w{i}", max_leases=2)
            for _ in range(3):
                check(sem.acquire(timeout=30), f"w{i}: no lease within 30s")
                with mu:
                    state["holders"] += 1
                    state["max"] = max(state["max"], state["holders"])
                time.sleep(0.05)
                with mu:
                    state["holders"] -= 1
                    state["done"] += 1
                sem.release()

        return run

    try:
        threads([worker(i, cl) for i, cl in enumerate(clients)], "semaphore workers", 120)
    finally:
        for cl in clients:
            closing(cl)
    check(state["max"] <= 2, f"{state['max']} lease holders at once, at most 2 allowed")
    check_eq(state["done"], 15, "leases taken")


# --- DataWatch and ChildrenWatch -------------------------------------------------

def data_watch():
    path = "/recipes/data-watch"
    ADMIN.create(path, b"v0", makepath=True)
    c = own_client()
    seen = []
    try:
        @c.DataWatch(path)
        def watch(data, stat, event):
            seen.append((data, stat.version if stat else None, event.type if event else None))

        wait_until(lambda: len(seen) == 1, "the DataWatch's first call")
        for i in range(1, 11):
            ADMIN.set(path, f"v{i}".encode())
            wait_until(lambda: seen[-1][0] == f"v{i}".encode(), f"DataWatch sees v{i}")
        expected = [(b"v0", 0, None)] + [
            (f"v{i}".encode(), i, EventType.CHANGED) for i in range(1, 11)
        ]
        check_eq(seen, expected, "DataWatch calls, one per change, in order")
        ADMIN.delete(path)
        wait_until(lambda: seen[-1][0] is None, "DataWatch sees the deletion")
        check_eq(seen[-1], (None, None, EventType.DELETED), "the deletion's call")
        ADMIN.create(path, b"again")
        wait_until(lambda: seen[-1][0] == b"again", "DataWatch sees the node created again")
        check_eq(seen[-1], (b"again", 0, EventType.CREATED), "the creation's call")

        # Bursts: a one-shot watch may merge changes, never reorder or
        # lose them. (An event sent ahead of the reply that set its watch
        # was dropped by kazoo, which registers the watcher when the reply
        # arrives, and the watch was lost: about one burst in ten stuck.)
        base = ADMIN.get(path)[1].version
        for burst in range(8):
            del seen[:]
            for i in range(1, 31):
                ADMIN.set(path, f"b{base + 30 * burst + i}".encode())
            last = f"b{base + 30 * burst + 30}".encode()
            wait_until(lambda: seen and seen[-1][0] == last, f"DataWatch sees the last of burst {burst}")
            versions = [v for _, v, _ in seen]
            check(versions == sorted(set(versions)), f"versions seen out of order: {versions}")
            for data, version, _ in seen:
                check_eq(data, f"b{version}".encode(), "data seen with its version")
    finally:
        closing(c)


def children_watch():
    path = "/recipes/children-watch"
    ADMIN.ensure_path(path)
    c = own_client()
    seen = []
    try:
        c.ChildrenWatch(path, func=lambda children: seen.append(sorted(children)))
        wait_until(lambda: seen == [[]], "the ChildrenWatch's first call")
        expected = [[]]
        names = [f"c{i}" for i in range(5)]
        for i, name in enumerate(names):
            ADMIN.create(f"{path}/{name}")
            expected.append(names[: i + 1])
            wait_until(lambda: seen[-1] == expected[-1], f"ChildrenWatch sees {name} created")
        for i, name in enumerate(names):
            ADMIN.delete(f"{path}/{name}")
            expected.append(names[i + 1:])
            wait_until(lambda: seen[-1] == expected[-1], f"ChildrenWatch sees {name} deleted")
        check_eq(seen, expected, "ChildrenWatch calls, one per change, in order")
    finally:
        closing(c)


# --- TreeCache -------------------------------------------------------------------

def tree_cache():
    root = "/recipes/tree"
    ADMIN.create(root + "/a/x", b"ax", makepath=True)
    ADMIN.create(root + "/b", b"b")
    c = own_client()
    events = []
    cache = TreeCache(c, root)
    cache.listen(lambda e: events.append(e))
    cache.start()

    def from_cache(p=root):
        node = cache.get_data(p)
        if node is None:
            return None
        out = {p: node.data}
        for child in sorted(cache.get_children(p) or []):
            sub = from_cache(f"{p}/{child}")
            if sub is not None:
                out.update(sub)
        return out

    def from_zk(p=root):
        data, _ = ADMIN.get(p)
        out = {p: data}
        for child in sorted(ADMIN.get_children(p)):
            out.update(from_zk(f"{p}/{child}"))
        return out

    def kinds(kind):
        return [e.event_data.path for e in events if e.event_type == kind and e.event_data]

    try:
        wait_until(
            lambda: any(e.event_type == TreeEvent.INITIALIZED for e in events),
            "TreeCache initialized",
        )
        check_eq(from_cache(), from_zk(), "TreeCache after start")
        ADMIN.create(root + "/a/y/z", b"ayz", makepath=True)
        ADMIN.set(root + "/b", b"b2")
        ADMIN.delete(root + "/a/x")
        ADMIN.create(root + "/c", b"eph", ephemeral=True)
        t = ADMIN.transaction()
        t.create(root + "/d", b"d")
        t.set_data(root + "/c", b"eph2")
        t.commit()
        wait_until(lambda: from_cache() == from_zk(), "TreeCache converges to the tree")
        check_eq(
            from_cache(),
            {
                root: b"",
                root + "/a": b"",
                root + "/a/y": b"",
                root + "/a/y/z": b"ayz",
                root + "/b": b"b2",
                root + "/c": b"eph2",
                root + "/d": b"d",
            },
            "TreeCache contents",
        )
        for p in [root + "/a/y", root + "/a/y/z", root + "/c", root + "/d"]:
            check(p in kinds(TreeEvent.NODE_ADDED), f"no NODE_ADDED for {p}: {kinds(TreeEvent.NODE_ADDED)}")
        check(root + "/b" in kinds(TreeEvent.NODE_UPDATED), "no NODE_UPDATED for /b")
        check(root + "/a/x" in kinds(TreeEvent.NODE_REMOVED), "no NODE_REMOVED for /a/x")
        ADMIN.delete(root + "/a", recursive=True)
        wait_until(lambda: from_cache() == from_zk(), "TreeCache converges after a recursive delete")
    finally:
        cache.close()
        closing(c)


# --- Transactions (multi) --------------------------------------------------------

def transactions():
    base = "/recipes/txn"
    ADMIN.create(base + "/a", b"1", makepath=True)
    t = ADMIN.transaction()
    t.create(base + "/b", b"b")
    t.check(base + "/a", 5)
    t.set_data(base + "/a", b"2")
    results = t.commit()
    check_eq(
        [type(r) for r in results],
        [RolledBackError, BadVersionError, RuntimeInconsistency],
        f"results of a failed transaction ({results!r})",
    )
    check(ADMIN.exists(base + "/b") is None, "a failed transaction created a node")
    check_eq(ADMIN.get(base + "/a")[0], b"1", "data after a failed transaction")

    t = ADMIN.transaction()
    t.create(base + "/b", b"b")
    t.create(base + "/seq-", b"s", sequence=True)
    t.check(base + "/a", 0)
    t.set_data(base + "/a", b"2")
    t.delete(base + "/b")
    results = t.commit()
    check_eq(len(results), 5, f"results of a transaction ({results!r})")
    check_eq(results[0], base + "/b", "create result")
    check(results[1].startswith(base + "/seq-") and len(results[1]) == len(base + "/seq-") + 10,
          f"sequential create result {results[1]!r}")
    check_eq(results[2], True, "check result")
    check_eq(results[3].version, 1, "set_data result's version")
    check_eq(results[4], True, "delete result")
    check_eq(ADMIN.get(base + "/a")[0], b"2", "data after the transaction")
    check(ADMIN.exists(base + "/b") is None, "node created and deleted in one transaction")
    check_eq(ADMIN.get_children(base), ["a", results[1].rsplit("/", 1)[1]], "children")
    try:
        ADMIN.get(base + "/b")
        raise Failed("get of a deleted node succeeded")
    except NoNodeError:
        pass


CHECKS = [
    ("lock", lock),
    ("election", election),
    ("barrier", barrier),
    ("double_barrier", double_barrier),
    ("counter", counter),
    ("queue", queue),
    ("locking_queue", locking_queue),
    ("party", party),
    ("semaphore", semaphore),
    ("data_watch", data_watch),
    ("children_watch", children_watch),
    ("tree_cache", tree_cache),
    ("transactions", transactions),
]

if __name__ == "__main__":
    watchdog(300)
    ADMIN = client(HOSTS)
    ADMIN.ensure_path("/recipes")
    run_checks(CHECKS, sys.argv[2:])
    closing(ADMIN)
