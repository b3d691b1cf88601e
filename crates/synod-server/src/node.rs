//! The node facade the front ends call: start, write, read, status. It owns
//! the core loop's thread and the peer transport's tasks.

use crate::config::{Member, NodeConfig};
use crate::core::{Core, CoreParts, Input, Published, GROUP};
use crate::transport::{run_sender, PeerService, PEER_QUEUE_MAX};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_kv::KvError;
use synod_kv::KvStore;
use synod_paxos::{Config, NodeId, Replica};
use synod_proto::etcdserverpb::{RangeRequest, RangeResponse};
use synod_proto::peerpb::peer_server::PeerServer;
use synod_proto::synodpb::{command::Op, Command, Outcome};
use synod_storage::{Identity, Storage, StorageError};
use tokio::sync::oneshot;

/// A client-id base no earlier life of this node used: node id, wall-clock
/// nanoseconds and process id mixed by SplitMix64, so ids of different nodes
/// and incarnations collide only by 64-bit chance.
pub(crate) fn incarnation_base(node: u64, salt: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = node
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(nanos)
        .wrapping_add((std::process::id() as u64) << 32)
        .wrapping_add(salt.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The largest peer message (a whole snapshot, until snapshots stream in
/// chunks).
const PEER_MESSAGE_MAX: usize = 1 << 30;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data dir could not be used.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The replica configuration is invalid.
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    /// A listen address is taken or unusable.
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Why a request failed; the etcd front end maps these to gRPC statuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Refused by the state machine.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// Not answered in time (no leader, partition, overload).
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The node is stopping.
    #[error("etcdserver: server stopped")]
    Stopped,
}

/// A running node.
pub struct Node {
    config: Arc<NodeConfig>,
    inputs: Mutex<Sender<Input>>,
    published: Arc<Mutex<Published>>,
    next_client: AtomicU64,
    core: Mutex<Option<std::thread::JoinHandle<()>>>,
    storage_file: std::path::PathBuf,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Node {
    /// Opens the data dir, restores the replica, starts the core loop, the
    /// peer listener and one sender per peer.
    pub async fn start(config: NodeConfig) -> Result<Arc<Node>, StartError> {
        let identity = Identity {
            cluster_id: config.cluster_id,
            node_id: config.id.0,
        };
        let storage = Storage::open(&config.data_dir, identity)?;
        let durable = storage.load(GROUP)?;
        let snapshot = storage.load_snapshot(GROUP)?;
        let kv = match &snapshot {
            Some((slot, data)) => crate::core::decode_snapshot(data).map_err(|e| {
                StartError::Config(format!("snapshot at slot {slot} does not decode: {e}"))
            })?,
            None => KvStore::default(),
        };
        let voters: Vec<NodeId> = config.members.keys().copied().collect();
        let mut paxos = Config::majority(config.id, &voters);
        paxos.rng_seed = config.id.0 ^ 0x5eed;
        let started = Instant::now();
        let replica = Replica::restore(paxos, durable, synod_paxos::Time(0))
            .map_err(|e| StartError::Config(e.to_string()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut peers = BTreeMap::new();
        for (id, m) in &config.members {
            if *id == config.id {
                continue;
            }
            let (ptx, prx) = tokio::sync::mpsc::channel(PEER_QUEUE_MAX);
            tokio::spawn(run_sender(m.peer_addr, prx));
            peers.insert(*id, ptx);
        }
        let listener = tokio::net::TcpListener::bind(config.me().peer_addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.me().peer_addr,
                source,
            })?;
        // Snapshots travel in one message for now: allow large ones.
        let service = PeerServer::new(PeerService::new(tx.clone()))
            .max_decoding_message_size(PEER_MESSAGE_MAX)
            .max_encoding_message_size(PEER_MESSAGE_MAX);
        let (shutdown, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
        let published = Arc::new(Mutex::new(Published::default()));
        let storage_file = storage.file().to_path_buf();
        let core = Core::new(CoreParts {
            id: config.id,
            cluster_id: config.cluster_id,
            replica,
            kv,
            snapshot,
            storage,
            inputs: rx,
            peers,
            tick: Duration::from_millis(config.tick_ms),
            published: published.clone(),
            started,
            snapshot_every: config.snapshot_every,
        });
        let handle = std::thread::Builder::new()
            .name(format!("synod-core-{}", config.id.0))
            .spawn(move || core.run())
            .expect("spawn core thread");
        let client_base = incarnation_base(config.id.0, 0);
        Ok(Arc::new(Node {
            config: Arc::new(config),
            inputs: Mutex::new(tx),
            published,
            next_client: AtomicU64::new(client_base),
            core: Mutex::new(Some(handle)),
            storage_file,
            shutdown,
        }))
    }

    fn input(&self, input: Input) -> Result<(), RequestError> {
        self.inputs
            .lock()
            .expect("inputs lock")
            .send(input)
            .map_err(|_| RequestError::Stopped)
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<T>) -> Result<T, RequestError> {
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(RequestError::Stopped),
            Err(_) => Err(RequestError::Timeout),
        }
    }

    /// Replicates one write and returns its outcome once applied here.
    pub async fn write(&self, op: Op) -> Result<Outcome, RequestError> {
        // Unique per node and request; the node id in the high bits keeps
        // clients of different nodes apart.
        // Unique across this node's restarts too: the state machine
        // remembers client ids from earlier lives, and a reused id would
        // make a new write look like a retry of an old one.
        let client = self.next_client.fetch_add(1, Ordering::Relaxed);
        let command = Command {
            client,
            seq: 1,
            op: Some(op),
        };
        let (reply, rx) = oneshot::channel();
        self.input(Input::Write { command, reply })?;
        self.wait(rx).await
    }

    /// Serves a range read: linearizable unless `serializable`.
    pub async fn range(
        &self,
        request: RangeRequest,
        serializable: bool,
    ) -> Result<RangeResponse, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.input(Input::Read {
            request,
            serializable,
            reply,
        })?;
        Ok(self.wait(rx).await??)
    }

    /// What the core loop last published.
    pub fn status(&self) -> Published {
        self.published.lock().expect("status lock").clone()
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Every member.
    pub fn members(&self) -> Vec<Member> {
        self.config.members.values().cloned().collect()
    }

    /// Size of the database file in bytes.
    pub fn db_size(&self) -> i64 {
        std::fs::metadata(&self.storage_file)
            .map(|m| m.len() as i64)
            .unwrap_or(0)
    }

    /// Resolves once `stop` was called: front ends stop serving then.
    pub async fn stopped(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Stops the listeners and the core loop and waits for the loop (the
    /// database closes cleanly).
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
        let _ = self.input(Input::Shutdown);
        if let Some(h) = self.core.lock().expect("core lock").take() {
            let _ = h.join();
        }
    }
}
