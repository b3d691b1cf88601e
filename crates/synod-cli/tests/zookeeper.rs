//! ZooKeeper clients against three `synod server` processes: zkCli (the
//! Java client of Debian's `zookeeper` package), kazoo and its recipes
//! (Python scripts in `tests/zk/`), the `zookeeper-client` crate, and the
//! four-letter words. What a ZooKeeper user types or calls works and
//! prints what ZooKeeper prints, also when the node a client is connected
//! to is SIGKILLed.
//!
//! Needs at run time `/usr/share/zookeeper/bin/zkCli.sh` (`SYNOD_ZKCLI`
//! names another) and a Python with kazoo (`SYNOD_KAZOO_PYTHON`, else
//! `target/kazoo-venv`, else `python3`); `.ci/run` installs both.

mod common;

use common::kazoo::{kazoo, kazoo_command};
use common::{bounded, four_letter_word, run_with_input, Cluster, ZK_SUPER_CREDENTIALS};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// A limit for one ZooKeeper request, generous for a loaded machine.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// Starts three nodes and waits until they agree on a leader and accept
/// ZooKeeper connections; returns the cluster and the leader.
async fn zk_cluster() -> (Cluster, u64) {
    let mut cluster = Cluster::start(3);
    let leader = bounded("ready", Duration::from_secs(30), cluster.wait_ready()).await;
    cluster.wait_zk_listening();
    (cluster, leader)
}

/// Every node's ZooKeeper address, as a connect string.
fn all_hosts(cluster: &Cluster) -> String {
    cluster.zk_hosts(&cluster.ids())
}

/// The running nodes' ZooKeeper addresses, as a connect string.
fn live_hosts(cluster: &Cluster) -> String {
    cluster.zk_hosts(&cluster.running())
}

// ---------------------------------------------------------------- zkCli

fn zkcli_bin() -> PathBuf {
    let bin = std::env::var_os("SYNOD_ZKCLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/zookeeper/bin/zkCli.sh"));
    assert!(
        bin.exists(),
        "{} is missing: apt-get install zookeeper (.ci/run does), or set SYNOD_ZKCLI",
        bin.display()
    );
    bin
}

/// zkCli against `hosts`, its stdout and stderr as one stream in order
/// (it prints results on stdout and "Created ..." and errors on stderr).
fn zkcli_command(hosts: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"exec "$0" -server "$1" 2>&1"#)
        .arg(zkcli_bin())
        .arg(hosts);
    cmd
}

/// Runs `script` (one command a line) in one zkCli session; returns what
/// it printed without the log and connection noise. The session is
/// closed when the script ends with `quit`; otherwise it expires later.
/// The script starts with `sync /`: ZooKeeper reads show the connected
/// node's view, and the sync makes it include what earlier sessions
/// wrote through other nodes.
fn zkcli(hosts: &str, script: &str) -> String {
    let script = format!("sync /\n{script}");
    let out = run_with_input(&mut zkcli_command(hosts), &script, Duration::from_secs(90));
    let text = String::from_utf8_lossy(&out.stdout);
    let cleaned = without_noise(&text);
    assert!(
        !cleaned.contains("Exception"),
        "zkCli failed on\n{script}\nit printed:\n{text}"
    );
    cleaned
}

/// zkCli's output less what does not depend on the server: logging, the
/// banner, connection state events.
fn without_noise(text: &str) -> String {
    let is_log = |l: &str| {
        let b = l.as_bytes();
        b.len() > 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
    };
    text.lines()
        .map(str::trim_end)
        .filter(|l| {
            !(l.is_empty()
                || is_log(l)
                || l.starts_with("SLF4J:")
                || l.starts_with("log4j:")
                || l.starts_with("WATCHER::")
                || l.starts_with("Connecting to ")
                || l.starts_with("Welcome to ZooKeeper")
                || l.starts_with("JLine support")
                || l.starts_with("WatchedEvent state:SyncConnected type:None")
                || l.starts_with("WatchedEvent state:Closed type:None"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Panics unless `want` appear as whole lines of `out`, in this order
/// (other lines may come between).
fn expect_lines(out: &str, want: &[&str]) {
    let lines: Vec<&str> = out.lines().collect();
    let mut at = 0;
    for w in want {
        match lines[at..].iter().position(|l| l == w) {
            Some(i) => at += i + 1,
            None => panic!(
                "expected the line {w:?} (after line {at}) in:\n{}\n(all expected, in order: {want:#?})",
                numbered(out)
            ),
        }
    }
}

fn numbered(out: &str) -> String {
    out.lines()
        .enumerate()
        .map(|(i, l)| format!("{:3}| {l}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The values of `name = value` stat lines, in order.
fn stat_values(out: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name} = ");
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

/// Runs `script` through zkCli until its output has the line `want`.
fn zkcli_until(hosts: &str, script: &str, want: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let out = zkcli(hosts, script);
        if out.lines().any(|l| l == want) {
            return out;
        }
        if Instant::now() > deadline {
            panic!("no line {want:?} within {limit:?} from\n{script}\nlast output:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A process that takes input over time (zkCli holding a session, a
/// script waiting for the test's word); its stdout and stderr go to one
/// log file. Killed when dropped.
struct Interactive {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    what: String,
}

impl Interactive {
    fn spawn(what: &str, cmd: &mut Command, log: &Path) -> Interactive {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        Interactive {
            stdin: child.stdin.take(),
            child,
            log: log.to_path_buf(),
            what: what.to_string(),
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| {
                panic!(
                    "{}: cannot send {line:?}: {e}\n{}",
                    self.what,
                    self.output()
                )
            });
    }

    /// Waits until the output satisfies `done`; returns it.
    fn wait_for(&mut self, why: &str, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let exited = self.child.try_wait().expect("try_wait");
            let out = self.output();
            if done(&out) {
                return out;
            }
            if let Some(status) = exited {
                panic!(
                    "{} exited ({status}) before {why}; its output:\n{out}",
                    self.what
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: not {why} within {limit:?}; its output:\n{out}",
                    self.what
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Closes stdin and waits for the exit (killed past `limit`).
    fn finish(&mut self, limit: Duration) -> ExitStatus {
        self.stdin = None;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {limit:?}; its output:\n{}",
                    self.what,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A zkCli that keeps its session while the test goes on.
fn zkcli_session(what: &str, hosts: &str, log: &Path) -> Interactive {
    Interactive::spawn(what, &mut zkcli_command(hosts), log)
}

/// The client connections node `addr` counts, less the one asking.
fn zk_connections(addr: SocketAddr) -> u64 {
    let answer = four_letter_word(addr, "srvr");
    let n: u64 = answer
        .lines()
        .find_map(|l| l.strip_prefix("Connections: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Connections line in srvr of {addr}:\n{answer}"));
    n.saturating_sub(1)
}

/// The node the only ZooKeeper client of `cluster` is connected to.
fn node_of_the_only_client(cluster: &Cluster) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let counts: BTreeMap<u64, u64> = cluster
            .running()
            .into_iter()
            .map(|id| (id, zk_connections(cluster.addrs(id).zk)))
            .collect();
        let busy: Vec<u64> = counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(id, _)| *id)
            .collect();
        if busy.len() == 1 && counts[&busy[0]] == 1 {
            return busy[0];
        }
        if Instant::now() > deadline {
            panic!("not exactly one ZooKeeper client connection in the cluster: {counts:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// zkCli: create modes, versions, listings, stats, sync, delete and
/// deleteall, ephemerals that live as long as their session, reaped
/// containers and TTL nodes, ACLs with digest and ip identities and the
/// superuser, and the effect of a multi made by another client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zkcli_commands_behave_as_on_zookeeper() {
    let (cluster, _) = zk_cluster().await;
    let hosts = all_hosts(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");

    // Create modes, versions, listings and stats, in one session.
    let out = zkcli(
        &hosts,
        "create /app hello
create /app again
create /nope/child x
create -s /app/seq- a
create -s /app/seq- b
create -e /app/eph e
create -e -s /app/eseq- x
create /app/eph/sub x
create -c /app/cont
create /app/cont/kid k
create -t 8000 /app/ttl t
get -s /app
set -v 0 /app v1
set -v 0 /app v2
set -s /app v3
get /app
ls -s /app
ls -R /app
getEphemerals /app
stat /app/eph
stat /app/eseq-0000000003
stat /app/cont
get -s /app/ttl
getAllChildrenNumber /app
sync /app
delete -v 5 /app/seq-0000000000
delete /app
delete /app/seq-0000000000
ls /app
quit
",
    );
    expect_lines(
        &out,
        &[
            "Created /app",
            "Node already exists: /app",
            "Node does not exist: /nope/child",
            "Created /app/seq-0000000000",
            "Created /app/seq-0000000001",
            "Created /app/eph",
            // The parent's cversion numbers sequential children: 3 creates before.
            "Created /app/eseq-0000000003",
            "Ephemerals cannot have children: /app/eph/sub",
            "Created /app/cont",
            "Created /app/cont/kid",
            "Created /app/ttl",
            // get -s /app
            "hello",
            "dataVersion = 0",
            "numChildren = 6",
            // the second `set -v 0`
            "version No is not valid : /app",
            // set -s prints the new stat
            "dataVersion = 2",
            "v3",
            // ls -s
            "[cont, eph, eseq-0000000003, seq-0000000000, seq-0000000001, ttl]",
            "cversion = 6",
            "dataVersion = 2",
            "numChildren = 6",
            // ls -R, breadth first
            "/app",
            "/app/cont",
            "/app/eph",
            "/app/eseq-0000000003",
            "/app/seq-0000000000",
            "/app/seq-0000000001",
            "/app/ttl",
            "/app/cont/kid",
            "[/app/eph, /app/eseq-0000000003]",
            // get -s /app/ttl
            "t",
            // getAllChildrenNumber: the six children and cont/kid
            "7",
            "Sync is OK",
            "version No is not valid : /app/seq-0000000000",
            "Node not empty: /app",
            "[cont, eph, eseq-0000000003, seq-0000000001, ttl]",
        ],
    );
    // Owners in print order: get -s /app, set -s, ls -s, the two
    // ephemerals (this session), the container, the TTL node (ZooKeeper's
    // 0xff high byte, the TTL in the low bits).
    let owners = stat_values(&out, "ephemeralOwner");
    assert_eq!(owners.len(), 7, "ephemeralOwner lines:\n{out}");
    let session = &owners[3];
    assert_ne!(session, "0x0", "an ephemeral without owner:\n{out}");
    assert_eq!(
        owners,
        [
            "0x0",
            "0x0",
            "0x0",
            session,
            session,
            "0x8000000000000000",
            "0xff00000000001f40"
        ],
        "ephemeralOwner lines:\n{out}"
    );

    // The session closed (`quit`): its ephemerals went with it. The
    // container loses its last child and is reaped, and so is the TTL node
    // past its 8 s.
    let out = zkcli(
        &hosts,
        "stat /app/eph\nstat /app/eseq-0000000003\nls /app/cont\ndelete /app/cont/kid\nquit\n",
    );
    expect_lines(
        &out,
        &[
            "Node does not exist: /app/eph",
            "Node does not exist: /app/eseq-0000000003",
            "[kid]",
        ],
    );
    zkcli_until(
        &hosts,
        "ls /app\nquit\n",
        "[seq-0000000001]",
        Duration::from_secs(30),
    );

    // An ephemeral lives as long as its session: another client sees it
    // with its owner, then sees it go when the session closes.
    let mut holder = zkcli_session(
        "zkCli holding /held",
        &hosts,
        &dir.path().join("holder.log"),
    );
    holder.send("create -e /held mine");
    holder.wait_for("created /held", Duration::from_secs(60), |o| {
        o.lines().any(|l| l == "Created /held")
    });
    let out = zkcli(&hosts, "get -s /held\nquit\n");
    expect_lines(&out, &["mine", "dataLength = 4"]);
    assert_ne!(stat_values(&out, "ephemeralOwner"), ["0x0"], "{out}");
    holder.send("quit");
    let status = holder.finish(Duration::from_secs(30));
    assert!(
        status.success(),
        "zkCli holder: {status}\n{}",
        holder.output()
    );
    let out = zkcli(&hosts, "stat /held\nquit\n");
    expect_lines(&out, &["Node does not exist: /held"]);

    // A multi by another client (the Rust one) is seen whole.
    let client = zk_connect(&hosts).await;
    let mut multi = client.new_multi_writer();
    multi.add_create("/app/m1", b"one", PERSISTENT).unwrap();
    multi.add_create("/app/m2", b"two", PERSISTENT).unwrap();
    multi.add_set_data("/app", b"by-multi", Some(2)).unwrap();
    ok("multi", multi.commit()).await;
    let out = zkcli(&hosts, "get -s /app\nls /app\nquit\n");
    expect_lines(
        &out,
        &[
            "by-multi",
            "dataVersion = 3",
            "numChildren = 3",
            "[m1, m2, seq-0000000001]",
        ],
    );

    // ACLs: alice protects a node with her digest identity.
    let alice_id = "'digest,'alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E="; // base64(sha1("alice:secret"))
    let out = zkcli(
        &hosts,
        "addauth digest alice:secret
create /acl data
setAcl /acl auth:alice:secret:cdrwa
getAcl /acl
get /acl
create /acl/child c
setAcl -v 5 /acl world:anyone:r
quit
",
    );
    expect_lines(
        &out,
        &[
            "Created /acl",
            alice_id,
            ": cdrwa",
            "data",
            "Created /acl/child",
            "version No is not valid : /acl",
        ],
    );
    // Another client without her credentials, then with wrong ones: every
    // op that needs a permission is refused; stat needs none.
    let out = zkcli(
        &hosts,
        "get /acl
ls /acl
set /acl x
getAcl /acl
create /acl/b x
delete /acl/child
addauth digest alice:wrong
get /acl
stat /acl
quit
",
    );
    expect_lines(
        &out,
        &[
            "Insufficient permission : /acl",
            "Insufficient permission : /acl",
            "Insufficient permission : /acl",
            "Insufficient permission : /acl",
            "Insufficient permission : /acl/b",
            "Insufficient permission : /acl/child",
            "Insufficient permission : /acl",
            "aclVersion = 1",
            "numChildren = 1",
        ],
    );
    assert!(
        !out.lines().any(|l| l == "data"),
        "read without the ACL:\n{out}"
    );
    // The superuser passes every ACL.
    let out = zkcli(
        &hosts,
        &format!(
            "addauth digest {ZK_SUPER_CREDENTIALS}
get /acl
set /acl bysuper
create /acl/bysuper x
getAcl /acl
setAcl /acl world:anyone:r
quit
"
        ),
    );
    expect_lines(&out, &["data", "Created /acl/bysuper", alice_id, ": cdrwa"]);
    assert!(
        !out.contains("Insufficient permission"),
        "superuser refused:\n{out}"
    );
    // Now anyone reads, nobody writes.
    let out = zkcli(
        &hosts,
        "get /acl\nset /acl nope\ngetAcl /acl\nls /acl\nquit\n",
    );
    expect_lines(
        &out,
        &[
            "bysuper",
            "Insufficient permission : /acl",
            "'world,'anyone",
            ": r",
            "[bysuper, child]",
        ],
    );
    // ip identities: this client is 127.0.0.1.
    let out = zkcli(
        &hosts,
        "create /ip data
setAcl /ip ip:127.0.0.0/8:r,ip:10.1.2.3:cdrwa
get /ip
set /ip x
getAcl /ip
quit
",
    );
    expect_lines(
        &out,
        &[
            "Created /ip",
            "data",
            "Insufficient permission : /ip",
            "'ip,'127.0.0.0/8",
            ": r",
            "'ip,'10.1.2.3",
            ": cdrwa",
        ],
    );

    // deleteall removes a whole subtree.
    let out = zkcli(&hosts, "deleteall /app\nls /\nquit\n");
    expect_lines(&out, &["[acl, ip, zookeeper]"]);
}

/// ZooKeeper's `whoami` names a digest user by its name alone
/// (`DigestAuthenticationProvider.getUserName`: the part before the
/// colon).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zkcli_whoami_names_the_digest_user() {
    let (cluster, _) = zk_cluster().await;
    let out = zkcli(
        &all_hosts(&cluster),
        "addauth digest alice:secret\nwhoami\nquit\n",
    );
    expect_lines(
        &out,
        &["Auth scheme: User", "ip: 127.0.0.1", "digest: alice"],
    );
}

/// The Java client keeps its session and its watches through the SIGKILL
/// of the node it is connected to: it reconnects elsewhere and sends
/// SetWatches2 with its persistent, recursive and one-shot watches, which
/// then fire for changes made through the other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zkcli_watches_and_ephemerals_survive_the_kill_of_their_node() {
    let (mut cluster, _) = zk_cluster().await;
    let hosts = all_hosts(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = zkcli(&hosts, "create /pw v0\ncreate /one x\nquit\n");
    expect_lines(&out, &["Created /pw", "Created /one"]);

    let mut watcher = zkcli_session("zkCli watching", &hosts, &dir.path().join("watcher.log"));
    for cmd in [
        "create -e /mine eph",
        "addWatch -m PERSISTENT /pw",
        // zkCli 3.8 keeps the last `-m` for the next addWatch: always say it.
        "addWatch -m PERSISTENT_RECURSIVE /tree",
        "get -w /one",
        "create /sentinel s",
    ] {
        watcher.send(cmd);
    }
    watcher.wait_for("set its watches", Duration::from_secs(60), |o| {
        o.lines().any(|l| l == "Created /sentinel")
    });
    let out = zkcli(&hosts, "stat /mine\nquit\n");
    let owner = stat_values(&out, "ephemeralOwner");
    assert_ne!(owner, ["0x0"], "{out}");

    let victim = node_of_the_only_client(&cluster);
    cluster.kill(victim);
    let before = watcher.output().len();
    watcher.wait_for("reconnected", Duration::from_secs(60), |o| {
        let after = &o[before.min(o.len())..];
        after.contains("state:Disconnected")
            && after
                .rsplit("state:Disconnected")
                .next()
                .is_some_and(|tail| tail.contains("state:SyncConnected"))
    });
    assert!(
        !watcher.output().contains("state:Expired"),
        "the session expired:\n{}",
        watcher.output()
    );

    let live = live_hosts(&cluster);
    let out = zkcli(
        &live,
        "stat /mine
set /pw v1
create /pw/kid k
create /tree t
create /tree/a a
set /tree/a b
set /one y
set /one z
set /pw end
quit
",
    );
    assert_eq!(
        stat_values(&out, "ephemeralOwner"),
        owner,
        "the ephemeral after the kill:\n{out}"
    );
    let event = |kind: &str, path: &str| {
        format!("WatchedEvent state:SyncConnected type:{kind} path:{path}")
    };
    let want = [
        event("NodeDataChanged", "/pw"),
        event("NodeChildrenChanged", "/pw"),
        event("NodeCreated", "/tree"),
        event("NodeCreated", "/tree/a"),
        event("NodeDataChanged", "/tree/a"),
        event("NodeDataChanged", "/one"),
        // Last, so that every event before it has arrived.
        event("NodeDataChanged", "/pw"),
    ];
    let out = watcher.wait_for("seen every event", Duration::from_secs(30), |o| {
        o.contains(want.last().expect("events").as_str())
    });
    let seen: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("WatchedEvent state:SyncConnected type:Node"))
        .collect();
    assert_eq!(
        seen,
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "node events seen by the watching zkCli (the one-shot watch on /one fires once)"
    );
    watcher.send("quit");
    watcher.finish(Duration::from_secs(30));
}

// ---------------------------------------------------------------- kazoo

/// kazoo's recipes, each asserting its own guarantees (see
/// `tests/zk/kazoo_recipes.py`): Lock, Election, Barrier, DoubleBarrier,
/// Counter, Queue, LockingQueue, Party, Semaphore, DataWatch,
/// ChildrenWatch, TreeCache and transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_recipes_work() {
    let (cluster, _) = zk_cluster().await;
    let out = kazoo(
        "kazoo_recipes.py",
        &[&all_hosts(&cluster)],
        &[
            "lock",
            "election",
            "barrier",
            "double_barrier",
            "counter",
            "queue",
            "locking_queue",
            "party",
            "semaphore",
            "data_watch",
            "children_watch",
            "tree_cache",
            "transactions",
        ],
        Duration::from_secs(360),
    );
    eprintln!("{out}");
}

/// The jars of Apache Curator, its ZooKeeper client and Guava, as
/// Debian installs them (`libcurator-recipes-java`).
fn curator_classpath() -> String {
    let dir = std::env::var("SYNOD_JAVA_LIBS").unwrap_or_else(|_| "/usr/share/java".into());
    let jars = [
        "curator-client",
        "curator-framework",
        "curator-recipes",
        "zookeeper",
        "zookeeper-jute",
        "guava",
        "slf4j-api",
    ];
    let paths: Vec<String> = jars.iter().map(|j| format!("{dir}/{j}.jar")).collect();
    for p in &paths {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: apt-get install libcurator-recipes-java (.ci/run does), \
             or set SYNOD_JAVA_LIBS to a directory with the jars"
        );
    }
    paths.join(":")
}

/// Apache Curator, unchanged (`tests/zk/CuratorRecipes.java`, run as a
/// single-file Java program): the framework's operations, 500 pipelined
/// background creates and reads, transactions (a failed one changes
/// nothing), InterProcessMutex over four clients (no lost update, never
/// two holders), LeaderLatch (one leader, another when it closes),
/// CuratorCache on persistent recursive watches (every change, in order)
/// and DistributedAtomicLong over four clients. The same program passes
/// against ZooKeeper 3.8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_recipes_work() {
    let (cluster, _) = zk_cluster().await;
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zk/CuratorRecipes.java");
    let out = common::run(
        Command::new("java")
            .arg("-cp")
            .arg(curator_classpath())
            .arg(&program)
            .arg(all_hosts(&cluster)),
        Duration::from_secs(300),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("all ok"),
        "Curator against synod failed ({}):\n{text}",
        out.status
    );
    eprintln!("{text}");
}

/// A kazoo client that stops pinging (its process frozen) loses its
/// session after its timeout; its ephemeral goes and another client's
/// watch sees it go; thawed, the client learns the session is lost. Then
/// a frozen client's node, the leader, is SIGKILLed: the new leader
/// still expires the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_session_expiry_deletes_ephemerals() {
    let (mut cluster, leader) = zk_cluster().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = kazoo(
        "kazoo_sessions.py",
        &["expiry", &all_hosts(&cluster)],
        &["expiry"],
        Duration::from_secs(150),
    );
    eprintln!("{out}");

    let first = cluster.addrs(leader).zk.to_string();
    let mut script = Interactive::spawn(
        "kazoo orphan",
        kazoo_command("kazoo_sessions.py").args(["orphan", &first, &all_hosts(&cluster)]),
        &dir.path().join("orphan.log"),
    );
    script.wait_for("frozen", Duration::from_secs(60), |o| {
        o.contains("FROZEN") || o.contains("FAIL")
    });
    cluster.kill(leader);
    script.send("killed");
    let status = script.finish(Duration::from_secs(120));
    let out = script.output();
    assert!(
        status.success() && out.contains("ok: orphan "),
        "the session of a client of the killed leader did not expire ({status}):\n{out}"
    );
    eprintln!("{out}");
}

/// A kazoo client connected to one node keeps its session when that node
/// is SIGKILLed: it reconnects to another, its ephemeral stays, its
/// DataWatch goes on. Once with a follower, once with the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_session_survives_the_kill_of_its_node() {
    let (mut cluster, leader) = zk_cluster().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    for (round, role) in ["follower", "leader"].into_iter().enumerate() {
        let leader = bounded("ready", Duration::from_secs(30), cluster.wait_ready()).await;
        let victim = if role == "leader" { leader } else { follower };
        let first = cluster.addrs(victim).zk.to_string();
        let mut script = Interactive::spawn(
            &format!("kazoo failover from the {role}"),
            kazoo_command("kazoo_sessions.py").args(["failover", &first, &all_hosts(&cluster)]),
            &dir.path().join(format!("failover{round}.log")),
        );
        let out = script.wait_for("connected", Duration::from_secs(60), |o| {
            o.contains("CONNECTED ") || o.contains("FAIL")
        });
        assert!(out.contains(&format!("CONNECTED {first}")), "{out}");
        cluster.kill(victim);
        script.send("killed");
        let status = script.finish(Duration::from_secs(120));
        let out = script.output();
        assert!(
            status.success() && out.contains("ok: failover "),
            "kazoo failover from the {role} (node {victim}) failed ({status}):\n{out}"
        );
        eprintln!("{role}: {out}");
        cluster.spawn(victim);
        cluster.wait_zk_listening();
    }
}

/// ZooKeeper's read-only mode: the last node of a cluster whose other
/// nodes were killed says `ro` to `isro` and `Mode: read-only`, serves a
/// kazoo client that asked for read-only (`tests/zk/kazoo_readonly.py`:
/// reads of what the cluster held, writes and syncs refused with
/// NotReadOnlyCallError, a plain client not served); when the other nodes
/// come back it says `rw` again and the same kazoo client ends up
/// read-write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_read_only_mode_on_a_node_without_quorum() {
    let (mut cluster, _) = zk_cluster().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = zk_connect(&all_hosts(&cluster)).await;
    ok("create /ro", writer.create("/ro", b"before", PERSISTENT)).await;
    ok("sync", writer.sync("/")).await;
    drop(writer);
    let last = 1;
    let addr = cluster.addrs(last).zk;
    // The survivor holds /ro before the others go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !four_letter_word(addr, "mntr").contains("zk_znode_count\t5") {
        assert!(Instant::now() < deadline, "node {last} applied the create");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(four_letter_word(addr, "isro"), "rw");
    for id in [2, 3] {
        cluster.kill(id);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while four_letter_word(addr, "isro") != "ro" {
        assert!(Instant::now() < deadline, "node {last} turns read-only");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(four_letter_word(addr, "srvr").contains("Mode: read-only"));
    let mut script = Interactive::spawn(
        "kazoo read-only",
        kazoo_command("kazoo_readonly.py").args(["readonly", &addr.to_string()]),
        &dir.path().join("readonly.log"),
    );
    script.wait_for("waiting", Duration::from_secs(90), |o| {
        o.contains("WAITING") || o.contains("FAIL")
    });
    for id in [2, 3] {
        cluster.spawn(id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while four_letter_word(addr, "isro") != "rw" {
        assert!(
            Instant::now() < deadline,
            "node {last} turns read-write again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    script.send("restarted");
    let status = script.finish(Duration::from_secs(120));
    let out = script.output();
    assert!(
        status.success()
            && out.contains("ok: reads_and_refused_writes")
            && out.contains("ok: read_write_client_not_served")
            && out.contains("ok: back_to_read_write")
            && out.contains("ok: readonly "),
        "kazoo in read-only mode ({status}):\n{out}"
    );
    eprintln!("{out}");
}

/// An observer (ZooKeeper's word; etcd's learner): a node added with
/// `member add --learner` serves ZooKeeper clients once it has caught up:
/// `srvr` says `Mode: observer`, reads show what the voters wrote, and a
/// write through it is forwarded and applied cluster-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_serves_zookeeper_clients() {
    let (mut cluster, _) = zk_cluster().await;
    let writer = zk_connect(&all_hosts(&cluster)).await;
    ok(
        "create /obs",
        writer.create("/obs", b"from-voters", PERSISTENT),
    )
    .await;
    let peer = common::free_addr();
    let (added, cluster_hex) = common::member_add_learner(&cluster.host_ports(), "n4", peer);
    let id = cluster.join_node_at(peer, &cluster_hex);
    assert_eq!(id, added);
    cluster.wait_caught_up(id, Duration::from_secs(30)).await;
    let addr = cluster.addrs(id).zk;
    assert!(common::wait_listening(addr, Duration::from_secs(20)));
    let srvr = four_letter_word(addr, "srvr");
    assert!(
        srvr.contains("Mode: observer"),
        "srvr of the learner:\n{srvr}"
    );
    let c = zk_connect(&cluster.zk_hosts(&[id])).await;
    ok("sync", c.sync("/")).await;
    let (data, _) = ok("get /obs", c.get_data("/obs")).await;
    assert_eq!(data, b"from-voters");
    ok(
        "create through the observer",
        c.create("/obs/w", b"via-observer", PERSISTENT),
    )
    .await;
    ok("sync", writer.sync("/")).await;
    let (data, _) = ok("get /obs/w", writer.get_data("/obs/w")).await;
    assert_eq!(data, b"via-observer");
    assert!(four_letter_word(cluster.addrs(1).zk, "srvr")
        .lines()
        .any(|l| { l == "Mode: leader" || l == "Mode: follower" }));
}

// ------------------------------------------------- zookeeper-client crate

const PERSISTENT: &zk::CreateOptions<'static> =
    &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
const EPHEMERAL: &zk::CreateOptions<'static> =
    &zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
const SEQUENTIAL: &zk::CreateOptions<'static> =
    &zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());

/// A session through `hosts` (any of them; the client shuffles).
async fn zk_connect(hosts: &str) -> zk::Client {
    bounded(
        &format!("a ZooKeeper session through {hosts}"),
        Duration::from_secs(40),
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(hosts),
    )
    .await
    .unwrap_or_else(|e| panic!("no ZooKeeper session through {hosts}: {e}"))
}

/// Awaits a request that must succeed.
async fn ok<T, E: Debug>(what: &str, fut: impl Future<Output = Result<T, E>>) -> T {
    bounded(what, REQUEST_LIMIT, fut)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

/// Awaits a request that must fail; returns the error.
async fn fails<T: Debug, E>(what: &str, fut: impl Future<Output = Result<T, E>>) -> E {
    match bounded(what, REQUEST_LIMIT, fut).await {
        Ok(v) => panic!("{what}: succeeded with {v:?}"),
        Err(e) => e,
    }
}

/// The next `n` events of a persistent watcher as (type, path), checking
/// that their zxids grow.
async fn next_events(
    what: &str,
    w: &mut zk::PersistentWatcher,
    n: usize,
) -> Vec<(zk::EventType, String)> {
    let mut out = Vec::new();
    let mut last_zxid = 0;
    for _ in 0..n {
        let e = bounded(
            &format!("{what}: event {}", out.len() + 1),
            REQUEST_LIMIT,
            w.changed(),
        )
        .await;
        assert!(
            e.zxid > last_zxid,
            "{what}: zxid {} after {last_zxid} ({e:?})",
            e.zxid
        );
        last_zxid = e.zxid;
        out.push((e.event_type, e.path));
    }
    out
}

/// The zookeeper-client crate: a failed multi names its failing op and
/// changes nothing, a successful one answers each op; multiRead answers
/// each read on its own; persistent and persistent-recursive watches
/// (addWatch) see every change, in order, and only what ZooKeeper sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_client_multi_and_persistent_watches() {
    use zk::EventType::{NodeChildrenChanged, NodeCreated, NodeDataChanged, NodeDeleted};
    let (cluster, _) = zk_cluster().await;
    let hosts = all_hosts(&cluster);
    let c = zk_connect(&hosts).await;
    ok("create /m", c.create("/m", b"", PERSISTENT)).await;
    ok("create /m/a", c.create("/m/a", b"a", PERSISTENT)).await;

    // Failed multis: the failing op's index and error; nothing applied.
    type AddOps = fn(&mut zk::MultiWriter<'_>);
    let failing: [(&str, AddOps, usize, zk::Error); 3] = [
        (
            "bad version",
            |w| {
                w.add_create("/m/b", b"b", PERSISTENT).unwrap();
                w.add_set_data("/m/a", b"x", Some(7)).unwrap();
                w.add_delete("/m/a", None).unwrap();
            },
            1,
            zk::Error::BadVersion,
        ),
        (
            "check of a missing node",
            |w| {
                w.add_check_version("/m/none", 0).unwrap();
                w.add_create("/m/b", b"b", PERSISTENT).unwrap();
            },
            0,
            zk::Error::NoNode,
        ),
        (
            "delete of a node with children",
            |w| {
                w.add_create("/m/b", b"b", PERSISTENT).unwrap();
                w.add_set_data("/m/a", b"x", None).unwrap();
                w.add_delete("/m", None).unwrap();
            },
            2,
            zk::Error::NotEmpty,
        ),
    ];
    for (what, build, index, error) in failing {
        let mut w = c.new_multi_writer();
        build(&mut w);
        let err = fails(what, w.commit()).await;
        assert_eq!(
            err,
            zk::MultiWriteError::OperationFailed {
                index,
                source: error
            },
            "{what}"
        );
        assert_eq!(
            ok("read /m/a", c.get_data("/m/a")).await.0,
            b"a",
            "{what}: a failed multi changed /m/a"
        );
        assert_eq!(
            ok("exists /m/b", c.check_stat("/m/b")).await,
            None,
            "{what}: a failed multi created /m/b"
        );
    }

    // A successful multi answers each op.
    let mut w = c.new_multi_writer();
    w.add_create("/m/b", b"b", PERSISTENT).unwrap();
    w.add_create("/m/s-", b"s", SEQUENTIAL).unwrap();
    w.add_check_version("/m/a", 0).unwrap();
    w.add_set_data("/m/a", b"a1", Some(0)).unwrap();
    w.add_delete("/m/b", Some(0)).unwrap();
    let results = ok("multi", w.commit()).await;
    assert_eq!(results.len(), 5, "{results:?}");
    let (b_stat, s_path, s_stat) = match (&results[0], &results[1]) {
        (
            zk::MultiWriteResult::Create {
                path: b,
                stat: b_stat,
            },
            zk::MultiWriteResult::Create {
                path: s,
                stat: s_stat,
            },
        ) => {
            assert_eq!(b, "/m/b");
            (*b_stat, s.clone(), *s_stat)
        }
        other => panic!("create results: {other:?}"),
    };
    // /m/a, then /m/b: the parent's cversion is 2 when /m/s- is named.
    assert_eq!(s_path, "/m/s-0000000002", "{results:?}");
    assert_eq!((b_stat.version, b_stat.data_length), (0, 1), "{b_stat:?}");
    assert_eq!(s_stat.czxid, b_stat.czxid, "one multi, one zxid");
    assert_eq!(results[2], zk::MultiWriteResult::Check);
    match &results[3] {
        zk::MultiWriteResult::SetData { stat } => {
            assert_eq!((stat.version, stat.mzxid), (1, b_stat.czxid), "{stat:?}")
        }
        other => panic!("set_data result: {other:?}"),
    }
    assert_eq!(results[4], zk::MultiWriteResult::Delete);
    let mut children = ok("children of /m", c.list_children("/m")).await;
    children.sort();
    assert_eq!(children, ["a", "s-0000000002"]);

    // multiRead: per-op errors.
    let mut r = c.new_multi_reader();
    r.add_get_data("/m/a").unwrap();
    r.add_get_data("/m/none").unwrap();
    r.add_get_children("/m").unwrap();
    r.add_get_children("/m/none").unwrap();
    let reads = ok("multiRead", r.commit()).await;
    match &reads[..] {
        [zk::MultiReadResult::Data { data, stat }, zk::MultiReadResult::Error { err: e1 }, zk::MultiReadResult::Children { children }, zk::MultiReadResult::Error { err: e2 }] =>
        {
            assert_eq!((data.as_slice(), stat.version), (&b"a1"[..], 1));
            assert_eq!((e1, e2), (&zk::Error::NoNode, &zk::Error::NoNode));
            let mut children = children.clone();
            children.sort();
            assert_eq!(children, ["a", "s-0000000002"]);
        }
        other => panic!("multiRead results: {other:?}"),
    }

    // Persistent watch: the node's creation, data, children and deletion,
    // every change, in order.
    let watcher = zk_connect(&hosts).await;
    let mut p = ok(
        "addWatch /p",
        watcher.watch("/p", zk::AddWatchMode::Persistent),
    )
    .await;
    let mut rw = ok(
        "addWatch -m PERSISTENT_RECURSIVE /r",
        watcher.watch("/r", zk::AddWatchMode::PersistentRecursive),
    )
    .await;
    ok("create /p", c.create("/p", b"0", PERSISTENT)).await;
    ok("set /p", c.set_data("/p", b"1", None)).await;
    ok("set /p", c.set_data("/p", b"2", None)).await;
    ok("create /p/kid", c.create("/p/kid", b"", PERSISTENT)).await;
    ok(
        "create /p/kid/deep",
        c.create("/p/kid/deep", b"", PERSISTENT),
    )
    .await;
    ok("delete /p/kid/deep", c.delete("/p/kid/deep", None)).await;
    ok("delete /p/kid", c.delete("/p/kid", None)).await;
    ok("delete /p", c.delete("/p", None)).await;
    ok("create /p", c.create("/p", b"again", PERSISTENT)).await;
    let p_path = || "/p".to_string();
    assert_eq!(
        next_events("persistent /p", &mut p, 7).await,
        [
            (NodeCreated, p_path()),
            (NodeDataChanged, p_path()),
            (NodeDataChanged, p_path()),
            (NodeChildrenChanged, p_path()),
            (NodeChildrenChanged, p_path()),
            (NodeDeleted, p_path()),
            (NodeCreated, p_path()),
        ]
    );

    // Persistent recursive watch: the node and everything below, no child
    // lists. A multi's changes come one by one.
    ok("create /r", c.create("/r", b"", PERSISTENT)).await;
    ok("create /r/a", c.create("/r/a", b"", PERSISTENT)).await;
    ok("create /r/a/b", c.create("/r/a/b", b"", PERSISTENT)).await;
    ok("set /r/a/b", c.set_data("/r/a/b", b"x", None)).await;
    let mut w = c.new_multi_writer();
    w.add_delete("/r/a/b", None).unwrap();
    w.add_set_data("/r", b"y", None).unwrap();
    w.add_create("/r/eph", b"", EPHEMERAL).unwrap();
    ok("multi under /r", w.commit()).await;
    ok("create /elsewhere", c.create("/elsewhere", b"", PERSISTENT)).await;
    ok("set /r/a", c.set_data("/r/a", b"end", None)).await;
    let r = |p: &str| p.to_string();
    let mut got = Vec::new();
    for (kind, path) in [
        (NodeCreated, r("/r")),
        (NodeCreated, r("/r/a")),
        (NodeCreated, r("/r/a/b")),
        (NodeDataChanged, r("/r/a/b")),
    ] {
        let e = bounded("recursive event", REQUEST_LIMIT, rw.changed()).await;
        got.push((e.event_type, e.path.clone()));
        assert_eq!(
            got.last(),
            Some(&(kind, path)),
            "recursive /r events so far: {got:?}"
        );
    }
    // The multi's three changes share a zxid.
    let mut multi_events = Vec::new();
    let mut zxids = Vec::new();
    for _ in 0..3 {
        let e = bounded("recursive event of the multi", REQUEST_LIMIT, rw.changed()).await;
        zxids.push(e.zxid);
        multi_events.push((e.event_type, e.path));
    }
    assert_eq!(
        multi_events,
        [
            (NodeDeleted, r("/r/a/b")),
            (NodeDataChanged, r("/r")),
            (NodeCreated, r("/r/eph")),
        ]
    );
    assert!(
        zxids.iter().all(|z| *z == zxids[0]),
        "zxids of one multi: {zxids:?}"
    );
    // Nothing from outside /r came between.
    let e = bounded("recursive event", REQUEST_LIMIT, rw.changed()).await;
    assert_eq!((e.event_type, e.path.as_str()), (NodeDataChanged, "/r/a"));

    // The ephemeral made in the multi goes with its session; the
    // recursive watch sees it.
    drop(c);
    let e = bounded(
        "recursive event of a closed session",
        REQUEST_LIMIT,
        rw.changed(),
    )
    .await;
    assert_eq!((e.event_type, e.path.as_str()), (NodeDeleted, "/r/eph"));
}

/// Watches of the zookeeper-client crate set through one node fire after
/// that node is SIGKILLed and the client reconnects elsewhere (the client
/// sends SetWatches with its last zxid): one changed while it was away
/// fires at once, the others when their change comes. Its session and
/// ephemeral stay.
///
/// (zookeeper-client 0.11 does not send its persistent watches again on a
/// reconnect, a bug of its own; the zkCli test above covers SetWatches2.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_client_watches_survive_the_kill_of_their_node() {
    use zk::EventType::{NodeChildrenChanged, NodeCreated, NodeDataChanged};
    let (mut cluster, _) = zk_cluster().await;
    {
        let setup = zk_connect(&all_hosts(&cluster)).await;
        for (path, data) in [("/w", "w"), ("/w/a", "a0"), ("/w/b", "b0")] {
            ok(path, setup.create(path, data.as_bytes(), PERSISTENT)).await;
        }
    }
    let watcher = zk_connect(&all_hosts(&cluster)).await;
    let session = watcher.session_id();
    ok("create /w/eph", watcher.create("/w/eph", b"", EPHEMERAL)).await;
    let (_, _, wa) = ok("watch /w/a", watcher.get_and_watch_data("/w/a")).await;
    let (_, _, wb) = ok("watch /w/b", watcher.get_and_watch_data("/w/b")).await;
    let (absent, we) = ok("watch /w/absent", watcher.check_and_watch_stat("/w/absent")).await;
    assert_eq!(absent, None);
    let (_, _, wc) = ok("watch /w's children", watcher.get_and_watch_children("/w")).await;
    let mut states = watcher.state_watcher();
    assert_eq!(states.state(), zk::SessionState::SyncConnected);

    let victim = node_of_the_only_client(&cluster);
    cluster.kill(victim);
    let writer = zk_connect(&live_hosts(&cluster)).await;
    // Possibly while the watcher is away: fires when it is back.
    ok("set /w/a", writer.set_data("/w/a", b"a1", None)).await;
    bounded("the watcher reconnects", Duration::from_secs(60), async {
        loop {
            match states.changed().await {
                zk::SessionState::SyncConnected => break,
                zk::SessionState::Disconnected => continue,
                other => panic!("watcher session: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(
        watcher.session_id(),
        session,
        "the session after the reconnect"
    );
    let e = bounded("data watch /w/a", REQUEST_LIMIT, wa.changed()).await;
    assert_eq!((e.event_type, e.path.as_str()), (NodeDataChanged, "/w/a"));
    assert_eq!(ok("get /w/a", watcher.get_data("/w/a")).await.0, b"a1");

    ok("set /w/b", writer.set_data("/w/b", b"b1", None)).await;
    let e = bounded("data watch /w/b", REQUEST_LIMIT, wb.changed()).await;
    assert_eq!((e.event_type, e.path.as_str()), (NodeDataChanged, "/w/b"));
    ok(
        "create /w/absent",
        writer.create("/w/absent", b"", PERSISTENT),
    )
    .await;
    let e = bounded("exist watch /w/absent", REQUEST_LIMIT, we.changed()).await;
    assert_eq!((e.event_type, e.path.as_str()), (NodeCreated, "/w/absent"));
    let e = bounded("child watch /w", REQUEST_LIMIT, wc.changed()).await;
    assert_eq!((e.event_type, e.path.as_str()), (NodeChildrenChanged, "/w"));

    let stat = ok("stat /w/eph", writer.check_stat("/w/eph")).await;
    assert_eq!(
        stat.map(|s| s.ephemeral_owner),
        Some(session.0),
        "the ephemeral after the reconnect"
    );
}

// ------------------------------------------------------ four-letter words

/// ruok, srvr and mntr on every node, as monitoring scripts read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_letter_words_answer() {
    let (cluster, leader) = zk_cluster().await;
    for id in cluster.ids() {
        let addr = cluster.addrs(id).zk;
        assert_eq!(four_letter_word(addr, "ruok"), "imok", "node {id}");
        let srvr = four_letter_word(addr, "srvr");
        let mode = if id == leader { "leader" } else { "follower" };
        assert!(
            srvr.lines().any(|l| l.starts_with("Zxid: 0x"))
                && srvr.lines().any(|l| l == format!("Mode: {mode}")),
            "srvr of node {id} (leader {leader}):\n{srvr}"
        );
        let mntr = four_letter_word(addr, "mntr");
        // `/`, `/zookeeper`, `/zookeeper/config`, `/zookeeper/quota`.
        assert!(
            mntr.lines().any(|l| l == "zk_znode_count\t4"),
            "mntr of node {id}:\n{mntr}"
        );
    }
    // A znode more, on every node once it applied the create.
    let c = zk_connect(&all_hosts(&cluster)).await;
    ok("create /counted", c.create("/counted", b"", PERSISTENT)).await;
    ok("sync", c.sync("/")).await;
    for id in cluster.ids() {
        let addr = cluster.addrs(id).zk;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mntr = four_letter_word(addr, "mntr");
            if mntr.lines().any(|l| l == "zk_znode_count\t5") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mntr of node {id} after a create:\n{mntr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `mntr`'s `zk_ephemerals_count` counts the ephemerals, as ZooKeeper's
/// does (`DataTree.getEphemeralsCount`); monitoring alerts on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mntr_counts_ephemerals() {
    let (cluster, _) = zk_cluster().await;
    let c = zk_connect(&all_hosts(&cluster)).await;
    ok("create /e1", c.create("/e1", b"", EPHEMERAL)).await;
    ok("create /e2", c.create("/e2", b"", EPHEMERAL)).await;
    ok("sync", c.sync("/")).await;
    for id in cluster.ids() {
        let addr = cluster.addrs(id).zk;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mntr = four_letter_word(addr, "mntr");
            if mntr.lines().any(|l| l == "zk_ephemerals_count\t2") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mntr of node {id} with two ephemerals:\n{mntr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ------------------------------------------------------------- bounds

/// Starts three nodes with `extra` flags on each, as [`zk_cluster`].
async fn zk_cluster_with(extra: &[&str]) -> Cluster {
    let mut cluster = Cluster::start_with(3, extra);
    bounded("ready", Duration::from_secs(30), cluster.wait_ready()).await;
    cluster.wait_zk_listening();
    cluster
}

/// One length-prefixed jute frame.
fn write_frame(s: &mut std::net::TcpStream, body: &[u8]) {
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    s.write_all(&frame).expect("write a frame");
}

fn read_frame(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read as _;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).expect("a frame's length");
    let mut body = vec![0u8; i32::from_be_bytes(head) as usize];
    s.read_exact(&mut body).expect("a frame's body");
    body
}

/// A session opened by hand on `addr` (ConnectRequest and its answer), so
/// a test decides when, or whether, the client reads.
fn raw_session(addr: SocketAddr) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut body = Vec::new();
    body.extend(0i32.to_be_bytes()); // protocol version
    body.extend(0i64.to_be_bytes()); // last zxid seen
    body.extend(30_000i32.to_be_bytes()); // session timeout
    body.extend(0i64.to_be_bytes()); // session id: a new one
    body.extend(16i32.to_be_bytes());
    body.extend([0u8; 16]); // password
    body.push(0); // not read-only
    write_frame(&mut s, &body);
    let answer = read_frame(&mut s);
    assert!(answer.len() >= 36, "a ConnectResponse: {answer:?}");
    s
}

/// Whether `addr` answers `ruok` now: a connection refused by the
/// per-address limit is closed without an answer (or reset).
fn answers_ruok(addr: SocketAddr) -> bool {
    use std::io::Read as _;
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if s.write_all(b"ruok").is_err() {
        return false;
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).is_ok() && answer == "imok"
}

/// ZooKeeper's `maxClientCnxns`: an address holding its limit of
/// connections to a node gets no more there (closed at once, logged),
/// other nodes still serve it, and a closed connection frees its place.
/// A socket that never sends its handshake does not hold a place forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_client_cnxns_are_closed() {
    let cluster = zk_cluster_with(&["--zk-max-client-cnxns", "3"]).await;
    let addr = cluster.addrs(1).zk;
    assert!(four_letter_word(addr, "conf").contains("maxClientCnxns=3\n"));
    let mut held: Vec<std::net::TcpStream> = (0..3).map(|_| raw_session(addr)).collect();
    assert!(!answers_ruok(addr), "a fourth connection is refused");
    let refused = cluster.log_tail(1, 200);
    assert!(
        refused.contains("too many connections from this address"),
        "the refusal is logged:\n{refused}"
    );
    assert!(
        answers_ruok(cluster.addrs(2).zk),
        "node 2 has its own count"
    );
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers_ruok(addr) {
        assert!(
            Instant::now() < deadline,
            "a closed connection frees its place"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Silent sockets (no handshake) are closed after 10 s.
    let _silent: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(cluster.addrs(3).zk).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !answers_ruok(cluster.addrs(3).zk),
        "three silent sockets fill node 3"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers_ruok(cluster.addrs(3).zk) {
        assert!(
            Instant::now() < deadline,
            "silent sockets are closed after the handshake limit"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
}

/// A client that stops reading its events (a hung process with its socket
/// open) is cut off once its queue of watch events passes
/// `--zk-max-backlog-bytes`, instead of growing the node's memory without
/// bound; the node goes on serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_events_is_cut_off() {
    let cluster = zk_cluster_with(&["--zk-max-backlog-bytes", "65536"]).await;
    let addr = cluster.addrs(1).zk;
    let mut stuck = raw_session(addr);
    // addWatch / PERSISTENT_RECURSIVE: every change below / is an event.
    let mut add_watch = Vec::new();
    add_watch.extend(1i32.to_be_bytes()); // xid
    add_watch.extend(106i32.to_be_bytes()); // addWatch
    add_watch.extend(1i32.to_be_bytes());
    add_watch.extend(b"/");
    add_watch.extend(1i32.to_be_bytes()); // PERSISTENT_RECURSIVE
    write_frame(&mut stuck, &add_watch);
    let reply = read_frame(&mut stuck);
    assert_eq!(&reply[12..16], &0i32.to_be_bytes(), "addWatch succeeds");
    // Then it reads nothing more. About 12 MB of events (1 KB paths) is
    // more than the socket buffers on both sides hold.
    let writer = zk_connect(&cluster.zk_hosts(&[2])).await;
    ok("create /slow", writer.create("/slow", b"", PERSISTENT)).await;
    let long = "x".repeat(1000);
    let mut cut_at = None;
    for batch in 0..120 {
        let mut multi = writer.new_multi_writer();
        for i in 0..100 {
            multi
                .add_create(&format!("/slow/{long}{batch}-{i}"), b"", PERSISTENT)
                .unwrap();
        }
        ok("a multi of 100 creates", multi.commit()).await;
        if batch % 10 == 9 && cluster.log_tail(1, 400).contains("client is not reading") {
            cut_at = Some(batch);
            break;
        }
    }
    let log = cluster.log_tail(1, 400);
    assert!(
        cut_at.is_some() || log.contains("client is not reading"),
        "the stuck client was cut off:\n{log}"
    );
    // What was already in the socket buffers can still be read, then the
    // stream ends.
    let drained = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            match stuck.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .unwrap();
    assert!(
        drained < 12_000_000,
        "the stream ended early: {drained} bytes"
    );
    // The node still serves, the stuck client's node included.
    let c = zk_connect(&cluster.zk_hosts(&[1])).await;
    ok("a write after the cut", c.create("/after", b"", PERSISTENT)).await;
}

// ---------------------------------------------------------- pipelining

/// A request frame body: header (xid, opcode), then `fields`.
fn request(xid: i32, opcode: i32, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = xid.to_be_bytes().to_vec();
    body.extend(opcode.to_be_bytes());
    for f in fields {
        body.extend_from_slice(f);
    }
    body
}

/// A jute string or buffer.
fn jute_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = (b.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(b);
    out
}

/// A client that sends a hundred requests without waiting (reads, a
/// sync, a write among them) gets every reply in request order, reads
/// before the write see the old data and reads after it the new,
/// errors where they belong, and the watch event a read set before the
/// reply of the write that fired it (ZooKeeper's ordering guarantee).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (cluster, _) = zk_cluster().await;
    let writer = zk_connect(&cluster.zk_hosts(&[1])).await;
    ok("create /p", writer.create("/p", b"v1", PERSISTENT)).await;
    let mut s = raw_session(cluster.addrs(1).zk);
    let get = |xid: i32, watch: bool| request(xid, 4, &[&jute_bytes(b"/p"), &[watch as u8]]);
    let mut frames = vec![request(1, 9, &[&jute_bytes(b"/")])]; // sync
    frames.extend((2..=51).map(|xid| get(xid, false)));
    frames.push(get(52, true));
    frames.push(request(53, 3, &[&jute_bytes(b"/missing"), &[0]])); // exists
    frames.push(request(54, 12, &[&jute_bytes(b"/"), &[0]])); // getChildren2
    frames.push(request(
        55,
        5,
        &[
            &jute_bytes(b"/p"),
            &jute_bytes(b"v2"),
            &(-1i32).to_be_bytes(),
        ],
    )); // setData
    frames.extend((56..=105).map(|xid| get(xid, false)));
    let mut all = Vec::new();
    for f in &frames {
        all.extend((f.len() as i32).to_be_bytes());
        all.extend_from_slice(f);
    }
    s.write_all(&all).expect("send the pipeline");
    // (xid, err, data of a getData reply)
    let mut seen: Vec<(i32, i32, Option<Vec<u8>>)> = Vec::new();
    while seen.last().map(|r| r.0) != Some(105) {
        let reply = read_frame(&mut s);
        let xid = i32::from_be_bytes(reply[0..4].try_into().unwrap());
        let err = i32::from_be_bytes(reply[12..16].try_into().unwrap());
        let data = (xid > 1 && xid != 53 && xid != 54 && xid != 55 && err == 0).then(|| {
            let len = i32::from_be_bytes(reply[16..20].try_into().unwrap()) as usize;
            reply[20..20 + len].to_vec()
        });
        seen.push((xid, err, data));
    }
    let xids: Vec<i32> = seen.iter().map(|r| r.0).collect();
    let event = xids.iter().position(|x| *x == -1).expect("the watch event");
    let mut replies = xids.clone();
    replies.remove(event);
    assert_eq!(
        replies,
        (1..=105).collect::<Vec<_>>(),
        "replies in request order"
    );
    assert!(
        xids[event - 1] > 52 && xids[event + 1] == 55,
        "the event goes after the read that set it and right before the write's reply: {xids:?}"
    );
    for (xid, err, data) in &seen {
        match xid {
            2..=52 => assert_eq!(data.as_deref(), Some(&b"v1"[..]), "xid {xid}"),
            53 => assert_eq!(*err, -101, "exists on a missing node: NONODE"),
            56..=105 => assert_eq!(data.as_deref(), Some(&b"v2"[..]), "xid {xid}"),
            _ => assert_eq!(*err, 0, "xid {xid}"),
        }
    }
}
