//! The core loop: the thin shell around the node's [`Group`]. One thread
//! owns the group and the store; it reads the clock, decodes peer batches,
//! writes each round durably and hands answers and events out.
//!
//! ```text
//!   inputs (peer batches, client requests) ──► group.step / group.request
//!   every round:  tick ─► ready ─► connect ─► send ─► persist + snapshot (one fsync)
//!                      ─► on_persisted ─► answers to clients, events to the hub
//! ```
//!
//! Everything that decides lives in `synod-group`, which the simulator runs
//! too. Nothing here blocks on the network: outgoing batches go to per-peer
//! sender tasks through bounded queues, and a full queue drops the batch
//! (Paxos retransmits).

use crate::codec;
use crate::hub::{HubInput, StreamId, WatchSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_group::{Answer, Group, GroupReady, GroupStatus, PeerItem, Request, Ticket};
use synod_kv::{error_outcome, KvError, KvStore, RangeAnswer, StateChanges};
use synod_paxos::{Configuration, Membership, NodeId, Slot, Time};
use synod_proto::etcdserverpb::Member as MemberInfo;
use synod_proto::etcdserverpb::{RangeRequest, RangeResponse, TxnRequest};
use synod_proto::mvccpb::Event;
use synod_proto::peerpb;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{Caller, Outcome};
use synod_storage::{GroupId, Storage};
use tokio::sync::{mpsc, oneshot};

pub use synod_group::LeaseAnswer;

/// The single Paxos group of an unsharded cluster.
pub const GROUP: GroupId = GroupId(1);
/// Inputs handled per round before the runtime loop runs: a bound on
/// latency under load, and the unit of batching.
const INPUTS_PER_ROUND_MAX: usize = 4096;
/// How often the database size is compared with the space quota.
const QUOTA_CHECK: Duration = Duration::from_secs(1);
/// How often requests whose client stopped waiting are looked for.
const ABANDON_CHECK: Duration = Duration::from_millis(100);
/// Rows of replaced state machines deleted per round: a store of any size
/// goes away without one long write.
const GARBAGE_ROWS_PER_ROUND: usize = 4096;
/// Compacted log records deleted per round at most (about 10 µs each:
/// deleting a compaction's 8 MiB in one round stalled writes, issue 14).
const LOG_GARBAGE_PER_ROUND: usize = 512;

/// Reads the local state machine on the core thread.
pub type Query = Box<dyn FnOnce(&KvStore) + Send>;
/// A closure run against every group's store on the node.
pub type QueryAll = Box<dyn FnOnce(Vec<(GroupId, &KvStore)>) + Send>;
/// What the ZooKeeper front end is told, on the core thread.
pub enum ZkFeed<'a> {
    /// A round's changes to the tree, in order, and the revision after.
    Events(&'a [synod_kv::zk::ZkEvent], i64),
    /// The state was replaced by a snapshot: changes in between are not
    /// known one by one, so every watcher must re-register (ZooKeeper
    /// clients do, with setWatches, when their connection drops).
    Reset,
}

/// Called on the core thread with each [`ZkFeed`]; it must not block (it
/// queues).
pub type ZkListener = Arc<dyn Fn(ZkFeed<'_>) + Send + Sync>;
/// Where the ZooKeeper front end plugs its listener in, once it starts.
pub type ZkListenerSlot = Arc<Mutex<Option<ZkListener>>>;

/// Work for the core loop.
pub enum Input {
    /// Messages from a peer.
    Peer(peerpb::Batch),
    /// A client write; answered when it applies here.
    Write {
        /// The group that owns the keys.
        group: GroupId,
        /// What to do; the group makes it a command of its session.
        op: Op,
        /// The etcd client that sent it, whose permissions the state
        /// machine checks (`None`: the node's own writes).
        caller: Option<Caller>,
        /// Where the outcome goes.
        reply: oneshot::Sender<Outcome>,
    },
    /// A write its node stamped from the oracle: a read-only txn at a
    /// timestamp, one shard's part of a read across shards.
    WriteStamped {
        /// The shard.
        group: GroupId,
        /// The read-only txn.
        op: Op,
        /// The oracle's timestamp.
        stamp: i64,
        /// Where the outcome goes.
        reply: oneshot::Sender<Outcome>,
    },
    /// Timestamps from the meta group's oracle (`None`: none could be
    /// handed out now).
    Timestamps {
        /// How many.
        count: u32,
        /// Where they go.
        reply: oneshot::Sender<synod_group::Timestamps>,
    },
    /// A client read.
    Read {
        /// The group that owns the keys.
        group: GroupId,
        /// The request.
        request: RangeRequest,
        /// Serve from local state without a linearizability check.
        serializable: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<RangeResponse, KvError>>,
    },
    /// A watcher to register: its history comes from the store here, then
    /// the hub takes over.
    Watch {
        /// The client stream it belongs to.
        stream: StreamId,
        /// What to watch, from which revision.
        spec: WatchSpec,
        /// A client's create (true) or the hub's resync (false).
        announce: bool,
    },
    /// A keep-alive (`renew`) or time-to-live question for the leader.
    LeaseQuery {
        /// The lease.
        id: i64,
        /// Restart the lease's time.
        renew: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<LeaseAnswer>,
    },
    /// Runs a closure against the local store (serializable reads of
    /// leases, alarms, hashes and snapshots).
    Query(Query),
    /// Answers once no shard holds a key of revoked lease `id` (design
    /// 0017); false at once when it is not being revoked.
    AwaitRevocation {
        id: i64,
        reply: oneshot::Sender<bool>,
    },
    /// Runs a closure against every group's store on this node.
    QueryAll(QueryAll),
    /// Runs a closure against the local store at the end of the round,
    /// once every change applied so far has been handed out: a ZooKeeper
    /// read, which must not show data whose watch event its client has
    /// not been sent yet (ZooKeeper's ordering guarantee).
    ZkQuery(Query),
    /// Start a membership change (this node must lead).
    ChangeMembership {
        /// The configuration wanted.
        target: Membership,
        /// Whether the change was started.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Whether every shard hosted here settled on `target` (design 0019).
    ShardsFollow {
        /// The meta group's configuration.
        target: Membership,
        /// The answer.
        reply: oneshot::Sender<bool>,
    },
    /// A snapshot from a leader, received whole into a storage stage and
    /// loaded: install it, or discard the stage.
    Staged {
        /// The group it is for.
        group: GroupId,
        /// The slot it covers.
        slot: Slot,
        /// The configuration in effect at `slot`.
        membership: Option<Configuration>,
        /// The storage stage holding its rows.
        stage: u64,
        /// The store loaded from the stage.
        kv: Box<synod_kv::KvStore>,
    },
    /// Hand leadership to another voter (this node must lead).
    Transfer {
        /// The voter to lead next.
        to: NodeId,
        /// Whether the transfer was started.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Move a shard past every revision handed out so far (the watch
    /// hub asks, for a watch over several shards).
    Fence {
        /// The shard.
        group: GroupId,
    },
    /// Split the shard holding `at` there (an operator's request, design
    /// 0016): this node asks the oracle for the new group's id and
    /// proposes the split in the shard's log.
    Split {
        /// The split point: the first key of the new shard.
        at: bytes::Bytes,
        /// The split's outcome (the shard that stayed) or a refusal.
        reply: oneshot::Sender<Outcome>,
    },
    /// Answers once every group's rows on disk hold what it applied when
    /// this arrived (they are written every few rounds, not every round):
    /// a backup reads the rows, not the store in memory.
    WriteRows {
        /// Told when the rows are written.
        reply: oneshot::Sender<()>,
    },
    /// Stop the loop.
    Shutdown,
}

impl Input {
    /// Which bound of the inbox this input counts against.
    pub fn class(&self) -> crate::inbox::Class {
        use crate::inbox::Class;
        match self {
            Input::Peer(_) => Class::Peer,
            Input::Write { .. }
            | Input::WriteStamped { .. }
            | Input::Timestamps { .. }
            | Input::Read { .. }
            | Input::LeaseQuery { .. }
            | Input::Query(_)
            | Input::QueryAll(_)
            | Input::AwaitRevocation { .. }
            | Input::ZkQuery(_) => Class::Client,
            Input::Watch { announce, .. } => {
                if *announce {
                    Class::Client
                } else {
                    Class::Internal
                }
            }
            Input::ChangeMembership { .. }
            | Input::ShardsFollow { .. }
            | Input::Split { .. }
            | Input::Fence { .. }
            | Input::Transfer { .. }
            | Input::Staged { .. }
            | Input::WriteRows { .. }
            | Input::Shutdown => Class::Internal,
        }
    }
}

/// Where a client's answer goes.
enum Reply {
    Write(oneshot::Sender<Outcome>),
    Read(oneshot::Sender<Result<RangeResponse, KvError>>),
    Lease(oneshot::Sender<LeaseAnswer>),
    Timestamps(oneshot::Sender<synod_group::Timestamps>),
    /// A fence's timestamp (see `Core::fence`): the answer becomes the
    /// shard's stamped no-op.
    Fence {
        group: GroupId,
    },
    /// An answer nobody waits for (a fence's no-op).
    Discard,
    /// A shard's answer to the detach of a revoked lease's keys: recorded
    /// in the meta group (see `revocations`).
    Detach {
        leases: Vec<i64>,
    },
    /// The membership follower's barrier on the meta group (see
    /// `members`).
    Follow,
    /// A shard's question for stamps (see `GroupReady::stamps`): the
    /// answer goes back to the shard, never to a client. Asked at `at`: a
    /// question lost on the way to the meta leader is given up after
    /// `STAMPS_ABANDON` (the shard has asked again long before).
    Stamps {
        group: GroupId,
        question: u64,
        at: Instant,
    },
    /// A split waiting for its new group's id (a timestamp, unique in the
    /// cluster): the answer becomes the split command.
    SplitId {
        group: GroupId,
        at: bytes::Bytes,
        /// `None`: the loop's own split (by size), nobody waits.
        reply: Option<oneshot::Sender<Outcome>>,
    },
}

impl Reply {
    fn is_closed(&self) -> bool {
        match self {
            Reply::Write(tx) => tx.is_closed(),
            Reply::Read(tx) => tx.is_closed(),
            Reply::Lease(tx) => tx.is_closed(),
            Reply::Timestamps(tx) => tx.is_closed(),
            Reply::Stamps { at, .. } => at.elapsed() > STAMPS_ABANDON,
            Reply::SplitId { reply, .. } => reply.as_ref().is_some_and(|r| r.is_closed()),
            Reply::Fence { .. } | Reply::Discard | Reply::Detach { .. } | Reply::Follow => false,
        }
    }

    fn send(self, answer: Answer, runtime: &tokio::runtime::Handle) {
        match (self, answer) {
            (Reply::Write(tx), Answer::Write(outcome)) => {
                let _ = tx.send(outcome);
            }
            (Reply::Read(tx), Answer::Read(Ok(answer))) if answer.needs_disk() => {
                // Long values come from disk on a reader thread, from the
                // view pinned when the read was served; the core goes on.
                runtime.spawn_blocking(move || {
                    crate::node::fail_stop("range reader", || {
                        let _ = tx.send(Ok(answer.fill()));
                    })
                });
            }
            (Reply::Read(tx), Answer::Read(result)) => {
                let _ = tx.send(result.map(RangeAnswer::fill));
            }
            (Reply::Lease(tx), Answer::Lease(answer)) => {
                let _ = tx.send(answer);
            }
            (Reply::Timestamps(tx), Answer::Timestamps(answer, _)) => {
                let _ = tx.send(answer);
            }
            // A detach refused before it reached a shard: sent again later.
            (Reply::Discard | Reply::Detach { .. } | Reply::Follow, _) => {}
            (_, answer) => panic!("answer {answer:?} for a request of another kind"),
        }
    }
}

/// What the loop publishes for status calls: the group's status, and the
/// member list as etcd shows it. Derefs to the group's status.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// The group's status.
    pub group: GroupStatus,
    /// Every member with its addresses, learners marked (etcd's member
    /// list).
    pub members: Vec<MemberInfo>,
    /// Users, roles and whether auth is on, as last applied here.
    pub auth: Arc<synod_kv::AuthStore>,
}

impl std::ops::Deref for Published {
    type Target = GroupStatus;

    fn deref(&self) -> &GroupStatus {
        &self.group
    }
}

/// What the loop starts from.
pub struct CoreParts {
    /// This node.
    pub id: NodeId,
    /// Checked on every peer batch.
    pub cluster_id: u64,
    /// Every group this node hosts, restored from storage; `GROUP` among
    /// them.
    pub groups: BTreeMap<GroupId, Group>,
    /// The node's database.
    pub storage: Storage,
    /// Where inputs arrive.
    pub inputs: Receiver<Input>,
    /// Told of every input taken, for the inbox's bounds.
    pub outbox: crate::inbox::Outbox,
    /// Per-peer send queues.
    pub peers: BTreeMap<NodeId, mpsc::Sender<peerpb::Batch>>,
    /// Timer period.
    pub tick: Duration,
    /// Status shared with the facade.
    pub published: Arc<Mutex<Published>>,
    /// The local clock's origin (the group's `Time(0)`).
    pub started: Instant,
    /// Where applied events go for watchers.
    pub hub: std::sync::mpsc::Sender<HubInput>,
    /// Where changes to the ZooKeeper tree go (its front end's watches).
    pub zk_listener: ZkListenerSlot,
    /// Raise NOSPACE when the database file grows past this many bytes.
    pub quota_bytes: u64,
    /// The database file, whose size the quota limits.
    pub storage_file: std::path::PathBuf,
    /// Where peer sender tasks run.
    pub runtime: tokio::runtime::Handle,
    /// The address each of `peers` sends to.
    pub peer_addrs: BTreeMap<NodeId, std::net::SocketAddr>,
    /// Bytes of rows per snapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Where the loop's figures go.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where the loop puts each group's line of the node's report.
    pub reports: crate::report::Reports,
    /// Signs the peer calls the loop opens.
    pub peer_auth: crate::peer_auth::PeerAuth,
    /// The key space's shards as this node's replicas hold them, when it
    /// is sharded (`GROUP` is then the meta group and holds no etcd
    /// keys); the loop changes it as shards split.
    pub shards: Option<Arc<crate::shard_view::ShardView>>,
    /// The shards the cluster was started with (their ranges, for stores
    /// that do not record one yet).
    pub first_map: Option<crate::shards::ShardMap>,
    /// Makes the groups a split adds.
    pub maker: GroupMaker,
    /// Split a shard this node leads once its data passes this many
    /// bytes (0: never by size).
    pub split_bytes: u64,
    /// Split a shard this node leads once it applies this many writes a
    /// second (0: never by load).
    pub split_writes_per_s: u64,
}

/// Makes a group's settings and replica from its durable state (empty for
/// a new group): the node's recipe, so the loop can host groups that
/// splits make (design 0016). With `join`, the replica trusts no
/// configuration until it learns one (a group hosted empty, whose
/// members may have changed since the node started: design 0019).
pub type GroupMaker = Arc<
    dyn Fn(
            &Storage,
            GroupId,
            bool,
        )
            -> Result<(synod_group::GroupConfig, synod_paxos::Replica<bytes::Bytes>), String>
        + Send
        + Sync,
>;

/// The loop's state.
pub struct Core {
    id: NodeId,
    /// Every group this node hosts. The etcd front end speaks to `GROUP`;
    /// each round's writes of all of them go to disk in one batch.
    groups: BTreeMap<GroupId, Group>,
    storage: Storage,
    started: Instant,
    inputs: Receiver<Input>,
    outbox: crate::inbox::Outbox,
    peers: BTreeMap<NodeId, mpsc::Sender<peerpb::Batch>>,
    peer_addrs: BTreeMap<NodeId, std::net::SocketAddr>,
    cluster_id: u64,
    tick: Duration,
    published: Arc<Mutex<Published>>,
    hub: std::sync::mpsc::Sender<HubInput>,
    zk_listener: ZkListenerSlot,
    /// ZooKeeper reads waiting for the end of the round.
    zk_queries: Vec<Query>,
    /// `WriteRows` callers, told after the next write.
    rows_waiting: Vec<oneshot::Sender<()>>,
    /// Batches for each peer gathered over one pass of the groups.
    outgoing: BTreeMap<NodeId, peerpb::Batch>,
    quota_bytes: u64,
    storage_file: std::path::PathBuf,
    quota_checked: Instant,
    abandon_checked: Instant,
    runtime: tokio::runtime::Handle,
    /// Clients waiting for the group's answers.
    replies: BTreeMap<Ticket, Reply>,
    next_ticket: Ticket,
    /// The member list must be republished (table or configuration changed).
    members_dirty: bool,
    /// The auth store's (revision, enabled) last published; `None` before
    /// the first publication.
    auth_seen: Option<(u64, bool)>,
    snapshot_chunk_bytes: usize,
    /// Snapshot streams under way, by group and receiver.
    streams: BTreeMap<(GroupId, NodeId), crate::streams::Outgoing>,
    /// State rows replaced by a snapshot may still wait to be deleted.
    garbage: bool,
    metrics: Arc<crate::metrics::Metrics>,
    /// Every group's line of the node's report, refreshed with the metrics.
    reports: crate::report::Reports,
    peer_auth: crate::peer_auth::PeerAuth,
    /// Each group as the metrics last saw it.
    observed: BTreeMap<GroupId, Observed>,
    observed_at: Instant,
    shards: Option<Arc<crate::shard_view::ShardView>>,
    /// Each shard's revision as last sent to the hub.
    hub_revisions: BTreeMap<GroupId, i64>,
    /// Splits: the first map, the group maker, sizes and what was asked
    /// (see `splits`).
    splitting: splits::Splitting,
    /// Detaches of revoked leases' keys sent to shards (see
    /// `revocations`).
    revocations: revocations::Revocations,
    /// Shards following the meta group's configuration (see `members`).
    follower: synod_group::MembershipFollower,
}

/// What the metrics last saw of a group: counters are exported as the
/// difference, changes of leader, role and membership become events.
#[derive(Default)]
struct Observed {
    counters: synod_group::GroupCounters,
    leader: Option<NodeId>,
    membership: Option<Configuration>,
    commit: u64,
    applied: u64,
    snapshots_installed: u64,
}

/// A shard's question for stamps unanswered this long is given up (the
/// shard asked again after `STAMP_QUESTION_MS`).
const STAMPS_ABANDON: Duration = Duration::from_secs(5);

/// Passes over the groups' readies gathered into one write (see
/// `drive`): a stamped write takes three (question, answer, proposal).
const GATHER_PASSES_MAX: usize = 4;

#[path = "members.rs"]
mod members;
#[path = "revocations.rs"]
mod revocations;
#[path = "splits.rs"]
mod splits;

/// How often the metrics look at every group.
const OBSERVE_EVERY: Duration = Duration::from_millis(100);

impl Core {
    /// Builds the loop around a restored group and the store.
    pub fn new(parts: CoreParts) -> Core {
        assert!(parts.groups.contains_key(&GROUP), "the node hosts {GROUP}");
        let mut core = Core {
            id: parts.id,
            groups: parts.groups,
            storage: parts.storage,
            started: parts.started,
            inputs: parts.inputs,
            outbox: parts.outbox,
            peers: parts.peers,
            peer_addrs: parts.peer_addrs,
            cluster_id: parts.cluster_id,
            tick: parts.tick,
            published: parts.published,
            hub: parts.hub,
            zk_listener: parts.zk_listener,
            zk_queries: Vec::new(),
            rows_waiting: Vec::new(),
            outgoing: BTreeMap::new(),
            quota_bytes: parts.quota_bytes,
            storage_file: parts.storage_file,
            quota_checked: Instant::now(),
            abandon_checked: Instant::now(),
            runtime: parts.runtime,
            replies: BTreeMap::new(),
            next_ticket: 1,
            members_dirty: true,
            auth_seen: None,
            snapshot_chunk_bytes: parts.snapshot_chunk_bytes,
            streams: BTreeMap::new(),
            garbage: true,
            metrics: parts.metrics,
            reports: parts.reports,
            peer_auth: parts.peer_auth,
            observed: BTreeMap::new(),
            observed_at: Instant::now(),
            shards: parts.shards,
            hub_revisions: BTreeMap::new(),
            splitting: splits::Splitting::new(
                parts.first_map,
                parts.maker,
                parts.split_bytes,
                parts.split_writes_per_s,
            ),
            revocations: Default::default(),
            follower: Default::default(),
        };
        core.adopt_ranges();
        core.discover_groups();
        core.refresh_map();
        core
    }

    /// Whether `group` holds etcd keys (and so feeds watchers): `GROUP`
    /// unless the key space is sharded, else the shards.
    fn holds_keys(&self, group: GroupId) -> bool {
        match &self.shards {
            None => group == GROUP,
            Some(_) => group != GROUP,
        }
    }

    /// The meta group: members, leases, auth, ZooKeeper, the oracle; and
    /// the whole etcd key space unless it is sharded.
    fn main(&mut self) -> &mut Group {
        self.groups.get_mut(&GROUP).expect("checked at start")
    }

    fn now(&self) -> Time {
        Time(self.started.elapsed().as_millis() as u64)
    }

    /// Runs until `Shutdown` or until every input sender is gone.
    pub fn run(mut self) {
        loop {
            match self.inputs.recv_timeout(self.tick) {
                Ok(Input::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(input) => {
                    self.outbox.taken(&input);
                    if !self.handle(input) {
                        return;
                    }
                    for _ in 0..INPUTS_PER_ROUND_MAX {
                        match self.inputs.try_recv() {
                            Ok(input) => {
                                self.outbox.taken(&input);
                                if !self.handle(input) {
                                    return;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = self.now();
            for group in self.groups.values_mut() {
                group.tick(now);
            }
            self.abandon();
            self.check_quota();
            self.split_by_size();
            self.split_by_load();
            self.drive_revocations();
            self.follow_membership();
            self.drive();
            self.answer_revocation_waiters();
            if !self.zk_queries.is_empty() {
                let kv = self.groups[&GROUP].kv();
                for f in self.zk_queries.drain(..) {
                    f(kv);
                }
            }
            self.publish();
        }
    }

    /// Returns false on shutdown.
    fn handle(&mut self, input: Input) -> bool {
        let now = self.now();
        match input {
            Input::Shutdown => return false,
            Input::Peer(batch) => self.on_peer(batch),
            Input::Write {
                group,
                op,
                caller,
                reply,
            } => {
                let ticket = self.ticket(Reply::Write(reply));
                let request = match caller {
                    Some(caller) => Request::WriteAs { op, caller },
                    None => Request::Write(op),
                };
                self.request(group, ticket, request, now);
            }
            Input::WriteStamped {
                group,
                op,
                stamp,
                reply,
            } => {
                let ticket = self.ticket(Reply::Write(reply));
                self.request(group, ticket, Request::WriteStamped { op, stamp }, now);
            }
            Input::Timestamps { count, reply } => {
                let ticket = self.ticket(Reply::Timestamps(reply));
                let leases = Vec::new();
                self.request(GROUP, ticket, Request::Timestamps { count, leases }, now);
            }
            Input::Read {
                group,
                request,
                serializable,
                reply,
            } => {
                let ticket = self.ticket(Reply::Read(reply));
                let read = Request::Read {
                    request,
                    serializable,
                };
                self.request(group, ticket, read, now);
            }
            Input::Watch {
                stream,
                spec,
                announce,
            } => self.on_watch(stream, spec, announce),
            Input::LeaseQuery { id, renew, reply } => {
                let ticket = self.ticket(Reply::Lease(reply));
                self.main()
                    .request(ticket, Request::Lease { id, renew }, now);
            }
            Input::Fence { group } => self.fence(group, now),
            Input::Split { at, reply } => self.split_at(at, reply, now),
            Input::Query(f) => f(self.main().kv()),
            Input::QueryAll(f) => f(self.groups.iter().map(|(id, g)| (*id, g.kv())).collect()),
            Input::AwaitRevocation { id, reply } => self.await_revocation(id, reply),
            Input::ZkQuery(f) => self.zk_queries.push(f),
            Input::WriteRows { reply } => {
                for group in self.groups.values_mut() {
                    group.write_rows_now();
                }
                self.rows_waiting.push(reply);
            }
            Input::ChangeMembership { target, reply } => {
                let _ = reply.send(self.main().change_membership(target));
            }
            Input::ShardsFollow { target, reply } => {
                let _ = reply.send(self.shards_follow(&target));
            }
            Input::Transfer { to, reply } => {
                let _ = reply.send(self.main().transfer_leadership(to));
            }
            Input::Staged {
                group,
                slot,
                membership,
                stage,
                kv,
            } => self.on_staged(group, slot, membership, stage, *kv),
        }
        true
    }

    /// Hands a client request to its group; a group this node does not
    /// host answers at once.
    fn request(&mut self, group: GroupId, ticket: Ticket, request: Request, now: Time) {
        let blank = self.is_blank(group);
        match self.groups.get_mut(&group) {
            Some(g) if !blank => g.request(ticket, request, now),
            hosted => {
                // A shard this node knows of but holds no state for yet
                // (a snapshot is on its way): the router tries again.
                let e = if hosted.is_some() {
                    KvError::WrongShard
                } else {
                    KvError::NoLeader
                };
                let reply = self.replies.remove(&ticket).expect("just issued");
                let refusal = match request {
                    Request::Write(_) | Request::WriteAs { .. } | Request::WriteStamped { .. } => {
                        Answer::Write(error_outcome(&e))
                    }
                    Request::Read { .. } => Answer::Read(Err(e)),
                    Request::Lease { .. } => Answer::Lease(None),
                    Request::Timestamps { .. } => Answer::Timestamps(None, Default::default()),
                };
                reply.send(refusal, &self.runtime);
            }
        }
    }

    fn ticket(&mut self, reply: Reply) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.replies.insert(ticket, reply);
        ticket
    }

    /// Tells the group which clients stopped waiting.
    fn abandon(&mut self) {
        if self.abandon_checked.elapsed() < ABANDON_CHECK {
            return;
        }
        self.abandon_checked = Instant::now();
        let gone: BTreeSet<Ticket> = self
            .replies
            .iter()
            .filter(|(_, r)| r.is_closed())
            .map(|(t, _)| *t)
            .collect();
        for t in &gone {
            self.replies.remove(t);
        }
        for group in self.groups.values_mut() {
            group.abandon(&gone);
        }
    }

    /// Raises this member's NOSPACE alarm once the database outgrows the
    /// quota (etcd's `--quota-backend-bytes`).
    fn check_quota(&mut self) {
        if self.quota_bytes == 0 || self.quota_checked.elapsed() < QUOTA_CHECK {
            return;
        }
        self.quota_checked = Instant::now();
        let size = std::fs::metadata(&self.storage_file).map_or(0, |m| m.len());
        let quota = self.quota_bytes;
        self.main().check_quota(size, quota);
    }

    /// Computes a new watcher's past from the stores of the groups it
    /// follows (merged in revision order) and hands it to the hub, behind
    /// every event already handed over.
    fn on_watch(&mut self, stream: StreamId, spec: WatchSpec, announce: bool) {
        // Whatever the groups applied or installed goes to the hub first.
        self.drive();
        let mut spec = spec;
        if let Some(view) = &self.shards {
            // The shards as they are now (a resync after a split follows
            // the new ones too).
            spec.groups = view
                .get()
                .cut(&spec.range)
                .into_iter()
                .map(|(g, _)| GroupId(g))
                .collect();
        }
        let mut seen = BTreeMap::new();
        let mut history: Result<Vec<Event>, i64> = Ok(Vec::new());
        for id in &spec.groups {
            let Some(group) = self.groups.get_mut(id) else {
                let _ = self.hub.send(HubInput::Refuse {
                    stream,
                    reason: format!("etcdserver: this node does not host {id}"),
                });
                return;
            };
            if spec.prev_kv {
                // From now on events carry previous values (read from disk
                // for long ones); until a watcher asks, they are not read.
                group.set_prev_values_in_events(true);
            }
            let kv = group.kv();
            let current = kv.revision();
            let past = if spec.start_revision <= 0 || spec.start_revision > current {
                Ok(Vec::new())
            } else {
                match kv.history(&spec.range, spec.start_revision) {
                    Ok(events) => Ok(events),
                    Err(KvError::Compacted {
                        compact_revision, ..
                    }) => Err(compact_revision),
                    Err(_) => Ok(Vec::new()),
                }
            };
            seen.insert(*id, current.max(spec.start_revision - 1));
            history = match (history, past) {
                (Ok(mut all), Ok(events)) => {
                    all.extend(events);
                    Ok(all)
                }
                (Err(a), Err(b)) => Err(a.max(b)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        if let Ok(events) = &mut history {
            // One group's events are in order already; several interleave.
            events.sort_by_key(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision));
        }
        let _ = self.hub.send(HubInput::Register {
            stream,
            spec,
            seen,
            history,
            announce,
        });
    }

    /// Moves shard `group` past every revision handed out so far: a
    /// stamped no-op at a fresh timestamp, so that a watch over several
    /// shards may deliver what it holds (see the hub's `release`).
    fn fence(&mut self, group: GroupId, now: Time) {
        let ticket = self.ticket(Reply::Fence { group });
        let leases = Vec::new();
        self.request(GROUP, ticket, Request::Timestamps { count: 1, leases }, now);
    }

    fn on_peer(&mut self, mut batch: peerpb::Batch) {
        let more = std::mem::take(&mut batch.more);
        let (from, cluster) = (batch.from, batch.cluster_id);
        self.on_group_batch(batch);
        for nested in more {
            if nested.from != from || nested.cluster_id != cluster || !nested.more.is_empty() {
                tracing::warn!(
                    from,
                    "a nested batch naming another sender or nesting further dropped"
                );
                continue;
            }
            self.on_group_batch(nested);
        }
    }

    fn on_group_batch(&mut self, batch: peerpb::Batch) {
        if batch.cluster_id != self.cluster_id {
            tracing::warn!(
                from = batch.from,
                cluster = batch.cluster_id,
                "batch from another cluster dropped"
            );
            return;
        }
        // Batches from a node that predates group ids carry 0.
        let id = if batch.group == 0 {
            GROUP
        } else {
            GroupId(batch.group)
        };
        let now = self.now();
        let my_id = self.id;
        if !self.groups.contains_key(&id) && !self.host_on_demand(id, batch.from) {
            tracing::warn!(from = batch.from, group = %id, "batch for a group not hosted here dropped");
            return;
        }
        let group = self.groups.get_mut(&id).expect("hosted");
        let from = NodeId(batch.from);
        if !group.knows_member(from) {
            tracing::warn!(%from, group = %id, "batch from a node that is not a member dropped");
            return;
        }
        for item in codec::batch_items(batch, my_id) {
            group.step(from, item, now);
        }
    }

    /// The runtime loop: until every group is quiet, take their readies,
    /// connect and send, write all of them in one batch (one fsync), then
    /// acknowledge, answer and publish events.
    fn drive(&mut self) {
        loop {
            // Work between groups that needs nothing durable (a shard's
            // question for stamps and the meta group's answer) is passed
            // on at once, and the groups' readies gathered again, so that
            // a stamped write is proposed in the round it arrived: one
            // write for all of them, not one per step.
            let mut readies: Vec<(GroupId, GroupReady)> = Vec::new();
            for _ in 0..GATHER_PASSES_MAX {
                let mut pass: Vec<(GroupId, GroupReady)> = self
                    .groups
                    .iter_mut()
                    .filter(|(_, g)| g.has_ready())
                    .map(|(id, g)| (*id, g.ready()))
                    .collect();
                if pass.is_empty() {
                    break;
                }
                let mut born = Vec::new();
                for (id, ready) in &mut pass {
                    // A split's new group is written with the split.
                    born.extend(self.host_splits(*id, ready));
                    if ready.membership.is_some() || ready.members_changed {
                        // A configuration changed, or an address may have
                        // (member update).
                        self.connect_peers();
                    }
                    self.members_dirty |= ready.members_changed;
                    let sends = std::mem::take(&mut ready.sends);
                    self.send_all(*id, sends);
                    self.pass_stamps(*id, ready);
                }
                // A new group's first messages (its leader's campaign).
                for (id, ready) in &mut born {
                    let sends = std::mem::take(&mut ready.sends);
                    self.send_all(*id, sends);
                }
                // Out before the write, so peers persist while we do.
                self.flush_sends();
                readies.extend(pass);
                readies.extend(born);
            }
            if readies.is_empty() {
                return;
            }
            self.write(&mut readies);
            // Every group wrote its rows in this write (`WriteRows` made
            // each one ready, and a ready asked to write them does).
            for reply in self.rows_waiting.drain(..) {
                let _ = reply.send(());
            }
            if readies.iter().any(|(_, r)| r.installed.is_some()) {
                // A snapshot may have shrunk a shard: its new neighbour
                // may be one this node has not heard of.
                self.adopt_ranges();
                self.discover_groups();
                self.refresh_map();
            }
            self.publish_auth();
            for (id, ready) in readies {
                self.finish(id, ready);
            }
        }
    }

    /// Passes a ready's stamp traffic on before the round's write: a
    /// shard's question to the meta group, the meta group's answers to
    /// their shards. Neither waits for anything durable: the question
    /// changes nothing, and an answer comes from a reservation already
    /// chosen, at a confirmed point of the meta leader's leadership.
    fn pass_stamps(&mut self, id: GroupId, ready: &mut GroupReady) {
        let now = self.now();
        if let Some(q) = ready.stamps.take() {
            let ticket = self.ticket(Reply::Stamps {
                group: id,
                question: q.id,
                at: Instant::now(),
            });
            let request = Request::Timestamps {
                count: q.count,
                leases: q.leases,
            };
            self.request(GROUP, ticket, request, now);
        }
        if id != GROUP {
            return;
        }
        let replies = &mut self.replies;
        let mut granted = Vec::new();
        ready
            .answers
            .retain(|(ticket, answer)| match (replies.get(ticket), answer) {
                (
                    Some(Reply::Stamps {
                        group, question, ..
                    }),
                    Answer::Timestamps(range, facts),
                ) => {
                    granted.push((*group, *question, *range, facts.clone()));
                    replies.remove(ticket);
                    false
                }
                _ => true,
            });
        for (group, question, range, facts) in granted {
            if let Some(g) = self.groups.get_mut(&group) {
                g.stamps_granted(question, range, &facts, now);
            }
        }
    }

    /// One storage batch for the round's writes of every group: each
    /// group's persist, its state-machine rows with the slot they hold, and
    /// its log compaction. A durable write that fails is fail-stop:
    /// continuing could acknowledge state that is not on disk.
    fn write(&mut self, readies: &mut [(GroupId, GroupReady)]) {
        let work = self.garbage
            || readies
                .iter()
                .any(|(_, r)| !r.persist.is_empty() || !r.state.is_empty() || r.compact.is_some());
        if work {
            let mut collected = 0;
            let result = self.storage.batch().and_then(|mut batch| {
                for (id, ready) in readies.iter() {
                    batch.persist(*id, &ready.persist)?;
                    if let Some(installed) = &ready.installed {
                        // The received rows go live before the new store's
                        // own changes are written over them.
                        batch.install_staged(*id, installed.stage)?;
                    }
                    if !ready.state.is_empty() || ready.installed.is_some() {
                        batch.write_state(*id, &ready.state)?;
                        batch.set_applied(*id, ready.applied_through)?;
                    }
                    if let Some(c) = &ready.compact {
                        batch.compact_to(*id, c.slot, c.membership.as_ref())?;
                    }
                    if ready.must_sync() {
                        batch.require_sync();
                    }
                }
                if self.garbage {
                    collected = batch.collect_garbage(GARBAGE_ROWS_PER_ROUND)?;
                    collected += batch.collect_log_garbage(LOG_GARBAGE_PER_ROUND)?;
                }
                let durable = batch.must_sync();
                let started = Instant::now();
                batch.commit()?;
                let took = started.elapsed().as_secs_f64();
                self.metrics.backend_commit.observe(took);
                if durable {
                    self.metrics.wal_fsync.observe(took);
                }
                Ok(())
            });
            let records: usize = readies.iter().map(|(_, r)| r.persist.records.len()).sum();
            if records > 0 {
                self.metrics.batch_records.observe(records as f64);
            }
            if let Err(e) = result {
                panic!("storage write failed, stopping the node: {e}");
            }
            // A compaction may leave log records to collect (F4).
            self.garbage = collected > 0
                || readies.iter().any(|(_, r)| {
                    r.installed.is_some()
                        || r.compact.is_some()
                        || r.persist.compact_through.is_some()
                });
        }
        for (id, ready) in readies.iter_mut() {
            // The rows are readable now; their memory copies may go.
            ready.state = StateChanges::default();
            if let Some(group) = self.groups.get_mut(id) {
                group.on_written();
            }
        }
    }

    /// After the write: acknowledge, answer, start snapshot streams, hand
    /// events to the hub.
    fn finish(&mut self, id: GroupId, ready: GroupReady) {
        let group = self.groups.get_mut(&id).expect("a hosted group");
        group.on_persisted(ready.token);
        if !ready.events.is_empty() {
            self.weigh_load(id, &ready.events);
        }
        // ZooKeeper's watch events go before any answer, so a client sees
        // the event before a reply that shows the change.
        if id == GROUP && (!ready.zk_events.is_empty() || ready.jump.is_some()) {
            let listener = self.zk_listener.lock().expect("listener lock").clone();
            if let Some(listener) = listener {
                if ready.jump.is_some() {
                    listener(ZkFeed::Reset);
                }
                if !ready.zk_events.is_empty() {
                    listener(ZkFeed::Events(&ready.zk_events, ready.revision));
                }
            }
        }
        for to in ready.snapshots {
            self.stream_snapshot(id, to);
        }
        let now = self.now();
        for (ticket, answer) in ready.answers {
            match (self.replies.remove(&ticket), answer) {
                (Some(Reply::Detach { leases }), answer) => self.detached(leases, answer),
                (Some(Reply::Follow), answer) => self.followed(answer),
                (Some(Reply::Fence { group }), Answer::Timestamps(Some((stamp, _)), _)) => {
                    let ticket = self.ticket(Reply::Discard);
                    let op = Op::Txn(TxnRequest::default());
                    self.request(group, ticket, Request::WriteStamped { op, stamp }, now);
                }
                // No oracle now: the hub asks again.
                (Some(Reply::Fence { .. }), _) => {}
                (Some(Reply::SplitId { group, at, reply }), answer) => {
                    self.propose_split(group, at, answer, reply, now)
                }
                (Some(reply), answer) => reply.send(answer, &self.runtime),
                (None, _) => {}
            }
        }
        // Watchers follow the etcd key space.
        if !self.holds_keys(id) {
            return;
        }
        if let Some(revision) = ready.jump {
            let _ = self.hub.send(HubInput::Jump {
                group: id,
                revision,
            });
        }
        // A shard's revision moves without events too (a fence, a failed
        // compare): watches over several shards wait for it.
        let moved = self.shards.is_some() && self.hub_revisions.get(&id) != Some(&ready.revision);
        if !ready.events.is_empty() || moved {
            self.hub_revisions.insert(id, ready.revision);
            let _ = self.hub.send(HubInput::Events {
                group: id,
                revision: ready.revision,
                events: ready.events,
            });
        }
    }

    /// Streams `group`'s committed rows to `to`, unless a stream to it is
    /// still under way.
    fn stream_snapshot(&mut self, group: GroupId, to: NodeId) {
        if self.streams.get(&(group, to)).is_some_and(|s| s.running()) {
            return;
        }
        let Some(addr) = self.peer_addrs.get(&to).copied() else {
            return;
        };
        let from = crate::streams::Sender {
            node: self.id.0,
            cluster_id: self.cluster_id,
            metrics: Arc::clone(&self.metrics),
            auth: self.peer_auth.clone(),
        };
        let g = self.groups.get_mut(&group).expect("a hosted group");
        let started = crate::streams::start(
            &self.storage,
            &self.runtime,
            from,
            group,
            addr,
            self.snapshot_chunk_bytes,
            |slot| g.replica().membership_at(slot),
        );
        match started {
            Ok((slot, outgoing)) => {
                self.metrics.snapshots_sent.inc();
                self.metrics.event(
                    group.0,
                    "snapshot",
                    format!("streaming a snapshot through slot {slot} to node {}", to.0),
                );
                g.snapshot_started(slot);
                self.streams.insert((group, to), outgoing);
            }
            Err(e) => panic!("reading the state failed, stopping the node: {e}"),
        }
    }

    /// A snapshot received whole: the group installs it if it still wants
    /// it, else its stage goes.
    fn on_staged(
        &mut self,
        group: GroupId,
        slot: Slot,
        membership: Option<Configuration>,
        stage: u64,
        kv: synod_kv::KvStore,
    ) {
        let overlaps = kv.shard().is_some_and(|shard| {
            let replicas = self.groups.iter().map(|(id, g)| (id.0, g.kv().shard()));
            crate::shards::ShardMap::overlaps(group.0, shard, replicas)
        });
        let installed = !overlaps
            && self
                .groups
                .get_mut(&group)
                .is_some_and(|g| g.install_staged(slot, membership, kv, stage));
        if installed {
            tracing::info!(%group, %slot, "snapshot installed");
            return;
        }
        if overlaps {
            tracing::info!(%group, %slot, "snapshot waits until this node's replica of the shard it split from applies the split");
        }
        tracing::info!(%group, %slot, "snapshot not needed any more, discarded");
        let result = self.storage.batch().and_then(|mut batch| {
            batch.discard_stage(group, stage)?;
            batch.commit()
        });
        if let Err(e) = result {
            panic!("storage write failed, stopping the node: {e}");
        }
        self.garbage = true;
    }

    /// Opens senders to every member of any hosted group's configuration
    /// this node has no sender for (or whose address changed), closes those
    /// to nodes outside all of them.
    fn connect_peers(&mut self) {
        let known: Vec<&Configuration> = self
            .groups
            .values()
            .filter_map(|g| g.replica().membership())
            .collect();
        if known.is_empty() {
            // A joining node knows no configuration yet: it keeps the peers
            // it was started with, the leader among them.
            return;
        }
        let wanted: BTreeSet<NodeId> = known.iter().flat_map(|c| c.members()).collect();
        let table: BTreeMap<u64, std::net::SocketAddr> = self.groups[&GROUP]
            .members()
            .iter()
            .filter_map(|m| Some((m.id, crate::config::peer_addr_of(m)?)))
            .collect();
        self.peers.retain(|id, _| wanted.contains(id));
        self.peer_addrs.retain(|id, _| wanted.contains(id));
        for id in wanted {
            if id == self.id {
                continue;
            }
            let Some(addr) = table.get(&id.0).copied() else {
                tracing::warn!(node = %id, "member without a known peer address");
                continue;
            };
            if self.peer_addrs.get(&id) == Some(&addr) {
                continue;
            }
            let (tx, rx) = mpsc::channel(crate::transport::PEER_QUEUE_MAX);
            let auth = self.peer_auth.clone();
            self.runtime
                .spawn(crate::transport::run_sender(addr, rx, auth));
            self.peers.insert(id, tx);
            self.peer_addrs.insert(id, addr);
        }
    }

    /// Packs the group's sends into one batch per peer.
    fn send_all(&mut self, group: GroupId, sends: Vec<(NodeId, PeerItem)>) {
        let mut batches: BTreeMap<NodeId, peerpb::Batch> = BTreeMap::new();
        for (to, item) in sends {
            let batch = batches.entry(to).or_insert_with(|| self.batch(group));
            match item {
                PeerItem::Paxos(m) => batch.messages.push(codec::encode(to, &m)),
                PeerItem::Forward(command) => batch.forwards.push(command),
                PeerItem::LeaseQuery { token, id, renew } => batch
                    .lease_queries
                    .push(peerpb::LeaseQuery { token, id, renew }),
                PeerItem::LeaseAnswer { token, answer } => {
                    let (ttl, granted_ttl) = answer.unwrap_or((-1, 0));
                    batch.lease_answers.push(peerpb::LeaseAnswer {
                        token,
                        ttl,
                        granted_ttl,
                    });
                }
                PeerItem::ReadIndex { token } => batch.read_index.push(token),
                PeerItem::TimestampQuery {
                    token,
                    count,
                    leases,
                } => batch.timestamp_queries.push(peerpb::TimestampQuery {
                    token,
                    count,
                    leases,
                }),
                PeerItem::TimestampAnswer {
                    token,
                    range,
                    granted,
                } => {
                    let (first, last) = range.unwrap_or((0, 0));
                    batch.timestamp_answers.push(peerpb::TimestampAnswer {
                        token,
                        granted: range.is_some(),
                        first,
                        last,
                        live: granted.live,
                        auth_enabled: granted.auth.enabled,
                        auth_revision: granted.auth.revision,
                    })
                }
                PeerItem::ReadIndexAnswer { token, slot } => {
                    batch.read_index_answers.push(peerpb::ReadIndexAnswer {
                        token,
                        confirmed: slot.is_some(),
                        slot: slot.map_or(0, |s| s.0),
                    })
                }
            }
        }
        for (to, batch) in batches {
            match self.outgoing.entry(to) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(batch);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().more.push(batch),
            }
        }
    }

    /// Sends what the groups queued since the last call: one batch per
    /// peer, the other groups' nested in it.
    fn flush_sends(&mut self) {
        for (to, batch) in std::mem::take(&mut self.outgoing) {
            self.send(to, batch);
        }
    }

    fn batch(&self, group: GroupId) -> peerpb::Batch {
        peerpb::Batch {
            from: self.id.0,
            cluster_id: self.cluster_id,
            group: group.0,
            ..peerpb::Batch::default()
        }
    }

    fn send(&mut self, to: NodeId, batch: peerpb::Batch) {
        if let Some(peer) = self.peers.get(&to) {
            // A full queue means the peer is slow or gone: drop, Paxos
            // resends.
            let _ = peer.try_send(batch);
        }
    }

    /// Publishes the auth store when it changed; called before a round's
    /// answers go out, so a request answered after an auth change (a read
    /// checked once it returns) is judged by the new roles.
    fn publish_auth(&mut self) {
        let auth = self.groups[&GROUP].kv().auth();
        let seen = Some((auth.revision(), auth.enabled()));
        if seen == self.auth_seen {
            return;
        }
        self.auth_seen = seen;
        let auth = Arc::new(auth.clone());
        self.published.lock().expect("status lock").auth = Arc::clone(&auth);
        // Open watches are judged again by the new roles.
        let _ = self.hub.send(HubInput::Auth(auth));
    }

    fn publish(&mut self) {
        let main = &self.groups[&GROUP];
        let status = main.status();
        let mut p = self.published.lock().expect("status lock");
        if p.group.membership != status.membership || self.members_dirty {
            p.members = member_list(main.members(), status.membership.as_ref());
        }
        p.group = status;
        drop(p);
        self.members_dirty = false;
        self.publish_auth();
        if self.observed_at.elapsed() >= OBSERVE_EVERY {
            self.observed_at = Instant::now();
            self.observe();
        }
    }

    /// Brings the metrics up to date with every group, and notes leader,
    /// role, membership and snapshot changes as events.
    fn observe(&mut self) {
        let m = Arc::clone(&self.metrics);
        let mut reports = Vec::with_capacity(self.groups.len());
        for (id, group) in &self.groups {
            let status = group.status();
            let replica = group.replica().status();
            let seen = self.observed.entry(*id).or_default();
            m.count(&seen.counters, &status.counters);
            let label = id.0.to_string();
            let label = [label.as_str()];
            m.group_commit
                .with_label_values(&label)
                .set(status.commit as i64);
            m.group_applied
                .with_label_values(&label)
                .set(status.applied as i64);
            m.group_round
                .with_label_values(&label)
                .set(status.round as i64);
            m.group_is_leader
                .with_label_values(&label)
                .set(i64::from(status.is_leader));
            m.group_revision
                .with_label_values(&label)
                .set(status.revision);
            let elections = status.counters.elections - seen.counters.elections;
            if elections > 0 {
                m.elections.inc_by(elections);
                m.event(
                    id.0,
                    "election",
                    format!(
                        "node {} ran phase 1 (ballot {})",
                        self.id.0, replica.promised
                    ),
                );
            }
            if seen.leader != status.leader {
                if *id == GROUP {
                    m.leader_changes.inc();
                }
                let text = match status.leader {
                    Some(l) => format!("node {} leads (ballot {})", l.0, replica.promised),
                    None => "no leader known".to_string(),
                };
                m.event(id.0, "leader", text);
                seen.leader = status.leader;
            }
            if seen.membership != status.membership {
                if let Some(c) = &status.membership {
                    m.event(id.0, "membership", format!("configuration {c}"));
                }
                seen.membership = status.membership.clone();
            }
            if status.snapshots_installed > seen.snapshots_installed {
                m.snapshots_installed
                    .inc_by(status.snapshots_installed - seen.snapshots_installed);
                m.event(
                    id.0,
                    "snapshot",
                    format!(
                        "installed a snapshot; applied through slot {}",
                        status.applied
                    ),
                );
                seen.snapshots_installed = status.snapshots_installed;
            }
            if *id == GROUP {
                m.has_leader.set(i64::from(status.leader.is_some()));
                m.is_leader.set(i64::from(status.is_leader));
                m.proposals_committed
                    .inc_by(status.commit.saturating_sub(seen.commit));
                m.proposals_applied
                    .inc_by(status.applied.saturating_sub(seen.applied));
                m.proposals_pending.set(group.waiting() as i64);
                m.leases.set(group.kv().leases().len() as i64);
                m.zk_sessions.set(group.kv().zk().session_count() as i64);
            }
            seen.counters = status.counters;
            seen.commit = seen.commit.max(status.commit);
            seen.applied = seen.applied.max(status.applied);
            reports.push(crate::report::group_report(*id, &status, &replica));
        }
        if let Ok(meta) = std::fs::metadata(&self.storage_file) {
            m.db_size.set(meta.len() as i64);
        }
        *self.reports.lock().expect("reports lock") = reports;
    }
}

/// The member list as etcd shows it: the table's members that the
/// configuration includes (all of them while it is unknown), learners
/// marked.
fn member_list(table: &[MemberInfo], configuration: Option<&Configuration>) -> Vec<MemberInfo> {
    table
        .iter()
        .filter(|m| configuration.is_none_or(|c| c.is_member(NodeId(m.id))))
        .map(|m| MemberInfo {
            is_learner: configuration.is_some_and(|c| !c.is_voter(NodeId(m.id))),
            ..m.clone()
        })
        .collect()
}
