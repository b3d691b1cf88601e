//! A cluster of real `synod server` processes on loopback, and the helpers
//! every test file shares: free ports, a guard that kills its process when
//! dropped (a panicking test too), etcd clients with timeouts, `etcdctl`,
//! ZooKeeper's four-letter words; test certificates ([`certs`]) and the
//! kazoo scripts' runner ([`kazoo`]).
//!
//! Every node also serves the ZooKeeper protocol on a port of its own
//! (`--zk-addr`), with TTL nodes allowed (`--zk-extended-types`) and the
//! superuser `super:test` ([`ZK_SUPER_DIGEST`]).
//!
//! The binary is this package's `synod`, which Cargo builds before these
//! tests and names in `CARGO_BIN_EXE_synod`, so `cargo test --workspace`
//! always runs the current source. `SYNOD_BIN=/path/to/synod` tests another
//! build, a release binary for instance.

// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

pub mod certs;
pub mod kazoo;

use etcd_client::{Client, ConnectOptions};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a cluster may take to start and agree on a leader.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The ZooKeeper superuser every node of a [`Cluster`] accepts: ZooKeeper's
/// `superDigest` of `super:test` (its documentation's example).
pub const ZK_SUPER_DIGEST: &str = "super:D/InIHSb7yEEbrWz8b9l71RjZJU=";
/// What a client gives `addauth digest` to be that superuser.
pub const ZK_SUPER_CREDENTIALS: &str = "super:test";

/// The synod binary under test.
pub fn synod_bin() -> PathBuf {
    match std::env::var_os("SYNOD_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_synod")),
    }
}

/// What a one-node `synod server` with `extra` flags prints on stderr when
/// it refuses to start (it must refuse): how tests check that bad settings
/// stop it with the reason.
#[allow(dead_code)] // not every test binary checks bad settings
pub fn start_refusal(data_dir: &std::path::Path, extra: &[&str]) -> String {
    let out = std::process::Command::new(synod_bin())
        .args(["server", "--id", "1", "--peers", "1=127.0.0.1:1"])
        .args(["--client-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:1"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {extra:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// An address on loopback that is free now, never handed out before by this
/// test process.
///
/// Not "bind port 0 and release it": the kernel hands the released port out
/// again (seen: one node given the same port for clients and peers), and an
/// outgoing connection of an already running node may take it as its local
/// port before the new node binds it. So the port comes from below the
/// kernel's ephemeral range (net.ipv4.ip_local_port_range), which neither
/// bind(0) nor connect() ever picks, and is checked free by binding it.
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if low < 11_000 {
        // No room below the ephemeral range: fall back to the kernel's pick.
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        return l.local_addr().expect("local addr");
    }
    // 10000 ports below `low`, starting at a per-process offset so that test
    // processes run one after another do not start on the same ports.
    let span = 10_000;
    let start = std::process::id() * 7919 % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low - span + (start + n) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port below {low}");
}

/// Runs `fut`, failing the test if it takes longer than `limit`.
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    child: Option<Child>,
    /// Its stdout and stderr, appended to.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin args`, stdout and stderr appended to `log`.
    pub fn spawn(bin: &Path, args: &[String], log: &Path) -> Proc {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        writeln!(file, "=== {} {}", bin.display(), args.join(" ")).expect("write log");
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Proc {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// SIGKILL and reap: the process dies without running any of its code.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to completion with a deadline (killed past it) and
/// returns its output.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    run_with_input(cmd, "", limit)
}

/// `run` with `input` written to the command's stdin (then closed).
pub fn run_with_input(cmd: &mut Command, input: &str, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    run_child(&mut child, Some(input), limit, cmd)
}

fn run_child(child: &mut Child, stdin: Option<&str>, limit: Duration, cmd: &Command) -> Output {
    // Readers on their own threads, so a full pipe never blocks the child.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("write stdin");
        }
    }
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// `etcdctl` (API v3) against `endpoints`, with `stdin`; returns the output
/// whatever the exit status.
pub fn etcdctl_output(endpoints: &[String], args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=5s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start etcdctl (apt-get install etcd-client): {e}"));
    run_child(&mut child, stdin, Duration::from_secs(20), &cmd)
}

/// Runs a long-running etcdctl command (watch, elect) for `secs` seconds
/// and returns what it printed.
pub fn etcdctl_for(endpoints: &[String], secs: u32, args: &[&str]) -> String {
    let mut cmd = Command::new("timeout");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("{secs}s"))
        .arg("etcdctl")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args);
    let out = run(&mut cmd, Duration::from_secs(secs as u64 + 10));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `etcdctl` that must succeed; returns its stdout.
pub fn etcdctl(endpoints: &[String], args: &[&str], stdin: Option<&str>) -> String {
    let out = etcdctl_output(endpoints, args, stdin);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// `etcdctl member add NAME --learner --peer-urls=http://PEER` through
/// `endpoints`: the new member's id and the cluster id (hex) it must be
/// started with (`--initial-cluster-state existing --cluster-id HEX`).
pub fn member_add_learner(endpoints: &[String], name: &str, peer: SocketAddr) -> (u64, String) {
    let out = etcdctl(
        endpoints,
        &[
            "member",
            "add",
            name,
            "--learner",
            &format!("--peer-urls=http://{peer}"),
        ],
        None,
    );
    // "Member 4 added to cluster <hex>"
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(words.len() > 5 && words[0] == "Member", "{out}");
    let id = words[1]
        .parse()
        .unwrap_or_else(|_| panic!("a member id in {out:?}"));
    (id, words[5].to_string())
}

/// `etcdctl ... -w json`, parsed.
pub fn etcdctl_json(endpoints: &[String], args: &[&str], stdin: Option<&str>) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-w", "json"]);
    let out = etcdctl(endpoints, &all, stdin);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl {args:?}: not JSON ({e}): {out}"))
}

/// Connects an etcd client to `endpoints`; every request fails after 3 s
/// rather than hanging.
pub async fn connect(endpoints: &[String]) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3));
    Client::connect(endpoints, Some(options))
        .await
        .expect("etcd client")
}

/// `GET url` over HTTP/1.0 (one connection, read to its end): the status
/// code and the body. Enough for a node's HTTP endpoint, with no client
/// library.
pub fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr: SocketAddr = host.parse().expect("IP:PORT");
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// What a node says about itself in `Maintenance.Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The answering node (header member_id).
    pub member_id: u64,
    /// The leader it believes in (0: none).
    pub leader: u64,
    /// Its store revision (header revision).
    pub revision: i64,
    /// Its applied log index.
    pub applied: u64,
}

/// One node's addresses.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    /// Node id.
    pub id: u64,
    /// etcd API.
    pub client: SocketAddr,
    /// Peer traffic.
    pub peer: SocketAddr,
    /// ZooKeeper clients.
    pub zk: SocketAddr,
    /// The HTTP endpoint (metrics, health, dashboard).
    pub http: SocketAddr,
}

/// N `synod server` processes on loopback, data in a temporary directory.
/// Dropping it kills every process; if the test is panicking, the tail of
/// every node's log is printed first.
pub struct Cluster {
    procs: BTreeMap<u64, Proc>,
    nodes: BTreeMap<u64, Addrs>,
    /// Flags added to every node's `synod server` command line.
    extra: Vec<String>,
    /// Declared last: removed after the processes are dead (fields drop in
    /// order).
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts nodes 1..=n; see [`Cluster::wait_ready`].
    pub fn start(n: u64) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Starts nodes 1..=n with `extra` flags on every command line.
    pub fn start_with(n: u64, extra: &[&str]) -> Cluster {
        let mut c = Cluster::prepare(n, extra);
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Picks addresses and a data dir for nodes 1..=n without starting
    /// them (to prepare their data dirs first); `spawn` starts each.
    pub fn prepare(n: u64, extra: &[&str]) -> Cluster {
        let nodes = (1..=n)
            .map(|id| {
                (
                    id,
                    Addrs {
                        id,
                        client: free_addr(),
                        peer: free_addr(),
                        zk: free_addr(),
                        http: free_addr(),
                    },
                )
            })
            .collect();
        Cluster {
            procs: BTreeMap::new(),
            nodes,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Adds node `max id + 1` to the cluster's address book (so later
    /// command lines list it) and starts it with `extra` flags too (e.g.
    /// `--initial-cluster-state existing`). Returns its id.
    pub fn add_node(&mut self, extra: &[&str]) -> u64 {
        self.add_node_at(free_addr(), extra)
    }

    /// `add_node` with a peer address chosen beforehand (the one given to
    /// `member add`).
    pub fn add_node_at(&mut self, peer: SocketAddr, extra: &[&str]) -> u64 {
        let id = self.ids().into_iter().max().unwrap_or(0) + 1;
        self.nodes.insert(
            id,
            Addrs {
                id,
                client: free_addr(),
                peer,
                zk: free_addr(),
                http: free_addr(),
            },
        );
        let mut args = self.args(id);
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = self.dir.path().join(format!("node{id}.log"));
        self.procs
            .insert(id, Proc::spawn(&synod_bin(), &args, &log));
        id
    }

    /// Starts the member added at `peer` (`member add`) joining the running
    /// cluster `cluster_hex`; returns its id.
    pub fn join_node_at(&mut self, peer: SocketAddr, cluster_hex: &str) -> u64 {
        let args = [
            "--initial-cluster-state",
            "existing",
            "--cluster-id",
            cluster_hex,
        ];
        self.add_node_at(peer, &args)
    }

    /// Forgets node `id` (removed from the cluster): kills it if it runs.
    pub fn forget(&mut self, id: u64) {
        if let Some(mut p) = self.procs.remove(&id) {
            p.kill();
        }
        self.nodes.remove(&id);
    }

    /// The `--peers` value of this cluster.
    pub fn peers_flag(&self) -> String {
        self.nodes
            .values()
            .map(|a| format!("{}={}", a.id, a.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`'s addresses.
    pub fn addrs(&self, id: u64) -> Addrs {
        self.nodes[&id]
    }

    /// Node `id`'s data dir.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// The `synod server` arguments of node `id` (the same at every start).
    pub fn args(&self, id: u64) -> Vec<String> {
        let me = self.nodes[&id];
        let list = |f: fn(&Addrs) -> SocketAddr| {
            self.nodes
                .values()
                .map(|a| format!("{}={}", a.id, f(a)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut args: Vec<String> = vec![
            "server".into(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            self.data_dir(id).display().to_string(),
            "--client-addr".into(),
            me.client.to_string(),
            "--peer-addr".into(),
            me.peer.to_string(),
            "--peers".into(),
            list(|a| a.peer),
            "--clients".into(),
            list(|a| a.client),
            "--zk-addr".into(),
            me.zk.to_string(),
            "--zk-extended-types".into(),
            "--zk-super-digest".into(),
            ZK_SUPER_DIGEST.into(),
            "--metrics-addr".into(),
            me.http.to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }

    /// `synod restore FILE` into node `id`'s data dir, for this cluster's
    /// peers; panics if it fails, returns what it printed.
    pub fn restore(&self, id: u64, file: &Path) -> String {
        let mut cmd = Command::new(synod_bin());
        cmd.arg("restore")
            .arg(file)
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--id")
            .arg(id.to_string())
            .arg("--peers")
            .arg(self.peers_flag());
        let out = run(&mut cmd, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "synod restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts node `id`'s process (again, after a kill).
    pub fn spawn(&mut self, id: u64) {
        assert!(!self.procs.contains_key(&id), "node {id} already runs");
        let log = self.dir.path().join(format!("node{id}.log"));
        let p = Proc::spawn(&synod_bin(), &self.args(id), &log);
        self.procs.insert(id, p);
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        let mut p = self.procs.remove(&id).expect("node runs");
        p.kill();
    }

    /// Ids of the nodes whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.procs.keys().copied().collect()
    }

    /// `http://IP:PORT` of node `id`.
    pub fn endpoint(&self, id: u64) -> String {
        format!("http://{}", self.nodes[&id].client)
    }

    /// `http://IP:PORT` of node `id`'s HTTP endpoint (metrics, dashboard).
    pub fn http_url(&self, id: u64) -> String {
        format!("http://{}", self.nodes[&id].http)
    }

    /// Every node's endpoint as IP:PORT, without a scheme (etcdctl's form).
    pub fn host_ports(&self) -> Vec<String> {
        self.ids()
            .into_iter()
            .map(|id| self.nodes[&id].client.to_string())
            .collect()
    }

    /// Every node's endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        self.ids().into_iter().map(|id| self.endpoint(id)).collect()
    }

    /// ZooKeeper's connect string for nodes `ids`: `IP:PORT,IP:PORT,...`.
    pub fn zk_hosts(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|id| self.nodes[id].zk.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every running node accepts ZooKeeper connections (the
    /// listener opens just after the etcd API).
    pub fn wait_zk_listening(&mut self) {
        for id in self.running() {
            let zk = self.nodes[&id].zk;
            if !wait_listening(zk, READY_TIMEOUT) {
                self.assert_alive();
                panic!("node {id}: nothing listens at its ZooKeeper address {zk}");
            }
        }
    }

    /// A client of node `id` only.
    pub async fn client(&self, id: u64) -> Client {
        connect(&[self.endpoint(id)]).await
    }

    /// Node `id`'s status, or `None` if it does not answer.
    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        let mut c = self.client(id).await;
        let s = c.status().await.ok()?;
        let h = s.header()?;
        Some(NodeStatus {
            member_id: h.member_id(),
            leader: s.leader(),
            revision: h.revision(),
            applied: s.raft_applied_index(),
        })
    }

    /// Panics (with the node's log) if a node's process died on its own.
    pub fn assert_alive(&mut self) {
        for (id, p) in &mut self.procs {
            if let Some(status) = p.exited() {
                panic!(
                    "node {id} exited by itself ({status}); its log:\n{}",
                    tail(&p.log, 60)
                );
            }
        }
    }

    /// Waits until every running node answers and all name the same running
    /// leader; returns it.
    pub async fn wait_ready(&mut self) -> u64 {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            self.assert_alive();
            last.clear();
            for id in self.running() {
                last.push((id, self.status(id).await));
            }
            let leaders: Vec<u64> = last
                .iter()
                .filter_map(|(_, s)| s.map(|s| s.leader))
                .collect();
            if leaders.len() == last.len()
                && leaders[0] != 0
                && leaders.iter().all(|l| *l == leaders[0])
                && self.procs.contains_key(&leaders[0])
            {
                return leaders[0];
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no agreed leader within {READY_TIMEOUT:?}; last statuses: {last:?}");
    }

    /// Waits until node `id` has applied as much as every other running
    /// node, with no writes in flight; returns the common revision.
    pub async fn wait_caught_up(&mut self, id: u64, limit: Duration) -> i64 {
        let deadline = Instant::now() + limit;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            self.assert_alive();
            last.clear();
            for n in self.running() {
                last.push((n, self.status(n).await));
            }
            let mine = last.iter().find(|(n, _)| *n == id).and_then(|(_, s)| *s);
            if let Some(mine) = mine {
                if last.iter().all(|(_, s)| {
                    s.is_some_and(|s| s.revision == mine.revision && s.applied <= mine.applied)
                }) {
                    return mine.revision;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {id} did not catch up within {limit:?}; statuses: {last:?}");
    }

    /// The tail of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        tail(&self.dir.path().join(format!("node{id}.log")), lines)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.procs.values_mut() {
            p.kill();
        }
        if std::thread::panicking() {
            for id in self.ids() {
                eprintln!("---- node {id} log (tail) ----\n{}", self.log_tail(id, 40));
            }
        }
    }
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until something accepts TCP connections at `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Asks a ZooKeeper four-letter word (`ruok`, `srvr`, `mntr`...) at `addr`
/// and returns the answer, read until the server closes the connection.
pub fn four_letter_word(addr: SocketAddr, word: &str) -> String {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to {addr} for {word}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    conn.write_all(word.as_bytes())
        .unwrap_or_else(|e| panic!("send {word} to {addr}: {e}"));
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut conn, &mut answer)
        .unwrap_or_else(|e| panic!("read the answer to {word} from {addr}: {e}"));
    answer
}
