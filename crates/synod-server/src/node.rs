//! The node facade the front ends call: start, write, read, status. It owns
//! the core loop's thread and the peer transport's tasks.

use crate::config::NodeConfig;
use crate::core::{Core, CoreParts, Input, LeaseAnswer, Published, GROUP};
use crate::hub::{stream_channel, Hub, HubInput, StreamId, WatchReceiver, WatchSpec};
use crate::transport::{run_sender, PeerService, PEER_QUEUE_MAX};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_group::{Group, GroupConfig};
use synod_kv::KvError;
use synod_kv::{KvStore, LEASE_TTL_MAX, LEASE_TTL_MIN_S};
use synod_paxos::{Config, Membership, NodeId, Replica};
use synod_proto::etcdserverpb::LeaseGrantRequest;
use synod_proto::etcdserverpb::{RangeRequest, RangeResponse};
use synod_proto::peerpb::peer_server::PeerServer;
use synod_proto::synodpb::{command::Op, Caller, Outcome};
use synod_storage::{GroupId, Identity, Storage, StorageError};
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

/// How this node makes a group: its settings and its replica restored
/// from the log (empty for a group never written). Used at start for
/// every group on disk, and by the core for a group a split made
/// (design 0016).
pub(crate) fn group_parts(
    config: &NodeConfig,
    storage: &Storage,
    id: GroupId,
    join: bool,
) -> Result<(GroupConfig, Replica<Bytes>), StartError> {
    let durable = storage.load(id)?;
    let voters: Vec<NodeId> = config.members.keys().copied().collect();
    let mut paxos = Config::majority(config.id, &voters);
    paxos.rng_seed = config.id.0 ^ 0x5eed ^ id.0.wrapping_mul(0x9e37_79b9);
    paxos.join = config.join || join;
    let replica = Replica::restore(paxos, durable, synod_paxos::Time(0))
        .map_err(|e| StartError::Config(e.to_string()))?;
    let sharded = config.shards.is_some();
    let group = GroupConfig {
        node: config.id,
        session: incarnation_base(config.id.0, 1 + id.0),
        snapshot_every: config.snapshot_every,
        compact_keep: synod_group::COMPACT_KEEP_SLOTS,
        session_idle_ms: synod_group::SESSION_IDLE_MS,
        initial_members: config
            .members
            .values()
            .map(|m| m.info(config.client_tls, config.peer_tls.is_some()))
            .collect(),
        record_applied: false,
        // With shards, group 1 is the meta group: its oracle numbers
        // every shard's writes, so revisions stay one order (design 0011);
        // every other group is a shard.
        timestamp_oracle: sharded && id == GROUP,
        stamped: sharded && id != GROUP,
        state_flush_rounds: config.state_flush_rounds,
    };
    Ok((group, replica))
}

/// Restores one group from storage: its replica from the log, its state
/// machine from its rows (which hold the log through the durable applied
/// slot; the replica replays only what follows). Every group starts with
/// the node's member list; a group's own configuration, once its log
/// recorded one, comes back with its log.
pub(crate) fn restore_group(
    config: &NodeConfig,
    storage: &Storage,
    id: GroupId,
) -> Result<Group, StartError> {
    let rows_applied = storage.load(id)?.applied;
    let kv = storage.load_store(id)?;
    let (group, replica) = group_parts(config, storage, id, false)?;
    let applied = replica.status().applied;
    if applied != rows_applied {
        return Err(StartError::Config(format!(
            "{id}: the state on disk holds the log through slot {rows_applied}, \
             but the log only proves slots through {applied} chosen"
        )));
    }
    let mut group = Group::new(group, replica, kv, synod_paxos::Time(0));
    // Until a watcher asks for previous values, events carry none: a put
    // over a long value then reads nothing from disk.
    group.set_prev_values_in_events(false);
    Ok(group)
}

#[path = "route.rs"]
mod route;

#[path = "backup.rs"]
mod backup;

/// The file in the data dir naming the split points it was made with.
pub(crate) const SHARDS_FILE: &str = "shards";

/// The file in the data dir that says the node joined a running cluster:
/// its groups' replicas then trust no configuration until they learn one,
/// on every start (a group hosted empty may still know none), whatever
/// `--initial-cluster-state` says later.
const JOINED_FILE: &str = "joined";

/// Keeps `--initial-cluster-state existing` across restarts (see
/// `JOINED_FILE`).
fn remember_join(config: &mut NodeConfig) -> Result<(), StartError> {
    let path = config.data_dir.join(JOINED_FILE);
    if config.join {
        if !path.exists() {
            std::fs::write(&path, "this node joined a running cluster\n")
                .map_err(|e| StartError::Config(format!("writing {}: {e}", path.display())))?;
        }
    } else if path.exists() {
        config.join = true;
    }
    Ok(())
}

/// The first line of the data dir's `shards` file: a sharded data dir,
/// whatever its split points (`--shards auto` starts with none).
/// How long a membership change waits for the shards to follow the meta
/// group (design 0019) before it answers anyway.
const SHARDS_FOLLOW_WAIT: Duration = Duration::from_secs(3);

/// A membership change refused because the shards have not all followed
/// the last one yet (design 0019).
const SHARDS_BEHIND: &str = "etcdserver: the shards have not all followed the last membership change yet; try again in a moment";

pub(crate) const SHARDS_HEADER: &str = "# sharded; the split points it started with:\n";

/// The shard map the cluster starts from is fixed when the data dir is
/// made: routing keys by other split points than their data was written
/// under would lose them (splits since are recorded in the shards
/// themselves). A new data dir records the map; an existing one must
/// match it (one made before shards, or without them, has no file and
/// takes none).
fn check_shards(config: &NodeConfig, existing: bool) -> Result<(), StartError> {
    let path = config.data_dir.join(SHARDS_FILE);
    let want = shards_text(config.shards.as_ref());
    let have = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(StartError::Config(format!(
                "reading {}: {e}",
                path.display()
            )))
        }
    };
    let show = |text: &str| {
        let points = text.strip_prefix(SHARDS_HEADER).unwrap_or(text);
        format!("[{}]", points.trim_end().replace('\n', ", "))
    };
    // Files written before the header held the points alone (at least one).
    let same =
        |have: &str| have == want || (!have.is_empty() && format!("{SHARDS_HEADER}{have}") == want);
    match (have, existing) {
        (Some(have), _) if same(&have) => Ok(()),
        (Some(have), _) if config.shards.is_none() => Err(StartError::Config(format!(
            "the data dir is sharded (split points {}): start with the same \
             --split-at, or --shards auto if it had none",
            show(&have)
        ))),
        (Some(have), _) => Err(StartError::Config(format!(
            "the data dir was made with split points {}, not {}: \
             start with the same --split-at",
            show(&have),
            show(&want)
        ))),
        (None, true) if config.shards.is_some() => Err(StartError::Config(
            "the data dir was made without --split-at or --shards auto: its keys are in one group"
                .into(),
        )),
        (None, true) => Ok(()),
        (None, false) => {
            if config.shards.is_some() {
                std::fs::write(&path, want)
                    .map_err(|e| StartError::Config(format!("writing {}: {e}", path.display())))?;
            }
            Ok(())
        }
    }
}

/// The header, then split points one per line, hex-escaped where not
/// printable ASCII; nothing when not sharded.
fn shards_text(map: Option<&crate::shards::ShardMap>) -> String {
    let Some(map) = map else {
        return String::new();
    };
    let mut out = SHARDS_HEADER.to_string();
    for s in map.splits() {
        out.push_str(&s.escape_ascii().to_string());
        out.push('\n');
    }
    out
}

/// Runs a thread's body; a panic in it ends the whole process.
///
/// The core loop and the watch hub are the node: if either dies, a process
/// that still accepted connections would answer nothing (or, worse, serve
/// reads from a state machine that stopped applying). Fail-stop instead,
/// as after a failed durable write: the panic message is printed by the
/// default hook, then the process aborts, and a supervisor restarts it
/// from its durable state.
pub(crate) fn fail_stop(what: &str, body: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        eprintln!("synod: the {what} panicked; stopping the process (fail-stop)");
        std::process::abort();
    }
}

/// The largest peer message: a batch of Paxos messages and forwarded
/// commands (each up to a client request's size), or a snapshot chunk.
pub(crate) const PEER_MESSAGE_MAX: usize = 1 << 30;

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
    /// Too many requests wait on this node already; nothing was done.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// The node is stopping.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The consensus core refused (membership change or leader transfer);
    /// the text says why.
    #[error("{0}")]
    Refused(String),
}

/// A running node.
pub struct Node {
    config: Arc<NodeConfig>,
    inputs: crate::inbox::Inbox,
    published: Arc<Mutex<Published>>,
    core: Mutex<Option<std::thread::JoinHandle<()>>>,
    storage_file: std::path::PathBuf,
    /// For snapshot files and received snapshots, off the core thread.
    storage: crate::streams::StorageHandle,
    shutdown: tokio::sync::watch::Sender<bool>,
    hub: Mutex<std::sync::mpsc::Sender<HubInput>>,
    hub_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    next_stream: AtomicU64,
    next_lease: AtomicU64,
    zk_listener: crate::core::ZkListenerSlot,
    metrics: Arc<crate::metrics::Metrics>,
    /// The shard map as this node's replicas hold it (sharded only).
    shard_view: Option<Arc<crate::shard_view::ShardView>>,
    reporter: crate::report::Reporter,
    report_clients: crate::report::ReportClients,
    peer_auth: crate::peer_auth::PeerAuth,
}

/// Opens the data dir and restores every group it holds (and those the
/// configuration asks for); blocking.
fn open_and_load(
    mut config: NodeConfig,
) -> Result<(NodeConfig, Storage, BTreeMap<GroupId, Group>), StartError> {
    let identity = Identity {
        cluster_id: config.cluster_id,
        node_id: config.id.0,
    };
    let opening = Instant::now();
    let storage = match Storage::open(&config.data_dir, identity) {
        // The cluster id was derived from the member list, and the list
        // changed since the data dir was made (members were added or
        // removed): the data dir's own cluster id is the cluster's.
        Err(StorageError::IdentityMismatch { stored, .. })
            if config.cluster_id_derived && stored.node_id == identity.node_id =>
        {
            config.cluster_id = stored.cluster_id;
            Storage::open(&config.data_dir, stored)?
        }
        other => other?,
    };
    // Every group on disk, and those the configuration asks for.
    let mut hosted: std::collections::BTreeSet<GroupId> = storage.groups()?.into_iter().collect();
    check_shards(&config, !hosted.is_empty())?;
    remember_join(&mut config)?;
    hosted.insert(GROUP);
    hosted.extend(config.groups.iter().map(|g| GroupId(*g)));
    if let Some(map) = &config.shards {
        hosted.extend(map.groups().map(GroupId));
    }
    let mut storage = storage;
    storage.set_quick_repair(config.quick_repair);
    // A snapshot being received when the process stopped is gone with its
    // stream; its rows become garbage.
    storage.discard_stages()?;
    let opened = opening.elapsed();
    let mut groups = BTreeMap::new();
    for id in hosted {
        groups.insert(id, restore_group(&config, &storage, id)?);
    }
    tracing::info!(
        node = %config.id,
        open_ms = opened.as_millis() as u64,
        load_ms = (opening.elapsed() - opened).as_millis() as u64,
        "storage opened and groups loaded"
    );
    Ok((config, storage, groups))
}

impl Node {
    /// Opens the data dir, restores the replica, starts the core loop, the
    /// peer listener and one sender per peer.
    pub async fn start(config: NodeConfig) -> Result<Arc<Node>, StartError> {
        // Opening a large file after a crash walks it (seconds): on a
        // blocking thread, so that nodes of one process open side by side
        // and the runtime's workers stay free.
        let (config, storage, groups) = tokio::task::spawn_blocking(move || open_and_load(config))
            .await
            .map_err(|e| StartError::Config(format!("opening the data dir panicked: {e}")))??;
        // The groups watchers follow: those that hold etcd keys.
        let revisions: BTreeMap<GroupId, i64> = match &config.shards {
            None => BTreeMap::from([(GROUP, groups[&GROUP].kv().revision())]),
            Some(_) => groups
                .iter()
                .filter(|(id, _)| **id != GROUP)
                .map(|(id, g)| (*id, g.kv().revision()))
                .collect(),
        };
        let shard_view = config
            .shards
            .clone()
            .map(|m| Arc::new(crate::shard_view::ShardView::new(m)));
        let maker_config = config.clone();
        let maker: crate::core::GroupMaker =
            Arc::new(move |storage: &Storage, id: GroupId, join: bool| {
                group_parts(&maker_config, storage, id, join).map_err(|e| e.to_string())
            });
        let started = Instant::now();
        let (inbox, outbox, rx) = crate::inbox::channel();
        let peer_auth = crate::peer_auth::PeerAuth::new(
            config.id.0,
            config.cluster_id,
            config.peer_secret.as_deref(),
        )
        .with_tls(config.peer_tls.clone());
        let peer_tls = match &config.peer_tls {
            Some(files) => Some(
                crate::tls::ServerTls::grpc(files.clone())
                    .map_err(|e| StartError::Config(format!("peer TLS: {e}")))?,
            ),
            None => None,
        };
        let mut peers = BTreeMap::new();
        let mut peer_addrs = BTreeMap::new();
        for (id, m) in &config.members {
            if *id == config.id {
                continue;
            }
            let (ptx, prx) = tokio::sync::mpsc::channel(PEER_QUEUE_MAX);
            tokio::spawn(run_sender(m.peer_addr, prx, peer_auth.clone()));
            peers.insert(*id, ptx);
            peer_addrs.insert(*id, m.peer_addr);
        }
        let listener = tokio::net::TcpListener::bind(config.me().peer_addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.me().peer_addr,
                source,
            })?;
        let storage_handle = crate::streams::StorageHandle::new(storage.clone());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let reports: crate::report::Reports = Arc::default();
        let reporter = crate::report::Reporter {
            id: config.id,
            client_addr: config.me().client_addr,
            http_addr: Arc::default(),
            metrics: metrics.clone(),
            reports: reports.clone(),
        };
        let service = PeerServer::new(PeerService::new(
            inbox.clone(),
            storage_handle.clone(),
            config.cluster_id,
            reporter.clone(),
            peer_auth.clone(),
        ))
        .max_decoding_message_size(PEER_MESSAGE_MAX)
        .max_encoding_message_size(PEER_MESSAGE_MAX);
        let (shutdown, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let router = tonic::transport::Server::builder().add_service(service);
            let mut tls_stopped = stopped.clone();
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let _ = match peer_tls {
                Some(tls) => {
                    let tls_stop = async move {
                        let _ = tls_stopped.wait_for(|s| *s).await;
                    };
                    router
                        .serve_with_incoming_shutdown(tls.incoming(listener, tls_stop), stop)
                        .await
                }
                None => {
                    let incoming = tonic::transport::server::TcpIncoming::from(listener)
                        .with_nodelay(Some(true));
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
            };
        });
        let published = Arc::new(Mutex::new(Published::default()));
        let zk_listener: crate::core::ZkListenerSlot = Arc::new(Mutex::new(None));
        let storage_file = storage.file().to_path_buf();
        let (hub_tx, hub_rx) = std::sync::mpsc::channel();
        let hub = Hub::new(
            revisions,
            inbox.sender(),
            Duration::from_millis(config.watch_progress_ms.max(1)),
            metrics.clone(),
        );
        let hub_thread = std::thread::Builder::new()
            .name(format!("synod-hub-{}", config.id.0))
            .spawn(move || fail_stop("watch hub", || hub.run(hub_rx)))
            .expect("spawn hub thread");
        let core = Core::new(CoreParts {
            id: config.id,
            cluster_id: config.cluster_id,
            groups,
            storage,
            inputs: rx,
            outbox,
            peers,
            tick: Duration::from_millis(config.tick_ms),
            published: published.clone(),
            started,
            hub: hub_tx.clone(),
            zk_listener: zk_listener.clone(),
            quota_bytes: config.quota_bytes,
            storage_file: storage_file.clone(),
            runtime: tokio::runtime::Handle::current(),
            peer_addrs,
            snapshot_chunk_bytes: config.snapshot_chunk_bytes,
            metrics: metrics.clone(),
            reports,
            peer_auth: peer_auth.clone(),
            shards: shard_view.clone(),
            first_map: config.shards.clone(),
            maker,
            split_bytes: config.split_bytes,
            split_writes_per_s: config.split_writes_per_s,
        });
        let handle = std::thread::Builder::new()
            .name(format!("synod-core-{}", config.id.0))
            .spawn(move || fail_stop("core loop", || core.run()))
            .expect("spawn core thread");
        let config_id = config.id.0;
        Ok(Arc::new(Node {
            zk_listener,
            config: Arc::new(config),
            inputs: inbox,
            published,
            core: Mutex::new(Some(handle)),
            storage_file,
            storage: storage_handle,
            shutdown,
            hub: Mutex::new(hub_tx),
            hub_thread: Mutex::new(Some(hub_thread)),
            next_stream: AtomicU64::new(1),
            next_lease: AtomicU64::new(incarnation_base(config_id, 3)),
            metrics,
            shard_view,
            reporter,
            report_clients: crate::report::ReportClients::default(),
            peer_auth,
        }))
    }

    fn to_hub(&self, input: HubInput) {
        let _ = self.hub.lock().expect("hub lock").send(input);
    }

    /// Opens a watch stream: watchers created on it answer into the
    /// returned receiver. Close it with `watch_close`.
    pub fn watch_open(&self) -> (StreamId, WatchReceiver) {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (sink, receiver) = stream_channel();
        self.to_hub(HubInput::Open { stream, sink });
        (stream, receiver)
    }

    /// Creates a watcher on `stream`; its `created` response (or refusal)
    /// arrives on the stream.
    pub fn watch_create(&self, stream: StreamId, spec: WatchSpec) -> Result<(), RequestError> {
        self.route_watch(stream, spec)
    }

    /// Cancels a watcher; the `canceled` response arrives on the stream.
    pub fn watch_cancel(&self, stream: StreamId, watch_id: i64) -> Result<(), RequestError> {
        // Through the core, so the cancel cannot overtake the create.
        self.input(Input::Query(Box::new({
            let hub = self.hub.lock().expect("hub lock").clone();
            move |_| {
                let _ = hub.send(HubInput::Cancel { stream, watch_id });
            }
        })))
    }

    /// Asks for a progress response carrying the revision every watcher
    /// of the stream has seen.
    pub fn watch_progress(&self, stream: StreamId) {
        self.to_hub(HubInput::Progress { stream });
    }

    /// Drops a stream and its watchers.
    pub fn watch_close(&self, stream: StreamId) {
        self.to_hub(HubInput::Close { stream });
    }

    /// Runs `f` against the local state machine (a serializable read).
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KvStore) -> T + Send + 'static,
    ) -> Result<T, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.input(Input::Query(Box::new(move |kv| {
            let _ = reply.send(f(kv));
        })))?;
        self.wait(rx).await
    }

    /// The keys attached to lease `id`, as this node's replicas hold them:
    /// the meta group's unsharded, every shard's stubs sharded (design
    /// 0017), in key order.
    pub async fn lease_keys(&self, id: i64) -> Result<Vec<bytes::Bytes>, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.input(Input::QueryAll(Box::new(move |stores| {
            let mut keys: Vec<bytes::Bytes> = stores
                .iter()
                .filter_map(|(_, kv)| kv.leases().get(id))
                .flat_map(|l| l.keys.iter().cloned())
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let _ = reply.send(keys);
        })))?;
        self.wait(rx).await
    }

    /// Waits until no shard holds a key of revoked lease `id` (design
    /// 0017). Returns whether the lease was being revoked; at once, false,
    /// in an unsharded cluster, where a revocation deletes the keys itself.
    pub async fn await_revocation(&self, id: i64) -> Result<bool, RequestError> {
        if self.shard_view.is_none() {
            return Ok(false);
        }
        let (reply, rx) = oneshot::channel();
        self.input(Input::AwaitRevocation { id, reply })?;
        self.wait(rx).await
    }

    /// Runs `f` against the local state machine at the end of the core's
    /// round: after every change applied so far was handed to the
    /// ZooKeeper listener (a ZooKeeper read, which must not show a change
    /// before its watch event).
    pub async fn zk_query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KvStore) -> T + Send + 'static,
    ) -> Result<T, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.input(Input::ZkQuery(Box::new(move |kv| {
            let _ = reply.send(f(kv));
        })))?;
        self.wait(rx).await
    }

    /// Plugs in the ZooKeeper front end's listener: from the next round
    /// on, it gets every change to the tree before any answer that shows
    /// it.
    pub fn zk_listen(&self, listener: crate::core::ZkListener) {
        *self.zk_listener.lock().expect("listener lock") = Some(listener);
    }

    /// An id no other node or incarnation is likely to pick (leases,
    /// ZooKeeper sessions).
    pub fn fresh_id(&self) -> i64 {
        self.fresh_lease_id()
    }

    /// Grants a lease: `id` 0 lets this node pick one; TTLs below the
    /// minimum are raised to it, as etcd does.
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<Outcome, RequestError> {
        let id = if id == 0 { self.fresh_lease_id() } else { id };
        let ttl = if ttl > LEASE_TTL_MAX {
            ttl
        } else {
            ttl.max(LEASE_TTL_MIN_S)
        };
        self.write(Op::LeaseGrant(LeaseGrantRequest { id, ttl }))
            .await
    }

    /// A positive lease id no other node or incarnation is likely to pick.
    fn fresh_lease_id(&self) -> i64 {
        loop {
            let n = self.next_lease.fetch_add(1, Ordering::Relaxed);
            let id = (incarnation_base(n, 4) >> 1) as i64;
            if id > 0 {
                return id;
            }
        }
    }

    /// A keep-alive: the lease's TTL, or `None` when it does not exist.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseAnswer, RequestError> {
        self.lease_query(id, true).await
    }

    /// Seconds left and granted TTL, or `None` when the lease does not
    /// exist.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<LeaseAnswer, RequestError> {
        self.lease_query(id, false).await
    }

    async fn lease_query(&self, id: i64, renew: bool) -> Result<LeaseAnswer, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.input(Input::LeaseQuery { id, renew, reply })?;
        self.wait(rx).await
    }

    fn input(&self, input: Input) -> Result<(), RequestError> {
        self.inputs.send(input).map_err(|refused| match refused {
            crate::inbox::Refused::Full => RequestError::TooManyRequests,
            crate::inbox::Refused::Stopped => RequestError::Stopped,
        })
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
    /// The core makes it a command of this incarnation's session, so a
    /// copy forwarded twice applies once.
    pub async fn write(&self, op: Op) -> Result<Outcome, RequestError> {
        self.route_write(op, None).await
    }

    /// A write in one group of the node, whatever keys it names.
    pub async fn write_in(&self, group: GroupId, op: Op) -> Result<Outcome, RequestError> {
        self.write_to(group, op, None).await
    }

    /// A write from an etcd client, to the shard that owns its keys:
    /// where it applies, the state machine checks that `caller` may make
    /// it (while auth is enabled).
    pub async fn write_as(&self, op: Op, caller: Caller) -> Result<Outcome, RequestError> {
        self.route_write(op, Some(caller)).await
    }

    /// Users, roles and whether auth is on, as last applied on this node.
    pub fn auth(&self) -> Arc<synod_kv::AuthStore> {
        Arc::clone(&self.published.lock().expect("status lock").auth)
    }

    /// Serves a range read: linearizable unless `serializable`.
    pub async fn range(
        &self,
        request: RangeRequest,
        serializable: bool,
    ) -> Result<RangeResponse, RequestError> {
        self.route_range(request, serializable).await
    }

    /// Waits until this node's replica of the meta group applied
    /// everything committed before now (a linearizable read of nothing
    /// there): its users, roles and leases are then as fresh as the
    /// cluster's when the call began.
    pub async fn catch_up_meta(&self) -> Result<(), RequestError> {
        let barrier = RangeRequest {
            key: bytes::Bytes::from_static(b"\0"),
            count_only: true,
            ..RangeRequest::default()
        };
        self.range_in(GROUP, barrier, false).await.map(drop)
    }

    /// A range read in one of the node's groups.
    pub async fn range_in(
        &self,
        group: GroupId,
        request: RangeRequest,
        serializable: bool,
    ) -> Result<RangeResponse, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.input(Input::Read {
            group,
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

    /// Every member as etcd lists it (the replicated member table, learners
    /// marked).
    pub fn members(&self) -> Vec<synod_proto::etcdserverpb::Member> {
        self.status().members
    }

    /// Starts a membership change towards `target` (this node must lead)
    /// and waits until it finished: the joint configuration and then the
    /// new one chosen.
    ///
    /// In a sharded cluster every shard's leader then proposes the same
    /// configuration in its own log (design 0019); this waits, within the
    /// request timeout (at most `SHARDS_FOLLOW_WAIT`: etcdctl gives up
    /// after 5 s), until this node's replica of every shard shows it, so
    /// that a removed node may be shut down on return. Past that the
    /// change stands and the shards follow in the background.
    pub async fn change_membership(&self, target: Membership) -> Result<(), RequestError> {
        if self.config.shards.is_some() {
            // One change at a time across the cluster: the shards' voters
            // then always overlap the meta group's, so some leader the
            // change keeps can follow it (design 0019).
            let current = self
                .status()
                .membership
                .as_ref()
                .map(|c| c.target().clone());
            if let Some(current) = current {
                if !self.wait_for_shards(current).await {
                    return Err(RequestError::Refused(SHARDS_BEHIND.into()));
                }
            }
        }
        let (reply, rx) = oneshot::channel();
        self.input(Input::ChangeMembership {
            target: target.clone(),
            reply,
        })?;
        self.wait(rx).await?.map_err(RequestError::Refused)?;
        self.wait_for(|s| {
            !s.membership_changing && s.membership.as_ref().is_some_and(|c| *c.target() == target)
        })
        .await?;
        if self.config.shards.is_some() && !self.wait_for_shards(target.clone()).await {
            tracing::warn!(
                %target,
                "the meta group changed its configuration; some shards have not yet: they follow in the background"
            );
        }
        Ok(())
    }

    /// Waits until every shard hosted here settled on `target`, within
    /// `SHARDS_FOLLOW_WAIT`; returns whether they did.
    async fn wait_for_shards(&self, target: Membership) -> bool {
        let wait = Duration::from_millis(self.config.request_timeout_ms).min(SHARDS_FOLLOW_WAIT);
        let deadline = Instant::now() + wait;
        loop {
            let (reply, rx) = oneshot::channel();
            let asked = self.input(Input::ShardsFollow {
                target: target.clone(),
                reply,
            });
            if asked.is_ok() && matches!(self.wait(rx).await, Ok(true)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(self.config.tick_ms.max(1) * 5)).await;
        }
    }

    /// Hands leadership to voter `to` (this node must lead) and waits until
    /// this node sees `to` lead.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), RequestError> {
        let (reply, rx) = oneshot::channel();
        self.input(Input::Transfer { to, reply })?;
        self.wait(rx).await?.map_err(RequestError::Refused)?;
        self.wait_for(|s| s.leader == Some(to) && s.transferring_to.is_none())
            .await
    }

    /// Waits until the published status satisfies `done`, within the
    /// request timeout.
    async fn wait_for(&self, done: impl Fn(&Published) -> bool) -> Result<(), RequestError> {
        let deadline = Instant::now() + Duration::from_millis(self.config.request_timeout_ms);
        while !done(&self.status()) {
            if Instant::now() >= deadline {
                return Err(RequestError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(self.config.tick_ms.max(1))).await;
        }
        Ok(())
    }

    /// The node's metrics, for front ends to record their requests in and
    /// for the HTTP endpoint to serve.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Tells the node where its HTTP endpoint (metrics, dashboard)
    /// listens, so that other members' dashboards can link to it.
    pub fn set_http_addr(&self, addr: std::net::SocketAddr) {
        *self.reporter.http_addr.lock().expect("http addr lock") = Some(addr);
    }

    /// This node's report of itself.
    pub fn report(&self) -> synod_proto::peerpb::NodeReport {
        self.reporter.report()
    }

    /// Every member's report, asked in parallel over the peer service (this
    /// node's own without asking), in member id order; a member that does
    /// not answer in time comes with the reason instead.
    pub async fn cluster_report(
        &self,
    ) -> Vec<(u64, Result<synod_proto::peerpb::NodeReport, String>)> {
        let mut asks = Vec::new();
        for m in self.members() {
            if m.id == self.config.id.0 {
                continue;
            }
            let addr = crate::config::peer_addr_of(&m);
            asks.push((m.id, addr));
        }
        let cluster_id = self.config.cluster_id;
        let answers = asks.into_iter().map(|(id, addr)| async move {
            let answer = match addr {
                Some(addr) => {
                    self.report_clients
                        .ask(addr, cluster_id, &self.peer_auth)
                        .await
                }
                None => Err("no peer address known".to_string()),
            };
            (id, answer)
        });
        let mut all = futures::future::join_all(answers).await;
        all.push((self.config.id.0, Ok(self.report())));
        all.sort_by_key(|(id, _)| *id);
        all
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
        self.storage.close();
        let _ = self.shutdown.send(true);
        let _ = self.input(Input::Shutdown);
        if let Some(h) = self.core.lock().expect("core lock").take() {
            let _ = h.join();
        }
        self.to_hub(HubInput::Shutdown);
        if let Some(h) = self.hub_thread.lock().expect("hub lock").take() {
            let _ = h.join();
        }
    }
}
