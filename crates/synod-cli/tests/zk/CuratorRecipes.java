// Apache Curator, unchanged, against a synod cluster: the framework's
// operations (foreground and pipelined background ones), transactions, and
// the recipes Java services build on. Run by crates/synod-cli/tests/zookeeper.rs
// as a single-file program:
//
//   java -cp <Debian's curator, zookeeper and guava jars> CuratorRecipes.java HOSTS
//
// Prints "ok <check>" per check and "all ok" at the end; any failure throws
// (non-zero exit, with the reason).

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.api.transaction.CuratorOp;
import org.apache.curator.framework.api.transaction.CuratorTransactionResult;
import org.apache.curator.framework.recipes.atomic.AtomicValue;
import org.apache.curator.framework.recipes.atomic.DistributedAtomicLong;
import org.apache.curator.framework.recipes.cache.CuratorCache;
import org.apache.curator.framework.recipes.cache.CuratorCacheListener;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.retry.RetryNTimes;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.data.Stat;

public class CuratorRecipes {
    static String hosts;

    static CuratorFramework connect() throws Exception {
        CuratorFramework c = CuratorFrameworkFactory.builder()
                .connectString(hosts)
                .sessionTimeoutMs(15000)
                .connectionTimeoutMs(15000)
                .retryPolicy(new ExponentialBackoffRetry(100, 10))
                .build();
        c.start();
        if (!c.blockUntilConnected(30, TimeUnit.SECONDS)) {
            throw new AssertionError("no session through " + hosts);
        }
        return c;
    }

    static void check(boolean cond, String what) {
        if (!cond) {
            throw new AssertionError(what);
        }
    }

    static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String s(byte[] b) {
        return new String(b, StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        hosts = args[0];
        CuratorFramework c = connect();
        framework(c);
        background(c);
        transactions(c);
        mutex();
        leaderLatch();
        cache(c);
        atomicLong();
        c.close();
        System.out.println("all ok");
        System.exit(0);
    }

    static void framework(CuratorFramework c) throws Exception {
        c.create().creatingParentsIfNeeded().forPath("/curator/a/b", b("v1"));
        check(s(c.getData().forPath("/curator/a/b")).equals("v1"), "getData after create");
        Stat st = c.checkExists().forPath("/curator/a/b");
        check(st != null && st.getVersion() == 0, "checkExists: version 0");
        c.setData().withVersion(0).forPath("/curator/a/b", b("v2"));
        try {
            c.setData().withVersion(0).forPath("/curator/a/b", b("v3"));
            throw new AssertionError("a stale version must fail");
        } catch (KeeperException.BadVersionException expected) {
            // as ZooKeeper
        }
        check(s(c.getData().forPath("/curator/a/b")).equals("v2"), "the failed set changed nothing");
        String seq = c.create().withMode(CreateMode.EPHEMERAL_SEQUENTIAL).forPath("/curator/a/e-");
        check(seq.matches("/curator/a/e-\\d{10}"), "sequential name " + seq);
        c.delete().deletingChildrenIfNeeded().forPath("/curator/a");
        check(c.checkExists().forPath("/curator/a") == null, "deletingChildrenIfNeeded");
        System.out.println("ok framework");
    }

    /** Requests in flight together on one connection, as Curator's background ops send them. */
    static void background(CuratorFramework c) throws Exception {
        int n = 500;
        c.create().forPath("/curator/bg");
        CountDownLatch created = new CountDownLatch(n);
        AtomicInteger failed = new AtomicInteger();
        for (int i = 0; i < n; i++) {
            c.create().inBackground((client, event) -> {
                if (event.getResultCode() != 0) {
                    failed.incrementAndGet();
                }
                created.countDown();
            }).forPath("/curator/bg/n" + i, b("d" + i));
        }
        check(created.await(60, TimeUnit.SECONDS), "every background create answered");
        check(failed.get() == 0, failed.get() + " background creates failed");
        CountDownLatch read = new CountDownLatch(n);
        AtomicInteger wrong = new AtomicInteger();
        for (int i = 0; i < n; i++) {
            String want = "d" + i;
            c.getData().inBackground((client, event) -> {
                if (event.getResultCode() != 0 || !s(event.getData()).equals(want)) {
                    wrong.incrementAndGet();
                }
                read.countDown();
            }).forPath("/curator/bg/n" + i);
        }
        check(read.await(60, TimeUnit.SECONDS), "every background read answered");
        check(wrong.get() == 0, wrong.get() + " background reads were wrong");
        check(c.getChildren().forPath("/curator/bg").size() == n, "children after background creates");
        System.out.println("ok background");
    }

    static void transactions(CuratorFramework c) throws Exception {
        CuratorOp create = c.transactionOp().create().forPath("/curator/tx", b("t"));
        CuratorOp child = c.transactionOp().create().forPath("/curator/tx/c", b("c"));
        CuratorOp set = c.transactionOp().setData().forPath("/curator/tx", b("t2"));
        Collection<CuratorTransactionResult> results = c.transaction().forOperations(create, child, set);
        check(results.size() == 3, "three results");
        check(s(c.getData().forPath("/curator/tx")).equals("t2"), "the transaction applied");
        CuratorOp ok = c.transactionOp().create().forPath("/curator/tx/never", b("x"));
        CuratorOp bad = c.transactionOp().check().withVersion(7).forPath("/curator/tx");
        try {
            c.transaction().forOperations(ok, bad);
            throw new AssertionError("a failed check must fail the transaction");
        } catch (KeeperException.BadVersionException expected) {
            // as ZooKeeper
        }
        check(c.checkExists().forPath("/curator/tx/never") == null, "a failed transaction changes nothing");
        System.out.println("ok transactions");
    }

    /** Four clients increment one counter under InterProcessMutex: no lost update, never two holders. */
    static void mutex() throws Exception {
        int clients = 4;
        int rounds = 20;
        ExecutorService pool = Executors.newFixedThreadPool(clients);
        AtomicInteger holders = new AtomicInteger();
        AtomicInteger overlap = new AtomicInteger();
        CuratorFramework setup = connect();
        setup.create().creatingParentsIfNeeded().forPath("/curator/counter", b("0"));
        List<Future<?>> done = new ArrayList<>();
        for (int t = 0; t < clients; t++) {
            done.add(pool.submit(() -> {
                CuratorFramework c = connect();
                InterProcessMutex lock = new InterProcessMutex(c, "/curator/locks/counter");
                for (int i = 0; i < rounds; i++) {
                    check(lock.acquire(60, TimeUnit.SECONDS), "acquire the lock");
                    try {
                        if (holders.incrementAndGet() != 1) {
                            overlap.incrementAndGet();
                        }
                        int v = Integer.parseInt(s(c.getData().forPath("/curator/counter")));
                        c.setData().forPath("/curator/counter", b(Integer.toString(v + 1)));
                        holders.decrementAndGet();
                    } finally {
                        lock.release();
                    }
                }
                c.close();
                return null;
            }));
        }
        for (Future<?> f : done) {
            f.get(180, TimeUnit.SECONDS);
        }
        pool.shutdown();
        check(overlap.get() == 0, "two holders of the mutex at once");
        String total = s(setup.getData().forPath("/curator/counter"));
        check(total.equals(Integer.toString(clients * rounds)), "counter is " + total);
        setup.close();
        System.out.println("ok mutex");
    }

    /** Three LeaderLatches: exactly one leader; when it closes, another takes over. */
    static void leaderLatch() throws Exception {
        List<CuratorFramework> clients = new ArrayList<>();
        List<LeaderLatch> latches = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            CuratorFramework c = connect();
            LeaderLatch l = new LeaderLatch(c, "/curator/leader", "p" + i);
            l.start();
            clients.add(c);
            latches.add(l);
        }
        LeaderLatch leader = null;
        long deadline = System.currentTimeMillis() + 30000;
        while (leader == null && System.currentTimeMillis() < deadline) {
            int count = 0;
            for (LeaderLatch l : latches) {
                if (l.hasLeadership()) {
                    count++;
                    leader = l;
                }
            }
            check(count <= 1, count + " leaders at once");
            Thread.sleep(50);
        }
        check(leader != null, "a leader within 30 s");
        String first = leader.getId();
        check(latches.get(0).getLeader().getId().equals(first), "every latch names the leader");
        leader.close();
        latches.remove(leader);
        LeaderLatch next = null;
        deadline = System.currentTimeMillis() + 30000;
        while (next == null && System.currentTimeMillis() < deadline) {
            for (LeaderLatch l : latches) {
                if (l.hasLeadership()) {
                    next = l;
                }
            }
            Thread.sleep(50);
        }
        check(next != null && !next.getId().equals(first), "another leader after the first closed");
        for (LeaderLatch l : latches) {
            l.close();
        }
        for (CuratorFramework c : clients) {
            c.close();
        }
        System.out.println("ok leader latch");
    }

    /** CuratorCache (persistent recursive watches): every change, in order. */
    static void cache(CuratorFramework c) throws Exception {
        c.create().forPath("/curator/cache", b("root"));
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        CountDownLatch primed = new CountDownLatch(1);
        CuratorCache cache = CuratorCache.build(c, "/curator/cache");
        cache.listenable().addListener(CuratorCacheListener.builder()
                .forCreates(n -> events.add("create " + n.getPath() + " " + s(n.getData())))
                .forChanges((old, n) -> events.add("change " + n.getPath() + " " + s(n.getData())))
                .forDeletes(n -> events.add("delete " + n.getPath()))
                .forInitialized(primed::countDown)
                .build());
        cache.start();
        check(primed.await(30, TimeUnit.SECONDS), "the cache primed");
        check("create /curator/cache root".equals(events.poll(10, TimeUnit.SECONDS)), "the root is seen");
        // The cache reads a node's data when its event arrives (as against
        // ZooKeeper), so each change waits for the event of the one before.
        expect(events, "create /curator/cache/x 1", () -> c.create().forPath("/curator/cache/x", b("1")));
        expect(events, "change /curator/cache/x 2", () -> c.setData().forPath("/curator/cache/x", b("2")));
        expect(events, "create /curator/cache/x/y 3", () -> c.create().forPath("/curator/cache/x/y", b("3")));
        expect(events, "delete /curator/cache/x/y", () -> c.delete().forPath("/curator/cache/x/y"));
        check(cache.get("/curator/cache/x").map(n -> s(n.getData())).orElse("").equals("2"), "the cache holds x = 2");
        cache.close();
        System.out.println("ok cache");
    }

    interface Change {
        Object run() throws Exception;
    }

    static void expect(BlockingQueue<String> events, String want, Change change) throws Exception {
        change.run();
        String got = events.poll(30, TimeUnit.SECONDS);
        check(want.equals(got), "cache event: want '" + want + "', got '" + got + "'");
    }

    /** DistributedAtomicLong from four clients: every increment counted once. */
    static void atomicLong() throws Exception {
        int clients = 4;
        int rounds = 25;
        ExecutorService pool = Executors.newFixedThreadPool(clients);
        List<Future<Integer>> done = new ArrayList<>();
        for (int t = 0; t < clients; t++) {
            done.add(pool.submit(() -> {
                CuratorFramework c = connect();
                DistributedAtomicLong n = new DistributedAtomicLong(c, "/curator/atomic", new RetryNTimes(1000, 5));
                int ok = 0;
                for (int i = 0; i < rounds; i++) {
                    AtomicValue<Long> v = n.increment();
                    if (v.succeeded()) {
                        ok++;
                    }
                }
                c.close();
                return ok;
            }));
        }
        int succeeded = 0;
        for (Future<Integer> f : done) {
            succeeded += f.get(180, TimeUnit.SECONDS);
        }
        pool.shutdown();
        CuratorFramework c = connect();
        long value = new DistributedAtomicLong(c, "/curator/atomic", new RetryNTimes(10, 10)).get().postValue();
        c.close();
        check(succeeded == clients * rounds, succeeded + " increments succeeded");
        check(value == clients * rounds, "the counter is " + value);
        System.out.println("ok atomic long");
    }
}
