//! The ZooKeeper workloads of `synod bench`, against synod's ZooKeeper
//! port or a real ZooKeeper ensemble: each client is one ZooKeeper
//! session on its own TCP connection (round-robin over --endpoints),
//! sending one request at a time.
//!
//! - `zk-create`: create a new persistent znode (a unique name per
//!   request) with a --value-size value;
//! - `zk-set`: setData on a random populated znode;
//! - `zk-get`: getData of a random populated znode (a local read: what
//!   ZooKeeper's reads are);
//! - `zk-sync-get`: sync, then getData (a read that sees every write
//!   committed before it).

use super::{ClientReport, Plan, Rng, Workload, ERROR_BACKOFF, REQUEST_TIMEOUT, SEED};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use synod_zk::jute::{frame_len, Reader};
use synod_zk::proto::{
    create_mode, decode_reply, encode_connect_request, encode_request, err, perms, xid, Acl,
    ConnectRequest, ConnectResponse, Id, ReplyHeader, Request, Response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Parent of the populated znodes.
const ROOT: &str = "/bench";
/// Parent of the znodes `zk-create` makes.
const CREATED: &str = "/bench-created";
/// The session timeout the bench asks for (the most ZooKeeper allows by
/// default): no pings are needed while requests flow.
const SESSION_TIMEOUT_MS: i32 = 40_000;
/// Clients populating at once.
const POPULATE_CLIENTS_MAX: u32 = 64;

/// One ZooKeeper session.
struct ZkConn {
    stream: BufReader<TcpStream>,
    xid: i32,
}

fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

impl ZkConn {
    async fn connect(endpoint: &str) -> Result<ZkConn, String> {
        let stream = TcpStream::connect(endpoint)
            .await
            .map_err(|e| format!("connect {endpoint}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut conn = ZkConn {
            stream: BufReader::new(stream),
            xid: 0,
        };
        let hello = encode_connect_request(&ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            time_out: SESSION_TIMEOUT_MS,
            session_id: 0,
            passwd: Bytes::from_static(&[0; 16]),
            read_only: Some(false),
        });
        conn.send(&hello).await?;
        let frame = conn.frame().await?;
        let answer = ConnectResponse::read(&mut Reader::new(&frame))
            .map_err(|e| format!("handshake: {e}"))?;
        if answer.time_out <= 0 {
            return Err(format!("{endpoint} refused the session"));
        }
        Ok(conn)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    async fn frame(&mut self) -> Result<Vec<u8>, String> {
        let mut head = [0u8; 4];
        self.stream
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let len = frame_len(head, 64 << 20).map_err(|e| e.to_string())?;
        let mut body = vec![0; len];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(body)
    }

    /// Sends `request` and waits for its reply (skipping watch events).
    async fn call(&mut self, request: &Request) -> Result<(ReplyHeader, Response), String> {
        self.xid += 1;
        let frame = encode_request(self.xid, request);
        self.send(&frame).await?;
        loop {
            let body = self.frame().await?;
            let (header, response) =
                decode_reply(request.op(), &body).map_err(|e| format!("reply: {e}"))?;
            if header.xid == xid::NOTIFICATION || header.xid == xid::PING {
                continue;
            }
            if header.xid != self.xid {
                return Err(format!("reply xid {} for request {}", header.xid, self.xid));
            }
            return Ok((header, response));
        }
    }

    /// A call that must succeed (or fail with one of `allowed`).
    async fn expect(&mut self, request: &Request, allowed: &[i32]) -> Result<Response, String> {
        let (header, response) = self.call(request).await?;
        if header.err == err::OK || allowed.contains(&header.err) {
            Ok(response)
        } else {
            Err(format!("{} failed: error {}", op_name(request), header.err))
        }
    }
}

fn op_name(r: &Request) -> &'static str {
    match r {
        Request::Create { .. } => "create",
        Request::SetData { .. } => "setData",
        Request::GetData { .. } => "getData",
        Request::Sync { .. } => "sync",
        _ => "request",
    }
}

fn znode(plan: &Plan, n: u64) -> String {
    format!("{ROOT}/{n:0w$}", w = plan.key_width)
}

fn create(path: String, data: Bytes) -> Request {
    Request::Create {
        kind: synod_zk::proto::op::CREATE,
        path,
        data,
        acl: open_acl(),
        flags: create_mode::PERSISTENT,
    }
}

/// Creates the parents and, for reads and sets, every znode.
pub(super) async fn populate(endpoints: &[String], plan: &Arc<Plan>, clients: u32) -> Result<()> {
    let mut first = ZkConn::connect(&endpoints[0])
        .await
        .map_err(anyhow::Error::msg)?;
    for parent in [ROOT, CREATED] {
        first
            .expect(&create(parent.into(), Bytes::new()), &[err::NODE_EXISTS])
            .await
            .map_err(anyhow::Error::msg)?;
    }
    if plan.workload == Workload::ZkCreate {
        return Ok(());
    }
    let started = Instant::now();
    let workers = clients.clamp(1, POPULATE_CLIENTS_MAX);
    let mut tasks = JoinSet::new();
    for w in 0..workers {
        let endpoint = endpoints[w as usize % endpoints.len()].clone();
        let plan = Arc::clone(plan);
        tasks.spawn(async move {
            let mut conn = ZkConn::connect(&endpoint).await?;
            let mut n = u64::from(w);
            while n < plan.keys {
                let request = create(znode(&plan, n), plan.value.clone());
                conn.expect(&request, &[err::NODE_EXISTS]).await?;
                n += u64::from(workers);
            }
            Ok::<(), String>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("populate task panicked")?
            .map_err(|e| anyhow::anyhow!("populating: {e}"))?;
    }
    println!(
        "populated {} znodes in {:.1}s",
        plan.keys,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Starts every client.
pub(super) fn spawn(
    tasks: &mut JoinSet<ClientReport>,
    endpoints: &[String],
    plan: &Arc<Plan>,
    clients: u32,
) {
    // Names made by this run differ from every earlier run's, so
    // zk-create can run again against the same servers.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        ^ u64::from(std::process::id());
    for i in 0..clients {
        let endpoint = endpoints[i as usize % endpoints.len()].clone();
        tasks.spawn(run_client(endpoint, Arc::clone(plan), run, i));
    }
}

async fn issue(
    conn: &mut ZkConn,
    plan: &Plan,
    n: u64,
    name: (u64, u32, u64),
) -> Result<(), String> {
    match plan.workload {
        Workload::ZkCreate => {
            let (run, index, seq) = name;
            let path = format!("{CREATED}/{run:x}-{index}-{seq}");
            conn.expect(&create(path, plan.value.clone()), &[]).await?;
        }
        Workload::ZkSet => {
            let request = Request::SetData {
                path: znode(plan, n),
                data: plan.value.clone(),
                version: -1,
            };
            conn.expect(&request, &[]).await?;
        }
        Workload::ZkGet | Workload::ZkSyncGet => {
            let path = znode(plan, n);
            if plan.workload == Workload::ZkSyncGet {
                conn.expect(&Request::Sync { path: path.clone() }, &[])
                    .await?;
            }
            let request = Request::GetData { path, watch: false };
            match conn.expect(&request, &[]).await? {
                Response::GetData { data, .. } if data.len() == plan.value.len() => {}
                _ => return Err("getData: unexpected answer".into()),
            }
        }
        other => unreachable!("{other:?} is not a ZooKeeper workload"),
    }
    Ok(())
}

async fn run_client(endpoint: String, plan: Arc<Plan>, run: u64, index: u32) -> ClientReport {
    let mut rng = Rng(SEED ^ u64::from(index).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut report = ClientReport::new();
    let mut conn = None;
    let mut seq = 0u64;
    loop {
        let sent = Instant::now();
        if sent >= plan.end {
            return report;
        }
        let warmup = sent < plan.measure_from;
        let result = async {
            if conn.is_none() {
                conn = Some(ZkConn::connect(&endpoint).await?);
            }
            let c = conn.as_mut().expect("just connected");
            seq += 1;
            let n = rng.below(plan.keys);
            match tokio::time::timeout(REQUEST_TIMEOUT, issue(c, &plan, n, (run, index, seq))).await
            {
                Ok(r) => r,
                Err(_) => Err("request timed out".to_string()),
            }
        }
        .await;
        let answered = Instant::now();
        plan.progress.note(result.is_ok());
        match result {
            Ok(()) if warmup => report.warmup_ops += 1,
            Ok(()) if answered > plan.end => report.late_ops += 1,
            Ok(()) => {
                let us = (answered - sent).as_micros() as u64;
                report.latency_us.saturating_record(us.max(1));
            }
            Err(message) => {
                // The session's state is unknown: start a fresh one.
                conn = None;
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

/// Refuses ZooKeeper workloads with flags that do not apply to them.
pub(super) fn check(workload: Workload, serializable: bool) -> Result<()> {
    if serializable {
        bail!("--serializable does not apply to ZooKeeper workloads (their reads are local)");
    }
    let _ = workload;
    Ok(())
}
