//! `synod bench`: a closed-loop load generator for any etcd v3 endpoint,
//! synod or etcd itself, so that both can be measured with one tool.
//!
//! ```text
//!   --endpoints  a ─ b ─ c
//!                │   │   │        one gRPC channel (HTTP/2 connection) per
//!   --conns      ch0 ch1 ch2 ...  --conns, round-robin over the endpoints
//!                │   │   │
//!   --clients    c0  c1  c2  c3 ... round-robin over the channels; each sends
//!                                   one request, waits, sends the next
//!
//!   time ──► [populate: get, mixed] [warmup: not recorded] [measured window]
//! ```
//!
//! A request is recorded when it was sent inside the measured window and
//! answered before the window closed, so `ops/s` is exactly the completed
//! requests divided by `--duration`. Every failed request sent after the
//! warmup began is counted and the first distinct messages are printed: a
//! benchmark that hides its errors measures nothing.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::lease_client::LeaseClient;
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use synod_proto::v3lockpb::lock_client::LockClient;
use synod_proto::v3lockpb::{LockRequest, UnlockRequest};
use tokio::task::JoinSet;
use tonic::Streaming;

mod connect;
pub(crate) use connect::Channel;

mod acks;
mod watch;
mod zk;

/// Upper bound on `--clients`: each is a task with its own histogram.
const CLIENTS_MAX: i64 = 10_000;
/// Upper bound on `--value-size`: etcd refuses requests over 1.5 MiB.
const VALUE_SIZE_MAX: i64 = 1 << 20;
/// Upper bound on `--keys`: keeps the populate phase finite in practice.
const KEYS_MAX: u64 = 100_000_000;
/// Upper bound on `--duration` and `--warmup`.
const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// A request not answered within this is an error (and frees its client),
/// which also bounds how long the run lasts past its window.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to open each gRPC connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A client pauses this long after an error, so an endpoint that refuses
/// at once does not turn the client into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Attempts per key while populating before the run is abandoned.
const POPULATE_ATTEMPTS_MAX: u32 = 3;
/// Distinct error messages kept for the report; the rest are only counted.
const ERROR_MESSAGES_MAX: usize = 5;
/// Latencies are recorded in microseconds, from 1 µs to this.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Percent of `mixed` requests that are puts; the rest are gets.
const MIXED_PUT_PERCENT: u64 = 10;
/// Seed of the clients' key choices: the same flags give the same keys.
const SEED: u64 = 0x5eed_bec4;

const _: () = assert!(REQUEST_TIMEOUT.as_micros() as u64 <= LATENCY_US_MAX);
const _: () = assert!(MIXED_PUT_PERCENT <= 100);

/// Flags of `synod bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// etcd v3 client endpoints, comma-separated HOST:PORT (an `http://`
    /// or `https://` prefix is accepted; TLS is on when --cacert is
    /// given). Works against synod or etcd.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_endpoint,
        default_value = "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379"
    )]
    endpoints: Vec<String>,
    /// What each request is: `put` a random key; `get` a random key
    /// (linearizable unless --serializable); `txn` a compare-and-put on a
    /// random key (if mod_revision > 0 then put, else put: the else branch
    /// is the version = 0 case, so the put always happens but the compare is
    /// evaluated); `mixed` 90% get / 10% put; `lease-grant` grants a
    /// 600 s lease; `lease-cycle` grants a lease, puts a random key
    /// under it and revokes it (one op: the three answered; sharded, the
    /// revoke waits for every shard to delete the lease's keys);
    /// `lease-keepalive` renews the client's own lease over
    /// its keep-alive stream; `lock` acquires then releases lock
    /// bench/<n> (v3lock, under the client's lease; --keys 1 makes every
    /// client contend for one lock); `watch` makes every client a watcher
    /// of one of --keys keys while --writers clients put to them, and
    /// counts events delivered (latency: put sent to event received).
    /// `zk-create`, `zk-set`, `zk-get`, `zk-sync-get` speak ZooKeeper to
    /// ZooKeeper client ports (synod's or a ZooKeeper ensemble's), one
    /// session per client: create a new znode, setData / getData on a
    /// random one of --keys populated znodes, or sync then getData.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// Writers for `--workload watch` (closed loop, puts to watched keys).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=CLIENTS_MAX))]
    writers: u32,
    /// Concurrent closed-loop clients: each sends one request, waits for the
    /// answer, then sends the next.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=CLIENTS_MAX))]
    clients: u32,
    /// gRPC connections in total, spread round-robin over the endpoints;
    /// clients share them round-robin. Default: one per endpoint (one per
    /// client when there are fewer clients than endpoints). Set it to
    /// --clients for one connection per client.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=CLIENTS_MAX))]
    conns: Option<u32>,
    /// Length of the measured window, e.g. 10s, 500ms, 2m (a bare number
    /// is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before the measured window that is not recorded (connections,
    /// caches, leader settle). 0s disables it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Bytes per value written.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=VALUE_SIZE_MAX))]
    value_size: u32,
    /// Size of the key space: keys are bench/<n>, n zero-padded, chosen
    /// uniformly. `get` and `mixed` write every key once before the warmup.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=KEYS_MAX))]
    keys: u64,
    /// Serve gets from the contacted member's local state (etcd's
    /// serializable reads) instead of linearizable reads. Only for `get`
    /// and `mixed`.
    #[arg(long)]
    serializable: bool,
    /// Server process ids (comma-separated) whose CPU time (utime + stime
    /// from /proc/PID/stat, Linux) is read at the start and the end of the
    /// measured window, to report server CPU seconds per 1,000 ops.
    #[arg(long, value_delimiter = ',')]
    cpu_pids: Vec<u32>,
    /// Write every put the server acknowledged (warmup included) to this
    /// file, one `key_number revision` per line, for a later
    /// --verify-acks. Only for `--workload put`.
    #[arg(long)]
    ack_log: Option<PathBuf>,
    /// Run no load: check that every put recorded in these --ack-log files
    /// (comma-separated) is still there, at its revision or a later one,
    /// through the first endpoint (linearizable reads); fails naming the
    /// lost keys. Give the same --keys as the runs that wrote the logs.
    #[arg(long, value_delimiter = ',')]
    verify_acks: Vec<PathBuf>,
    /// Authenticate as NAME:PASSWORD (etcd auth) once before the run;
    /// every request then carries the token, as etcd's clients do.
    #[arg(long, value_name = "NAME:PASSWORD")]
    user: Option<String>,
    /// Talk TLS, trusting servers whose certificate this CA bundle signed
    /// (etcdctl's --cacert).
    #[arg(long, value_name = "PATH")]
    cacert: Option<PathBuf>,
    /// Client certificate for servers that ask for one (etcdctl's
    /// --cert); needs --key.
    #[arg(long, value_name = "PATH", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's key (etcdctl's --key).
    #[arg(long, value_name = "PATH", requires = "cert")]
    key: Option<PathBuf>,
}

/// The kind of request every client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Put a random key.
    Put,
    /// Get a random key (linearizable unless --serializable).
    Get,
    /// Compare-and-put a random key.
    Txn,
    /// 90% get, 10% put.
    Mixed,
    /// Grant a lease.
    LeaseGrant,
    /// Grant a lease, put a key under it, revoke it.
    LeaseCycle,
    /// Renew the client's lease.
    LeaseKeepalive,
    /// Acquire and release a lock.
    Lock,
    /// Watchers receiving the puts of writers.
    Watch,
    /// ZooKeeper: create a new znode.
    ZkCreate,
    /// ZooKeeper: setData on a random znode.
    ZkSet,
    /// ZooKeeper: getData of a random znode (local read).
    ZkGet,
    /// ZooKeeper: sync, then getData.
    ZkSyncGet,
}

impl Workload {
    /// Workloads with reads populate every key first, or they would
    /// measure "not found".
    fn has_reads(self) -> bool {
        matches!(self, Workload::Get | Workload::Mixed)
    }

    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Txn => "txn",
            Workload::Mixed => "mixed",
            Workload::LeaseGrant => "lease-grant",
            Workload::LeaseCycle => "lease-cycle",
            Workload::LeaseKeepalive => "lease-keepalive",
            Workload::Lock => "lock",
            Workload::Watch => "watch",
            Workload::ZkCreate => "zk-create",
            Workload::ZkSet => "zk-set",
            Workload::ZkGet => "zk-get",
            Workload::ZkSyncGet => "zk-sync-get",
        }
    }

    /// Workloads spoken over the ZooKeeper protocol (--endpoints are
    /// ZooKeeper client ports).
    fn is_zk(self) -> bool {
        matches!(
            self,
            Workload::ZkCreate | Workload::ZkSet | Workload::ZkGet | Workload::ZkSyncGet
        )
    }
}

/// One request as sent.
#[derive(Clone, Copy, Debug)]
enum Op {
    Put,
    Get,
    Txn,
    LeaseGrant,
    LeaseCycle,
    KeepAlive,
    Lock,
}

/// TTL of the leases the lease and lock workloads grant: longer than any
/// sensible run, so no lease expires in the middle of one.
const BENCH_LEASE_TTL: i64 = 600;

/// One client's connections, and the lease and keep-alive stream the lease
/// and lock workloads keep for the whole run.
struct Conn {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    lock: LockClient<Channel>,
    lease_id: i64,
    keepalive: Option<(
        tokio::sync::mpsc::Sender<LeaseKeepAliveRequest>,
        Streaming<LeaseKeepAliveResponse>,
    )>,
}

impl Conn {
    async fn open(channel: Channel, workload: Workload) -> Result<Conn, String> {
        let mut conn = Conn {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            lock: LockClient::new(channel),
            lease_id: 0,
            keepalive: None,
        };
        if matches!(workload, Workload::LeaseKeepalive | Workload::Lock) {
            let grant = LeaseGrantRequest {
                ttl: BENCH_LEASE_TTL,
                id: 0,
            };
            conn.lease_id = conn
                .lease
                .lease_grant(grant)
                .await
                .map_err(|s| describe(&s))?
                .into_inner()
                .id;
        }
        if workload == Workload::LeaseKeepalive {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            // etcd sends no response headers before its first answer, so
            // the call returns only once a first keep-alive was sent.
            let first = LeaseKeepAliveRequest { id: conn.lease_id };
            tx.send(first)
                .await
                .map_err(|_| "keep-alive stream closed".to_string())?;
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            let mut responses = conn
                .lease
                .lease_keep_alive(stream)
                .await
                .map_err(|s| describe(&s))?
                .into_inner();
            match responses.message().await {
                Ok(Some(r)) if r.ttl > 0 => {}
                other => return Err(format!("first keep-alive: {other:?}")),
            }
            conn.keepalive = Some((tx, responses));
        }
        Ok(conn)
    }
}

/// Accepts HOST:PORT or http://HOST:PORT and returns HOST:PORT.
fn parse_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim();
    let hostport = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s)
        .trim_end_matches('/');
    let Some((host, port)) = hostport.rsplit_once(':') else {
        return Err(format!("{s}: expected HOST:PORT, e.g. 127.0.0.1:2379"));
    };
    if host.is_empty() {
        return Err(format!("{s}: the host is missing"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(hostport.to_string()),
        _ => Err(format!("{s}: bad port {port:?}")),
    }
}

/// Parses 10s, 500ms, 2m, 1h or a bare number of seconds (decimals allowed).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !(0.0..=DURATION_MAX.as_secs_f64()).contains(&seconds) {
        return Err(format!("{s:?}: must be between 0s and 24h"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// SplitMix64: a tiny seeded generator, so key choices need no dependency
/// and are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (the modulo bias is below 1e-10 for n <= KEYS_MAX).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Everything the clients share, fixed before the first request.
#[derive(Clone)]
struct Plan {
    workload: Workload,
    serializable: bool,
    keys: u64,
    key_width: usize,
    value: Bytes,
    /// Requests sent before this are warmup and not recorded.
    measure_from: Instant,
    /// No request is sent at or after this; answers after it are not recorded.
    end: Instant,
    /// Keep every acknowledged put for --ack-log.
    record_acks: bool,
    /// Answers and errors so far, for the once-a-second progress line.
    progress: Arc<Progress>,
}

/// What the clients did so far, counted as they go (a relaxed atomic add
/// per request) so that a long run shows it is alive.
#[derive(Default)]
struct Progress {
    answered: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
}

impl Progress {
    /// Counts one answer (`ok`) or error.
    fn note(&self, ok: bool) {
        let counter = if ok { &self.answered } else { &self.errors };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prints a progress line to stderr every second until `plan.end`: the
/// phase, the answers in the last second, and errors so far.
async fn report_progress(plan: Arc<Plan>) {
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= plan.end {
            return;
        }
        let answered = plan.progress.answered.load(Ordering::Relaxed);
        let errors = plan.progress.errors.load(Ordering::Relaxed);
        let phase = if now < plan.measure_from {
            format!("warmup, {:.0?} left", plan.measure_from - now)
        } else {
            let total = plan.end - plan.measure_from;
            format!("measured {:.0?} of {total:.0?}", now - plan.measure_from)
        };
        eprintln!(
            "bench: {phase}: {} answers/s, {errors} errors so far",
            answered - last
        );
        last = answered;
    }
}

impl Plan {
    fn key(&self, n: u64) -> Bytes {
        key_name(n, self.key_width)
    }

    fn pick(&self, rng: &mut Rng) -> Op {
        match self.workload {
            Workload::Put => Op::Put,
            Workload::Get => Op::Get,
            Workload::Txn => Op::Txn,
            Workload::Mixed if rng.below(100) < MIXED_PUT_PERCENT => Op::Put,
            Workload::Mixed => Op::Get,
            Workload::LeaseGrant => Op::LeaseGrant,
            Workload::LeaseCycle => Op::LeaseCycle,
            Workload::LeaseKeepalive => Op::KeepAlive,
            Workload::Lock => Op::Lock,
            Workload::Watch => Op::Put,
            Workload::ZkCreate | Workload::ZkSet | Workload::ZkGet | Workload::ZkSyncGet => {
                unreachable!("ZooKeeper workloads run in bench::zk")
            }
        }
    }

    fn put(&self, key: Bytes) -> PutRequest {
        PutRequest {
            key,
            value: self.value.clone(),
            ..Default::default()
        }
    }

    /// If mod_revision(key) > 0 then put, else put: the else branch is the
    /// version = 0 case (etcd compares only AND), so the put always happens.
    fn txn(&self, key: Bytes) -> TxnRequest {
        let put = RequestOp {
            request: Some(Request::RequestPut(self.put(key.clone()))),
        };
        TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Greater as i32,
                target: CompareTarget::Mod as i32,
                key,
                target_union: Some(TargetUnion::ModRevision(0)),
                range_end: Bytes::new(),
            }],
            success: vec![put.clone()],
            failure: vec![put],
        }
    }
}

/// Failures, by message; only the first `ERROR_MESSAGES_MAX` distinct
/// messages are kept, every failure is counted.
#[derive(Default)]
struct ErrorLog {
    count: u64,
    messages: BTreeMap<String, u64>,
    messages_dropped: u64,
}

impl ErrorLog {
    fn note(&mut self, message: String) {
        self.note_n(message, 1);
    }

    fn note_n(&mut self, message: String, n: u64) {
        self.count += n;
        if let Some(c) = self.messages.get_mut(&message) {
            *c += n;
        } else if self.messages.len() < ERROR_MESSAGES_MAX {
            self.messages.insert(message, n);
        } else {
            self.messages_dropped += n;
        }
    }

    fn merge(&mut self, other: ErrorLog) {
        for (message, n) in other.messages {
            self.note_n(message, n);
        }
        self.count += other.messages_dropped;
        self.messages_dropped += other.messages_dropped;
    }
}

/// What one client saw.
struct ClientReport {
    latency_us: Histogram<u64>,
    /// Answered requests sent during the warmup.
    warmup_ops: u64,
    /// Answered requests sent in the window but answered after it closed.
    late_ops: u64,
    /// Transactions whose compare held (the mod_revision > 0 branch).
    txn_succeeded: u64,
    /// Puts made by `watch` writers inside the window.
    writes: u64,
    /// Acknowledged puts `(key number, revision)`, with --ack-log.
    acks: Vec<(u64, i64)>,
    errors: ErrorLog,
    warmup_errors: ErrorLog,
}

impl ClientReport {
    fn new() -> ClientReport {
        ClientReport {
            latency_us: histogram(),
            warmup_ops: 0,
            late_ops: 0,
            txn_succeeded: 0,
            writes: 0,
            acks: Vec::new(),
            errors: ErrorLog::default(),
            warmup_errors: ErrorLog::default(),
        }
    }

    fn merge(&mut self, other: ClientReport) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share bounds");
        self.warmup_ops += other.warmup_ops;
        self.late_ops += other.late_ops;
        self.txn_succeeded += other.txn_succeeded;
        self.writes += other.writes;
        self.acks.extend(other.acks);
        self.errors.merge(other.errors);
        self.warmup_errors.merge(other.warmup_errors);
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Sends one request and checks its answer. `Ok(true)` for a transaction
/// whose compare held.
/// Sends one request; answers whether a txn's compare held and, for a put,
/// the revision the server acknowledged it at (0 otherwise).
async fn issue(conn: &mut Conn, plan: &Plan, op: Op, key: Bytes) -> Result<(bool, i64), String> {
    let succeeded = match op {
        Op::Put => {
            let response = conn.kv.put(plan.put(key)).await.map_err(|s| describe(&s))?;
            let revision = response.get_ref().header.as_ref().map_or(0, |h| h.revision);
            return Ok((false, revision));
        }
        Op::Get => {
            let request = RangeRequest {
                key,
                serializable: plan.serializable,
                ..Default::default()
            };
            let response = conn.kv.range(request).await.map_err(|s| describe(&s))?;
            if response.get_ref().kvs.len() != 1 {
                return Err("get: a populated key was not found".to_string());
            }
            false
        }
        Op::Txn => {
            let response = conn.kv.txn(plan.txn(key)).await.map_err(|s| describe(&s))?;
            response.get_ref().succeeded
        }
        Op::LeaseGrant => {
            let grant = LeaseGrantRequest {
                ttl: BENCH_LEASE_TTL,
                id: 0,
            };
            conn.lease
                .lease_grant(grant)
                .await
                .map_err(|s| describe(&s))?;
            false
        }
        Op::LeaseCycle => {
            let grant = LeaseGrantRequest {
                ttl: BENCH_LEASE_TTL,
                id: 0,
            };
            let lease = conn
                .lease
                .lease_grant(grant)
                .await
                .map_err(|s| describe(&s))?;
            let id = lease.into_inner().id;
            let put = PutRequest {
                lease: id,
                ..plan.put(key)
            };
            conn.kv.put(put).await.map_err(|s| describe(&s))?;
            conn.lease
                .lease_revoke(LeaseRevokeRequest { id })
                .await
                .map_err(|s| describe(&s))?;
            false
        }
        Op::KeepAlive => {
            let id = conn.lease_id;
            let (tx, responses) = conn.keepalive.as_mut().expect("keep-alive stream opened");
            tx.send(LeaseKeepAliveRequest { id })
                .await
                .map_err(|_| "keep-alive stream closed".to_string())?;
            match responses.message().await {
                Ok(Some(r)) if r.ttl > 0 => false,
                Ok(Some(_)) => return Err("keep-alive: lease not found".to_string()),
                Ok(None) => return Err("keep-alive stream ended".to_string()),
                Err(s) => return Err(describe(&s)),
            }
        }
        Op::Lock => {
            let request = LockRequest {
                name: key,
                lease: conn.lease_id,
            };
            let held = conn.lock.lock(request).await.map_err(|s| describe(&s))?;
            let key = held.into_inner().key;
            conn.lock
                .unlock(UnlockRequest { key })
                .await
                .map_err(|s| describe(&s))?;
            false
        }
    };
    Ok((succeeded, 0))
}

/// One closed-loop client: send, wait, record, repeat until the window ends.
async fn run_client(channel: Channel, plan: Arc<Plan>, index: u32) -> ClientReport {
    let mut rng = Rng(SEED ^ u64::from(index).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut report = ClientReport::new();
    let mut conn = match Conn::open(channel, plan.workload).await {
        Ok(c) => c,
        Err(message) => {
            report.errors.note(format!("setup: {message}"));
            return report;
        }
    };
    loop {
        let sent = Instant::now();
        if sent >= plan.end {
            return report;
        }
        let op = plan.pick(&mut rng);
        let n = rng.below(plan.keys);
        let result = issue(&mut conn, &plan, op, plan.key(n)).await;
        let answered = Instant::now();
        let warmup = sent < plan.measure_from;
        plan.progress.note(result.is_ok());
        if let Ok((_, revision)) = result {
            if plan.record_acks && revision > 0 {
                report.acks.push((n, revision));
            }
        }
        let result = result.map(|(succeeded, _)| succeeded);
        match result {
            Ok(succeeded) if warmup => {
                report.warmup_ops += 1;
                report.txn_succeeded += u64::from(succeeded);
            }
            Ok(_) if answered > plan.end => report.late_ops += 1,
            Ok(succeeded) => {
                let us = (answered - sent).as_micros() as u64;
                report.latency_us.saturating_record(us.max(1));
                report.txn_succeeded += u64::from(succeeded);
            }
            Err(message) => {
                let log = if warmup {
                    &mut report.warmup_errors
                } else {
                    &mut report.errors
                };
                log.note(message);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

/// Writes every key once, `clients` at a time, with progress on stderr.
async fn populate(channels: &[Channel], plan: &Arc<Plan>, clients: u32) -> Result<()> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    for i in 0..clients as usize {
        let mut kv = KvClient::new(channels[i % channels.len()].clone());
        let (plan, next, done) = (plan.clone(), next.clone(), done.clone());
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= plan.keys {
                    return Ok(());
                }
                populate_key(&mut kv, &plan, n).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    progress.tick().await;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(result) => result.context("populate task panicked")??,
            },
            _ = progress.tick() => {
                eprintln!("populating: {}/{} keys", done.load(Ordering::Relaxed), plan.keys);
            }
        }
    }
    eprintln!(
        "populated {} keys in {:.1} s",
        plan.keys,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn populate_key(kv: &mut KvClient<Channel>, plan: &Plan, n: u64) -> Result<()> {
    let mut last = String::new();
    for _ in 0..POPULATE_ATTEMPTS_MAX {
        match kv.put(plan.put(plan.key(n))).await {
            Ok(_) => return Ok(()),
            Err(s) => last = describe(&s),
        }
        tokio::time::sleep(ERROR_BACKOFF).await;
    }
    bail!(
        "populate: put {:?} failed {POPULATE_ATTEMPTS_MAX} times, last: {last}",
        plan.key(n)
    )
}

/// CPU seconds (user + system) a process has used so far, from
/// /proc/PID/stat fields 14 and 15.
fn cpu_seconds(pid: &str, ticks_per_second: f64) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {path} (is process {pid} running?)"))?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = stat
        .rsplit_once(')')
        .with_context(|| format!("{path}: unexpected format"))?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0], so field 14 (utime) is fields[11].
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{path}: field {} is not a number", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / ticks_per_second)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on every
/// common Linux build, used if getconf is missing).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds used by the servers (summed) and by this process.
struct CpuSample {
    servers: f64,
    bench: f64,
}

fn sample_cpu(pids: &[u32], tps: f64) -> Result<CpuSample> {
    let mut servers = 0.0;
    for pid in pids {
        servers += cpu_seconds(&pid.to_string(), tps)?;
    }
    Ok(CpuSample {
        servers,
        bench: cpu_seconds("self", tps)?,
    })
}

/// Runs the clients to the end of the window and samples CPU at its edges.
async fn drive(
    channels: &[Channel],
    plan: &Arc<Plan>,
    args: &BenchArgs,
) -> Result<(ClientReport, CpuSample, CpuSample)> {
    let tps = ticks_per_second();
    let mut tasks = JoinSet::new();
    if args.workload == Workload::Watch {
        watch::spawn(&mut tasks, channels, plan, args.clients, args.writers).await?;
    } else if args.workload.is_zk() {
        zk::spawn(&mut tasks, &args.endpoints, plan, args.clients);
    } else {
        for i in 0..args.clients {
            let channel = channels[i as usize % channels.len()].clone();
            tasks.spawn(run_client(channel, plan.clone(), i));
        }
    }
    let progress = tokio::spawn(report_progress(Arc::clone(plan)));
    tokio::time::sleep_until(plan.measure_from.into()).await;
    let before = sample_cpu(&args.cpu_pids, tps)?;
    tokio::time::sleep_until(plan.end.into()).await;
    let after = sample_cpu(&args.cpu_pids, tps)?;
    progress.abort();
    let mut total = ClientReport::new();
    // Every request has REQUEST_TIMEOUT, so the clients end within it.
    let grace = REQUEST_TIMEOUT + ERROR_BACKOFF + Duration::from_secs(1);
    let joined = tokio::time::timeout(grace, async {
        while let Some(report) = tasks.join_next().await {
            total.merge(report.context("bench client panicked")?);
        }
        anyhow::Ok(())
    })
    .await;
    match joined {
        Ok(result) => result?,
        Err(_) => bail!(
            "{} clients did not finish within {grace:?} of the window's end",
            tasks.len()
        ),
    }
    Ok((total, before, after))
}

/// Checks the flags that depend on each other; exits like clap does (usage
/// error, status 2) when they conflict.
fn validate(args: &BenchArgs) -> u32 {
    match check_flags(args) {
        Ok(conns) => conns,
        Err(message) => {
            clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, message + "\n").exit()
        }
    }
}

fn check_flags(args: &BenchArgs) -> Result<u32, String> {
    if args.endpoints.is_empty() {
        return Err("--endpoints: give at least one HOST:PORT".into());
    }
    if args.duration.is_zero() {
        return Err("--duration must be longer than 0s".into());
    }
    if args.writers != 1 && args.workload != Workload::Watch {
        return Err("--writers applies to --workload watch".into());
    }
    if args.ack_log.is_some() && args.workload != Workload::Put {
        return Err("--ack-log applies to --workload put".into());
    }
    if args.ack_log.is_some() && !args.verify_acks.is_empty() {
        return Err("--ack-log and --verify-acks: write a log or check one, not both".into());
    }
    if args.serializable && !args.workload.has_reads() && !args.workload.is_zk() {
        return Err("--serializable applies to reads: use it with --workload get or mixed".into());
    }
    let endpoints = args.endpoints.len() as u32;
    // Fewer clients than endpoints: one connection each (a lone client
    // can use only one endpoint).
    let conns = args.conns.unwrap_or(endpoints.min(args.clients));
    if conns < endpoints && conns < args.clients {
        return Err(format!(
            "--conns {conns} would leave some of the {endpoints} endpoints unused"
        ));
    }
    if conns > args.clients {
        return Err(format!(
            "--conns {conns} is more than --clients {}: connections would sit idle",
            args.clients
        ));
    }
    Ok(conns)
}

/// Key number `n` as a key: `bench/` and `n` zero-padded to `width`, so
/// the keys sort in number order.
fn key_name(n: u64, width: usize) -> Bytes {
    Bytes::from(format!("bench/{n:0width$}"))
}

/// Digits of the largest key number of a key space of `keys`.
fn key_width(keys: u64) -> usize {
    (keys - 1).max(1).to_string().len()
}

/// Runs `synod bench`.
pub async fn run(args: BenchArgs) -> Result<()> {
    let conns = validate(&args);
    let read_kind = match (args.workload.has_reads(), args.serializable) {
        (false, _) => "",
        (true, false) => ", linearizable reads",
        (true, true) => ", serializable reads",
    };
    if !args.verify_acks.is_empty() {
        let access = connect::Access::from_args(&args)?;
        let channels = access.open(&args.endpoints[..1], 1).await?;
        let width = key_width(args.keys);
        let key = |n: u64| key_name(n, width);
        return acks::verify(channels[0].clone(), &args.verify_acks, key).await;
    }
    let conns_text = if args.workload.is_zk() {
        format!("{} ZooKeeper sessions", args.clients)
    } else {
        format!("{conns} connection(s)")
    };
    println!(
        "synod bench: {}{read_kind}, {} clients, {conns_text} to {}, \
         {} keys, {} B values, {:?} measured after {:?} warmup",
        args.workload.name(),
        args.clients,
        args.endpoints.join(","),
        args.keys,
        args.value_size,
        args.duration,
        args.warmup,
    );
    if args.workload.is_zk() {
        zk::check(args.workload, args.serializable)?;
    }
    let channels = if args.workload.is_zk() {
        Vec::new()
    } else {
        connect::Access::from_args(&args)?
            .open(&args.endpoints, conns)
            .await?
    };
    let key_width = key_width(args.keys);
    let mut plan = Plan {
        workload: args.workload,
        serializable: args.serializable,
        keys: args.keys,
        key_width,
        value: Bytes::from(vec![b'v'; args.value_size as usize]),
        measure_from: Instant::now(),
        end: Instant::now(),
        record_acks: args.ack_log.is_some(),
        progress: Arc::default(),
    };
    if args.workload.is_zk() {
        zk::populate(&args.endpoints, &Arc::new(plan.clone()), args.clients).await?;
    } else if args.workload.has_reads() {
        populate(&channels, &Arc::new(plan.clone()), args.clients).await?;
    }
    plan.measure_from = Instant::now() + args.warmup;
    plan.end = plan.measure_from + args.duration;
    let plan = Arc::new(plan);
    let (mut report, before, after) = drive(&channels, &plan, &args).await?;
    print_report(&args, &report, &before, &after);
    if let Some(path) = &args.ack_log {
        acks::write_log(path, &mut report.acks)?;
        println!(
            "acknowledged puts: {} written to {}",
            report.acks.len(),
            path.display()
        );
    }
    if report.latency_us.is_empty() {
        bail!("no request succeeded in the measured window");
    }
    Ok(())
}

fn print_errors(title: &str, log: &ErrorLog) {
    if log.count == 0 {
        return;
    }
    println!("{title}: {}", log.count);
    for (message, n) in &log.messages {
        println!("  {n:>8} x {message}");
    }
    if log.messages_dropped > 0 {
        println!(
            "  {:>8} x (other messages, not shown)",
            log.messages_dropped
        );
    }
}

fn print_report(args: &BenchArgs, r: &ClientReport, before: &CpuSample, after: &CpuSample) {
    let h = &r.latency_us;
    let ops = h.len();
    let seconds = args.duration.as_secs_f64();
    let ms = |us: u64| us as f64 / 1000.0;
    let (p50, p99, p999, max) = (
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    );
    if args.workload == Workload::Watch {
        println!(
            "writes:     {} ({:.1}/s by {} writers); ops below are events delivered to {} watchers",
            r.writes,
            r.writes as f64 / seconds,
            args.writers,
            args.clients
        );
    }
    println!("ops:        {ops}");
    println!("ops/s:      {:.1}", ops as f64 / seconds);
    println!(
        "latency ms: p50 {p50:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}  (mean {:.3})",
        h.mean() / 1000.0
    );
    println!(
        "errors:     {} (warmup: {})",
        r.errors.count, r.warmup_errors.count
    );
    print_errors("errors in the window", &r.errors);
    print_errors("errors in the warmup", &r.warmup_errors);
    println!(
        "not recorded: {} warmup ops, {} answered after the window",
        r.warmup_ops, r.late_ops
    );
    if args.workload == Workload::Txn {
        println!("txn compares held (mod_revision > 0): {}", r.txn_succeeded);
    }
    let bench_cpu = after.bench - before.bench;
    let server_cpu = after.servers - before.servers;
    let per_kop = |cpu: f64| {
        if ops == 0 {
            f64::NAN
        } else {
            cpu / ops as f64 * 1000.0
        }
    };
    if !args.cpu_pids.is_empty() {
        println!(
            "server CPU: {server_cpu:.2} s ({:.4} s per 1000 ops)",
            per_kop(server_cpu)
        );
    }
    println!(
        "bench CPU:  {bench_cpu:.2} s ({:.4} s per 1000 ops)",
        per_kop(bench_cpu)
    );
    let server = if args.cpu_pids.is_empty() {
        String::new()
    } else {
        format!(
            " server_cpu_s={server_cpu:.3} server_cpu_s_per_kop={:.5}",
            per_kop(server_cpu)
        )
    };
    println!(
        "summary: workload={} clients={} ops={ops} ops_per_s={:.1} p50_ms={p50:.3} \
         p99_ms={p99:.3} p999_ms={p999:.3} max_ms={max:.3} errors={}{server} \
         bench_cpu_s={bench_cpu:.3}",
        args.workload.name(),
        args.clients,
        ops as f64 / seconds,
        r.errors.count,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `synod bench`'s flags on their own, to test parsing and conflicts.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn flags(line: &[&str]) -> Result<BenchArgs, clap::Error> {
        let argv = std::iter::once("bench").chain(line.iter().copied());
        Flags::try_parse_from(argv).map(|f| f.args)
    }

    #[test]
    fn durations_take_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "10x", "-1s", "25h", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn endpoints_are_host_port_with_an_optional_http_scheme() {
        assert_eq!(
            parse_endpoint("127.0.0.1:2379").as_deref(),
            Ok("127.0.0.1:2379")
        );
        assert_eq!(
            parse_endpoint("http://localhost:2379/").as_deref(),
            Ok("localhost:2379")
        );
        // TLS is chosen by --cacert; the scheme is only accepted.
        assert_eq!(parse_endpoint("https://a:1").as_deref(), Ok("a:1"));
        for bad in ["1.2.3.4", ":2379", "a:0", "a:99999", ""] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn defaults_spread_64_clients_over_one_connection_per_endpoint() {
        let args = flags(&[]).unwrap();
        assert_eq!(args.workload, Workload::Put);
        assert_eq!(args.clients, 64);
        assert_eq!(args.endpoints.len(), 3);
        assert_eq!(check_flags(&args), Ok(3));
        assert_eq!(args.duration, Duration::from_secs(10));
        assert_eq!(args.warmup, Duration::from_secs(2));
    }

    #[test]
    fn conflicting_flags_are_refused_with_a_reason() {
        let conflicts: &[(&[&str], &str)] = &[
            (&["--workload", "put", "--serializable"], "--serializable"),
            (&["--duration", "0s"], "--duration"),
            (&["--conns", "2"], "unused"),
            (&["--clients", "4", "--conns", "8"], "idle"),
            (&["--workload", "get", "--ack-log", "a"], "--ack-log"),
            (&["--ack-log", "a", "--verify-acks", "a,b"], "not both"),
        ];
        for (line, reason) in conflicts {
            let message = check_flags(&flags(line).unwrap()).unwrap_err();
            assert!(message.contains(reason), "{line:?}: {message}");
        }
        for bad in [
            &["--clients", "0"][..],
            &["--workload", "scan"],
            &["--value-size", "2000000"],
            &["--keys", "0"],
        ] {
            assert!(flags(bad).is_err(), "{bad:?} accepted");
        }
        let ok = flags(&["--workload", "mixed", "--serializable", "--conns", "64"]).unwrap();
        assert_eq!(check_flags(&ok), Ok(64));
        // One client over three endpoints: one connection, to the first.
        let lone = flags(&["--clients", "1"]).unwrap();
        assert_eq!(check_flags(&lone), Ok(1));
    }

    #[test]
    fn error_log_counts_everything_and_keeps_the_first_messages() {
        let mut a = ErrorLog::default();
        for i in 0..ERROR_MESSAGES_MAX + 3 {
            a.note(format!("m{i}"));
        }
        a.note("m0".into());
        assert_eq!(a.count, ERROR_MESSAGES_MAX as u64 + 4);
        assert_eq!(a.messages.len(), ERROR_MESSAGES_MAX);
        assert_eq!(a.messages["m0"], 2);
        assert_eq!(a.messages_dropped, 3);
        let mut b = ErrorLog::default();
        b.note("m0".into());
        b.merge(a);
        assert_eq!(b.count, ERROR_MESSAGES_MAX as u64 + 5);
        assert_eq!(b.messages["m0"], 3);
        let shown: u64 = b.messages.values().sum();
        assert_eq!(shown + b.messages_dropped, b.count);
    }

    #[test]
    fn keys_are_zero_padded_to_the_key_space() {
        let plan = Plan {
            workload: Workload::Mixed,
            serializable: false,
            keys: 10_000,
            key_width: 4,
            value: Bytes::new(),
            measure_from: Instant::now(),
            end: Instant::now(),
            record_acks: false,
            progress: Arc::default(),
        };
        assert_eq!(plan.key(42), Bytes::from_static(b"bench/0042"));
        assert_eq!(key_width(10_000), 4);
        let mut rng = Rng(SEED);
        let puts = (0..10_000)
            .filter(|_| matches!(plan.pick(&mut rng), Op::Put))
            .count();
        assert!((800..1200).contains(&puts), "mixed put share: {puts}/10000");
    }

    #[test]
    fn cpu_time_of_this_process_is_readable() {
        let seconds = cpu_seconds("self", ticks_per_second()).unwrap();
        assert!(seconds >= 0.0);
        assert!(cpu_seconds("0", 100.0).is_err());
    }
}
