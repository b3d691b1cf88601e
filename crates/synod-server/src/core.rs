//! The core loop: one thread that owns the replica, the state machine and
//! the store, and turns inputs into durable, replicated, applied effects.
//!
//! ```text
//!   inputs (peer messages, client writes and reads) ──► step / propose / read
//!   every round:  tick ─► ready ─► send ─► persist (one fsync) ─► apply ─► answer
//! ```
//!
//! Nothing here blocks on the network: outgoing batches go to per-peer
//! sender tasks through bounded queues, and a full queue drops the batch
//! (Paxos retransmits).

use crate::codec;
use crate::hub::{HubInput, StreamId, WatchSpec};
use bytes::Bytes;
use prost::Message as _;
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_kv::{error_outcome, KvError, KvStore, Lessor};
use synod_paxos::{
    Configuration, Membership, MembershipRecord, NodeId, Persist, ProposeError, ReadId, Ready,
    Replica, RoleKind, Slot, Time, Value,
};
use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::Member as MemberInfo;
use synod_proto::etcdserverpb::{AlarmRequest, AlarmType};
use synod_proto::etcdserverpb::{RangeRequest, RangeResponse};
use synod_proto::mvccpb::Event;
use synod_proto::peerpb;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{Command, Outcome};
use synod_proto::synodpb::{LeaseExpire, MemberTable};
use synod_storage::{GroupId, Storage};
use tokio::sync::{mpsc, oneshot};

/// The single Paxos group of an unsharded cluster.
pub const GROUP: GroupId = GroupId(1);
/// Inputs handled per round before the runtime loop runs: a bound on
/// latency under load, and the unit of batching.
const INPUTS_PER_ROUND_MAX: usize = 4096;
/// A forwarded command not yet applied is forwarded again after this long.
const REFORWARD_MS: u64 = 300;
/// How often the database size is compared with the space quota.
const QUOTA_CHECK: Duration = Duration::from_secs(1);
/// Writes waiting for their outcome on this node (proposed here or
/// forwarded) before new client writes are refused with "too many
/// requests". Each holds its encoded command, so this bounds memory too.
pub const PENDING_WRITES_MAX: usize = 16_384;
/// The largest state-machine snapshot a peer may send: reassembly keeps
/// it in memory, so a sender claiming more is refused before any byte is
/// buffered.
pub const SNAPSHOT_BYTES_MAX: u64 = 16 << 30;
/// The largest snapshot chunk accepted from a peer.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 64 << 20;

/// A lease's remaining seconds and granted TTL; `None` when it does not
/// exist (or already ran out on the leader).
pub type LeaseAnswer = Option<(i64, i64)>;

/// Reads the local state machine on the core thread.
pub type Query = Box<dyn FnOnce(&KvStore) + Send>;

/// Work for the core loop.
pub enum Input {
    /// Messages from a peer.
    Peer(peerpb::Batch),
    /// A client write; answered when it applies here.
    Write {
        /// What to do; the core makes it a command of its session.
        op: Op,
        /// Where the outcome goes.
        reply: oneshot::Sender<Outcome>,
    },
    /// A client read.
    Read {
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
    /// Start a membership change (this node must lead).
    ChangeMembership {
        /// The configuration wanted.
        target: Membership,
        /// Whether the change was started.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Hand leadership to another voter (this node must lead).
    Transfer {
        /// The voter to lead next.
        to: NodeId,
        /// Whether the transfer was started.
        reply: oneshot::Sender<Result<(), String>>,
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
            | Input::Read { .. }
            | Input::LeaseQuery { .. }
            | Input::Query(_) => Class::Client,
            Input::Watch { announce, .. } => {
                if *announce {
                    Class::Client
                } else {
                    Class::Internal
                }
            }
            Input::ChangeMembership { .. } | Input::Transfer { .. } | Input::Shutdown => {
                Class::Internal
            }
        }
    }
}

/// Where a lease answer goes once leadership is confirmed.
enum LeaseReply {
    Local(oneshot::Sender<LeaseAnswer>),
    Remote { to: NodeId, token: u64 },
}

/// Something waiting for a linearizable point: a range read, or a lease
/// question the leader may answer only while it surely still leads.
enum Waiter {
    Read(WaitingRead),
    Lease {
        id: i64,
        renew: bool,
        reply: LeaseReply,
    },
    /// Leases that ran out, proposed for expiry once leadership is
    /// confirmed.
    Expire(Vec<i64>),
}

/// What the loop publishes for status calls.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// Believed leader.
    pub leader: Option<NodeId>,
    /// This node leads.
    pub is_leader: bool,
    /// Ballot round (etcd's raft term).
    pub round: u64,
    /// Commit point.
    pub commit: u64,
    /// Applied slot.
    pub applied: u64,
    /// State machine revision.
    pub revision: i64,
    /// Compaction point.
    pub compact_revision: i64,
    /// Slot of the latest state-machine snapshot.
    pub snapshot_slot: u64,
    /// Snapshots received from a leader and installed since start.
    pub snapshots_installed: u64,
    /// Raised alarms, `(member, alarm type)`.
    pub alarms: Vec<(u64, i32)>,
    /// The group's configuration (None while joining).
    pub membership: Option<Configuration>,
    /// A membership change is under way.
    pub membership_changing: bool,
    /// A leadership transfer to this node is under way.
    pub transferring_to: Option<NodeId>,
    /// Every member with its addresses, learners marked (etcd's member
    /// list).
    pub members: Vec<MemberInfo>,
}

/// Where a client's write outcome goes.
type OutcomeReply = oneshot::Sender<Outcome>;

struct PendingWrite {
    command: Bytes,
    forwarded_at: Option<Instant>,
    /// A barrier for a follower's linearizable read: kept while the read
    /// waits.
    barrier: bool,
}

/// A linearizable read waiting for its slot to be applied.
struct WaitingRead {
    request: RangeRequest,
    reply: oneshot::Sender<Result<RangeResponse, KvError>>,
}

/// What the loop starts from.
pub struct CoreParts {
    /// This node.
    pub id: NodeId,
    /// Checked on every peer batch.
    pub cluster_id: u64,
    /// Restored from storage.
    pub replica: Replica<Bytes>,
    /// Restored from the latest snapshot (or empty).
    pub kv: KvStore,
    /// The latest snapshot: what `kv` was restored from.
    pub snapshot: Option<(Slot, Bytes)>,
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
    /// The local clock's origin.
    pub started: Instant,
    /// Applied slots between snapshots.
    pub snapshot_every: u64,
    /// Where applied events go for watchers.
    pub hub: std::sync::mpsc::Sender<HubInput>,
    /// Raise NOSPACE when the database file grows past this many bytes.
    pub quota_bytes: u64,
    /// The database file, whose size the quota limits.
    pub storage_file: std::path::PathBuf,
    /// Bytes of snapshot per peer message.
    pub snapshot_chunk_bytes: usize,
    /// The members the node was started with (before any change the log
    /// recorded).
    pub initial_members: Vec<MemberInfo>,
    /// Where peer sender tasks run.
    pub runtime: tokio::runtime::Handle,
    /// The address each of `peers` sends to.
    pub peer_addrs: BTreeMap<NodeId, std::net::SocketAddr>,
}

/// The loop's state.
pub struct Core {
    id: NodeId,
    replica: Replica<Bytes>,
    kv: KvStore,
    storage: Storage,
    started: Instant,
    inputs: Receiver<Input>,
    outbox: crate::inbox::Outbox,
    peers: BTreeMap<NodeId, mpsc::Sender<peerpb::Batch>>,
    cluster_id: u64,
    tick: Duration,
    applied: Slot,
    /// Writes waiting for their (client, seq) to apply here, with the
    /// client's reply channel (`None` for the node's own commands and
    /// barriers, which no client waits on directly).
    writes: BTreeMap<(u64, u64), (Option<OutcomeReply>, PendingWrite)>,
    /// Linearizable reads registered with the replica.
    reads: BTreeMap<ReadId, Waiter>,
    /// Reads released by the replica, waiting for `applied` to reach a slot.
    reads_at: VecDeque<(Slot, Waiter)>,
    /// Reads on a follower, waiting for a barrier command to apply.
    barrier_reads: BTreeMap<(u64, u64), WaitingRead>,
    next_read: u64,
    /// This incarnation's session: every command the node proposes or
    /// forwards (client writes, barriers, its own) is `(session, seq)`.
    session: u64,
    /// The next seq of `session`; seqs are handed out in input order, so
    /// the lowest pending one tells the state machine which are answered.
    next_seq: u64,
    published: Arc<Mutex<Published>>,
    snapshot_every: u64,
    /// The latest snapshot written, shipped to replicas behind the log start.
    snapshot: Option<(Slot, Bytes)>,
    snapshots_installed: u64,
    hub: std::sync::mpsc::Sender<HubInput>,
    /// Events applied since they were last handed to the hub.
    events: Vec<Event>,
    lessor: Lessor,
    /// The ballot this node led with at the end of the last round.
    led_ballot: Option<synod_paxos::Ballot>,
    /// Lease questions forwarded to the leader, by token.
    lease_queries: BTreeMap<u64, oneshot::Sender<LeaseAnswer>>,
    next_token: u64,
    quota_bytes: u64,
    storage_file: std::path::PathBuf,
    quota_checked: Instant,
    /// A snapshot being received in chunks: its slot, total size and the
    /// bytes so far.
    incoming: Option<(Slot, usize, Vec<u8>, Option<Configuration>)>,
    snapshot_chunk_bytes: usize,
    initial_members: Vec<MemberInfo>,
    runtime: tokio::runtime::Handle,
    /// The peer address each sender task was started with.
    peer_addrs: BTreeMap<NodeId, std::net::SocketAddr>,
    /// The member list must be republished (table or configuration changed).
    members_dirty: bool,
    /// When this node last recorded its own addresses in the table.
    published_self: Instant,
}

impl Core {
    /// Builds the loop from a restored replica, the state machine restored
    /// from the latest snapshot (`snapshot`), and the store.
    pub fn new(parts: CoreParts) -> Core {
        let applied = parts.snapshot.as_ref().map_or(Slot(0), |(s, _)| *s);
        Core {
            id: parts.id,
            replica: parts.replica,
            kv: parts.kv,
            storage: parts.storage,
            started: parts.started,
            inputs: parts.inputs,
            outbox: parts.outbox,
            peers: parts.peers,
            cluster_id: parts.cluster_id,
            tick: parts.tick,
            applied,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            reads_at: VecDeque::new(),
            barrier_reads: BTreeMap::new(),
            next_read: 1,
            session: crate::node::incarnation_base(parts.id.0, 1),
            next_seq: 1,
            published: parts.published,
            snapshot_every: parts.snapshot_every.max(1),
            snapshot: parts.snapshot,
            snapshots_installed: 0,
            hub: parts.hub,
            events: Vec::new(),
            lessor: Lessor::default(),
            led_ballot: None,
            lease_queries: BTreeMap::new(),
            next_token: 1,
            quota_bytes: parts.quota_bytes,
            storage_file: parts.storage_file,
            quota_checked: Instant::now(),
            incoming: None,
            snapshot_chunk_bytes: parts.snapshot_chunk_bytes.max(1),
            initial_members: parts.initial_members,
            runtime: parts.runtime,
            peer_addrs: parts.peer_addrs,
            members_dirty: true,
            published_self: Instant::now(),
        }
    }

    /// The member table: the replicated one once a change recorded it,
    /// else the members the node was started with.
    fn member_table(&self) -> &[MemberInfo] {
        if self.kv.members().is_empty() {
            &self.initial_members
        } else {
            self.kv.members()
        }
    }

    /// Opens senders to every member of `configuration` this node has no
    /// sender for (or whose address changed), closes those to nodes outside
    /// it.
    fn connect_peers(&mut self, configuration: &Configuration) {
        let wanted = configuration.members();
        let table: BTreeMap<u64, std::net::SocketAddr> = self
            .member_table()
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
            self.runtime.spawn(crate::transport::run_sender(addr, rx));
            self.peers.insert(id, tx);
            self.peer_addrs.insert(id, addr);
        }
    }

    fn on_change_membership(&mut self, target: Membership) -> Result<(), String> {
        if let Some(current) = self.replica.membership().cloned() {
            // The new members' addresses must be known before the log
            // includes them: the leader sends them accepts at once.
            let joint = Configuration::Joint {
                old: current.target().clone(),
                new: target.clone(),
            };
            self.connect_peers(&joint);
        }
        self.replica
            .propose_membership(target)
            .map_err(|e| e.to_string())
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
            self.replica.tick(now);
            self.reforward();
            self.drive();
            self.leases();
            self.check_quota();
            self.publish_self();
            self.drive();
            self.publish();
        }
    }

    /// The leader's lease duties: restart every lease's time on taking
    /// over, then propose the expiry of those that ran out.
    fn leases(&mut self) {
        let ballot = self.replica.leading_ballot();
        let leading = ballot.is_some();
        let now = self.now().0;
        // A new leadership, even one that followed another between two
        // rounds, restarts every lease.
        if leading && ballot != self.led_ballot {
            self.lessor.promote(&self.kv, now);
        }
        self.led_ballot = ballot;
        if !self.lease_queries.is_empty() {
            self.lease_queries.retain(|_, reply| !reply.is_closed());
        }
        if !leading {
            return;
        }
        let due = self.lessor.due(now);
        if due.is_empty() {
            return;
        }
        // Confirm leadership first: a deposed leader that has not noticed
        // holds deadlines its successor's renewals never reached, and its
        // proposal could still be chosen later (a new leader re-proposes
        // what it finds accepted). Checked in the simulator.
        let rid = ReadId(self.next_read);
        self.next_read += 1;
        if self.replica.read(rid, self.now()).is_ok() {
            self.reads.insert(rid, Waiter::Expire(due));
        }
    }

    /// A member added by `member add` is in the table with its peer
    /// address only; once it runs and is part of the configuration it
    /// records its name and client address there (etcd's publish).
    fn publish_self(&mut self) {
        if self.kv.members().is_empty() || self.published_self.elapsed() < QUOTA_CHECK * 2 {
            return;
        }
        let Some(mine) = self.kv.members().iter().find(|m| m.id == self.id.0) else {
            return;
        };
        let Some(me) = self.initial_members.iter().find(|m| m.id == self.id.0) else {
            return;
        };
        if mine.client_ur_ls == me.client_ur_ls && mine.name == me.name {
            return;
        }
        let in_config = self
            .replica
            .membership()
            .is_some_and(|c| c.is_member(self.id));
        if !in_config {
            return;
        }
        self.published_self = Instant::now();
        let update = MemberInfo {
            name: me.name.clone(),
            client_ur_ls: me.client_ur_ls.clone(),
            ..mine.clone()
        };
        self.issue(Op::MemberTable(MemberTable {
            members: vec![update],
            removed: Vec::new(),
        }));
    }

    /// Raises this member's NOSPACE alarm once the database outgrows the
    /// quota (etcd's `--quota-backend-bytes`).
    fn check_quota(&mut self) {
        if self.quota_bytes == 0 || self.quota_checked.elapsed() < QUOTA_CHECK {
            return;
        }
        self.quota_checked = Instant::now();
        let size = std::fs::metadata(&self.storage_file).map_or(0, |m| m.len());
        let raised = self
            .kv
            .alarms()
            .iter()
            .any(|a| a.member_id == self.id.0 && a.alarm == AlarmType::Nospace as i32);
        if size > self.quota_bytes && !raised {
            tracing::warn!(
                size,
                quota = self.quota_bytes,
                "database over quota: raising NOSPACE"
            );
            self.issue(Op::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.id.0,
                alarm: AlarmType::Nospace as i32,
            }));
        }
    }

    /// Proposes a command of the node's own; nobody waits for its answer.
    fn issue(&mut self, op: Op) {
        let key = self.next_key();
        self.on_write(key, Some(op), None, false);
    }

    /// Returns false on shutdown.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Shutdown => return false,
            Input::Peer(batch) => self.on_peer(batch),
            Input::Write { op, reply } => self.on_client_write(op, reply),
            Input::Read {
                request,
                serializable,
                reply,
            } => self.on_read(request, serializable, reply),
            Input::Watch {
                stream,
                spec,
                announce,
            } => self.on_watch(stream, spec, announce),
            Input::LeaseQuery { id, renew, reply } => {
                self.on_lease_query(id, renew, LeaseReply::Local(reply))
            }
            Input::Query(f) => f(&self.kv),
            Input::ChangeMembership { target, reply } => {
                let _ = reply.send(self.on_change_membership(target));
            }
            Input::Transfer { to, reply } => {
                let r = self
                    .replica
                    .transfer_leadership(to)
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
        }
        true
    }

    /// Computes a new watcher's past from the store and hands it to the
    /// hub, behind every event already handed over.
    fn on_watch(&mut self, stream: StreamId, spec: WatchSpec, announce: bool) {
        self.flush_events();
        let current = self.kv.revision();
        let (after, history) = if spec.start_revision <= 0 {
            (current, Ok(Vec::new()))
        } else if spec.start_revision > current {
            (spec.start_revision - 1, Ok(Vec::new()))
        } else {
            match self.kv.history(&spec.range, spec.start_revision) {
                Ok(events) => (current, Ok(events)),
                Err(KvError::Compacted {
                    compact_revision, ..
                }) => (current, Err(compact_revision)),
                Err(_) => (current, Ok(Vec::new())),
            }
        };
        let _ = self.hub.send(HubInput::Register {
            stream,
            spec,
            after,
            history,
            announce,
        });
    }

    /// Hands applied events to the hub.
    fn flush_events(&mut self) {
        if !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            let _ = self.hub.send(HubInput::Events {
                revision: self.kv.revision(),
                events,
            });
        }
    }

    /// A lease question: the leader answers once it confirmed it still
    /// leads; anyone else asks the leader.
    fn on_lease_query(&mut self, id: i64, renew: bool, reply: LeaseReply) {
        let rid = ReadId(self.next_read);
        self.next_read += 1;
        let now = self.now();
        if self.replica.read(rid, now).is_ok() {
            self.reads.insert(rid, Waiter::Lease { id, renew, reply });
            return;
        }
        let LeaseReply::Local(reply) = reply else {
            // Asked by a peer that thinks we lead; it will retry.
            return;
        };
        match self.replica.status().leader {
            Some(leader) if leader != self.id => {
                let token = self.next_token;
                self.next_token += 1;
                self.lease_queries.insert(token, reply);
                let query = peerpb::LeaseQuery { token, id, renew };
                self.send_batch(
                    leader,
                    Vec::new(),
                    Vec::new(),
                    None,
                    vec![query],
                    Vec::new(),
                );
            }
            // No leader known: the caller times out and retries.
            _ => drop(reply),
        }
    }

    /// Answers a lease question at a confirmed point of leadership.
    fn answer_lease(&mut self, id: i64, renew: bool, reply: LeaseReply) {
        let now = self.now().0;
        let answer = if renew {
            self.lessor.renew(&self.kv, id, now).map(|ttl| (ttl, ttl))
        } else {
            self.lessor.remaining(&self.kv, id, now)
        };
        match reply {
            LeaseReply::Local(tx) => {
                let _ = tx.send(answer);
            }
            LeaseReply::Remote { to, token } => {
                let (ttl, granted_ttl) = answer.unwrap_or((-1, 0));
                let a = peerpb::LeaseAnswer {
                    token,
                    ttl,
                    granted_ttl,
                };
                self.send_batch(to, Vec::new(), Vec::new(), None, Vec::new(), vec![a]);
            }
        }
    }

    fn serve(&mut self, waiter: Waiter) {
        match waiter {
            Waiter::Read(w) => {
                let _ = w.reply.send(self.kv.range(&w.request));
            }
            Waiter::Lease { id, renew, reply } => self.answer_lease(id, renew, reply),
            Waiter::Expire(ids) => self.issue(Op::LeaseExpire(LeaseExpire { ids })),
        }
    }

    fn on_peer(&mut self, batch: peerpb::Batch) {
        if batch.cluster_id != self.cluster_id {
            tracing::warn!(
                from = batch.from,
                cluster = batch.cluster_id,
                "batch from another cluster dropped"
            );
            return;
        }
        let from = NodeId(batch.from);
        let now = self.now();
        for envelope in batch.messages {
            match codec::decode(envelope) {
                Ok((to, message)) if to == self.id => self.replica.step(from, message, now),
                Ok(_) => tracing::warn!(%from, "message for another node dropped"),
                Err(e) => tracing::warn!(%from, error = %e, "peer message dropped"),
            }
        }
        if let Some(chunk) = batch.snapshot {
            self.on_snapshot_chunk(chunk);
        }
        for command in batch.forwards {
            // Forwarded to us as the leader; if we no longer lead, the
            // sender forwards again to whoever does.
            let _ = self.replica.propose(command);
        }
        for q in batch.lease_queries {
            let reply = LeaseReply::Remote {
                to: from,
                token: q.token,
            };
            self.on_lease_query(q.id, q.renew, reply);
        }
        for a in batch.lease_answers {
            if let Some(reply) = self.lease_queries.remove(&a.token) {
                let answer = (a.ttl >= 0).then_some((a.ttl, a.granted_ttl));
                let _ = reply.send(answer);
            }
        }
    }

    /// A client's write, refused at once when too many already wait.
    fn on_client_write(&mut self, op: Op, reply: oneshot::Sender<Outcome>) {
        if self.writes.len() >= PENDING_WRITES_MAX {
            let _ = reply.send(error_outcome(&KvError::TooManyRequests));
            return;
        }
        let key = self.next_key();
        self.on_write(key, Some(op), Some(reply), false);
    }

    /// The next `(session, seq)` of this incarnation.
    fn next_key(&mut self) -> (u64, u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (self.session, seq)
    }

    /// Encodes the command once (these bytes are proposed, forwarded and
    /// logged), remembers it until it applies here, and submits it.
    fn on_write(
        &mut self,
        key: (u64, u64),
        op: Option<Op>,
        reply: Option<OutcomeReply>,
        barrier: bool,
    ) {
        debug_assert_eq!(key.0, self.session);
        // Every seq below the lowest one still pending was answered (or
        // given up): the state machine may forget those outcomes.
        let answered_below = self
            .writes
            .range((self.session, 0)..=(self.session, u64::MAX))
            .next()
            .map_or(key.1, |((_, seq), _)| (*seq).min(key.1));
        let command = Command {
            client: key.0,
            seq: key.1,
            answered_below,
            op,
        };
        let pending = PendingWrite {
            command: Bytes::from(command.encode_to_vec()),
            forwarded_at: None,
            barrier,
        };
        self.writes.insert(key, (reply, pending));
        self.submit(key);
    }

    /// Proposes here when leading, else forwards to the leader.
    fn submit(&mut self, key: (u64, u64)) {
        let Some((_, pending)) = self.writes.get_mut(&key) else {
            return;
        };
        let command = pending.command.clone();
        match self.replica.propose(command.clone()) {
            Ok(()) => pending.forwarded_at = None,
            Err(ProposeError::NotLeader { leader: Some(l) }) if l != self.id => {
                pending.forwarded_at = Some(Instant::now());
                self.send(l, Vec::new(), vec![command]);
            }
            Err(ProposeError::Busy) => {
                if let Some((reply, _)) = self.writes.remove(&key) {
                    answer(reply, error_outcome(&KvError::TooManyRequests));
                }
                if let Some(w) = self.barrier_reads.remove(&key) {
                    let _ = w.reply.send(Err(KvError::TooManyRequests));
                }
            }
            Err(_) => pending.forwarded_at = Some(Instant::now()),
        }
    }

    /// Submits again every write that may have been lost: forwarded long
    /// ago without an answer, or proposed here while this node led and
    /// leads no more (the new leader may have filled its slot with a
    /// no-op). A write that was chosen after all applies once: the state
    /// machine remembers each (client, seq).
    fn reforward(&mut self) {
        self.drop_abandoned();
        let leading = self.replica.role_kind() == RoleKind::Leader;
        let due: Vec<(u64, u64)> = self
            .writes
            .iter()
            .filter(|(_, (_, p))| match p.forwarded_at {
                Some(t) => t.elapsed() >= Duration::from_millis(REFORWARD_MS),
                None => !leading,
            })
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.submit(key);
        }
    }

    /// Forgets writes and barrier reads whose client stopped waiting (timed
    /// out or disconnected): they are not forwarded again, and the bound on
    /// pending writes counts only live ones. A copy already proposed may
    /// still apply; nobody is told, as with any timed-out etcd request.
    fn drop_abandoned(&mut self) {
        let reads = &mut self.barrier_reads;
        reads.retain(|_, w| !w.reply.is_closed());
        self.writes.retain(|key, (reply, pending)| match reply {
            Some(reply) => !reply.is_closed(),
            // A barrier lives as long as its read; the node's own commands
            // until they apply.
            None => !pending.barrier || reads.contains_key(key),
        });
    }

    fn on_read(
        &mut self,
        request: RangeRequest,
        serializable: bool,
        reply: oneshot::Sender<Result<RangeResponse, KvError>>,
    ) {
        if serializable {
            let _ = reply.send(self.kv.range(&request));
            return;
        }
        let rid = ReadId(self.next_read);
        self.next_read += 1;
        let now = self.now();
        match self.replica.read(rid, now) {
            Ok(()) => {
                self.reads
                    .insert(rid, Waiter::Read(WaitingRead { request, reply }));
            }
            Err(_) => {
                // Not the leader: a barrier command through the log orders
                // this read after every write acknowledged before it.
                let key = self.next_key();
                self.barrier_reads
                    .insert(key, WaitingRead { request, reply });
                self.on_write(key, None, None, true);
            }
        }
    }

    /// The runtime loop: persist, send, apply, answer, until quiet.
    fn drive(&mut self) {
        while self.replica.has_ready() {
            let ready = self.replica.ready();
            self.handle_ready(ready);
        }
    }

    fn handle_ready(&mut self, ready: Ready<Bytes>) {
        let mut by_peer: BTreeMap<NodeId, Vec<peerpb::Envelope>> = BTreeMap::new();
        for e in &ready.messages {
            by_peer
                .entry(e.to)
                .or_default()
                .push(codec::encode(e.to, &e.message));
        }
        for (to, messages) in by_peer {
            self.send(to, messages, Vec::new());
        }
        if !ready.persist.is_empty() {
            let result = self.storage.batch().and_then(|mut batch| {
                batch.persist(GROUP, &ready.persist)?;
                batch.commit()
            });
            // A durable write that fails is fail-stop: continuing could
            // acknowledge state that is not on disk.
            if let Err(e) = result {
                panic!("storage write failed, stopping the node: {e}");
            }
        }
        for apply in &ready.apply {
            self.apply(apply.slot, &apply.value);
        }
        for read in &ready.reads {
            if let Some(w) = self.reads.remove(&read.id) {
                self.reads_at.push_back((read.slot, w));
            }
        }
        for id in &ready.reads_dropped {
            match self.reads.remove(id) {
                // Retry as a follower read.
                Some(Waiter::Read(w)) => self.on_read(w.request, false, w.reply),
                Some(Waiter::Lease { id, renew, reply }) => self.on_lease_query(id, renew, reply),
                // Not leading any more: the next leader decides.
                Some(Waiter::Expire(_)) | None => {}
            }
        }
        for command in ready.dropped {
            if let Ok(c) = Command::decode(command.clone()) {
                self.submit((c.client, c.seq));
            }
        }
        for to in ready.snapshots {
            self.send_snapshot(to);
        }
        if let Some(configuration) = &ready.membership {
            self.connect_peers(configuration);
            self.members_dirty = true;
        }
        self.serve_reads();
        self.flush_events();
        self.replica.on_persisted(ready.token);
        self.maybe_snapshot();
    }

    /// Every `snapshot_every` applied slots: write the state machine and its
    /// applied slot in one transaction, then let the core drop the log
    /// prefix the snapshot covers.
    fn maybe_snapshot(&mut self) {
        let last = self.snapshot.as_ref().map_or(0, |(s, _)| s.0);
        if self.applied.0 < last + self.snapshot_every {
            return;
        }
        let data = Bytes::from(self.kv.snapshot().encode_to_vec());
        let slot = self.applied;
        // The configuration at the snapshot goes with it: compaction may
        // delete the log entries that chose it.
        let membership = self.replica.membership_at(slot);
        self.write_snapshot(slot, &data, membership.as_ref());
        self.snapshot = Some((slot, data));
        self.replica.compact(slot);
    }

    /// Makes a snapshot, its applied slot, the compaction of the log it
    /// covers and the configuration in effect at `slot` durable in one
    /// transaction. A failed durable write is fail-stop.
    fn write_snapshot(&self, slot: Slot, data: &[u8], membership: Option<&Configuration>) {
        let result = self.storage.batch().and_then(|mut batch| {
            batch.put_snapshot(GROUP, slot, data, membership)?;
            batch.commit()
        });
        if let Err(e) = result {
            panic!("snapshot write failed, stopping the node: {e}");
        }
    }

    /// Sends the latest snapshot in chunks.
    fn send_snapshot(&mut self, to: NodeId) {
        let Some((slot, data)) = self.snapshot.clone() else {
            return;
        };
        let membership = self
            .replica
            .membership_at(slot)
            .map(|c| codec::configuration(&c));
        let total = data.len();
        let mut offset = 0;
        loop {
            let end = (offset + self.snapshot_chunk_bytes).min(total);
            let chunk = peerpb::Snapshot {
                slot: slot.0,
                data: data.slice(offset..end),
                offset: offset as u64,
                total: total as u64,
                membership: membership.clone(),
            };
            self.send_batch(
                to,
                Vec::new(),
                Vec::new(),
                Some(chunk),
                Vec::new(),
                Vec::new(),
            );
            offset = end;
            if offset >= total {
                return;
            }
        }
    }

    /// Reassembles a snapshot from its chunks. A resent snapshot (the
    /// leader resends until the replica catches up) resumes: chunks already
    /// held are skipped; a gap or another slot starts over.
    fn on_snapshot_chunk(&mut self, chunk: peerpb::Snapshot) {
        let (slot, offset, total) = (
            Slot(chunk.slot),
            chunk.offset as usize,
            chunk.total as usize,
        );
        if !self.replica.wants_snapshot(slot) {
            self.incoming = None;
            return;
        }
        if let Err(why) = check_chunk(&chunk.data, chunk.offset, chunk.total) {
            tracing::warn!(%slot, offset, total, "snapshot chunk refused: {why}");
            self.incoming = None;
            return;
        }
        let fresh = match &self.incoming {
            Some((s, t, _, _)) => *s != slot || *t != total,
            None => true,
        };
        if fresh {
            if offset != 0 {
                return;
            }
            let membership = match chunk.membership.map(codec::get_configuration) {
                Some(Ok(c)) => Some(c),
                Some(Err(e)) => {
                    tracing::warn!(%slot, error = %e, "snapshot with a bad configuration dropped");
                    return;
                }
                None => None,
            };
            let buf = Vec::with_capacity(total.min(64 << 20));
            self.incoming = Some((slot, total, buf, membership));
        }
        let Some((_, _, buf, _)) = self.incoming.as_mut() else {
            return;
        };
        if offset != buf.len() {
            // Held already (a resend), or after a lost chunk: wait for the
            // resend to reach where we are.
            return;
        }
        buf.extend_from_slice(&chunk.data);
        if buf.len() >= total {
            let (_, _, data, membership) = self.incoming.take().expect("checked above");
            self.install_snapshot(slot, Bytes::from(data), membership);
        }
    }

    /// A snapshot from the leader: install it durably, then jump the
    /// replica and answer writes it already contains.
    fn install_snapshot(&mut self, slot: Slot, data: Bytes, membership: Option<Configuration>) {
        if !self.replica.wants_snapshot(slot) {
            return;
        }
        let kv = match decode_snapshot(&data) {
            Ok(kv) => kv,
            Err(e) => {
                tracing::warn!(%slot, error = %e, "malformed snapshot dropped");
                return;
            }
        };
        self.write_snapshot(slot, &data, membership.as_ref());
        self.flush_events();
        self.kv = kv;
        self.lessor.reset(&self.kv, self.now().0);
        let _ = self.hub.send(HubInput::Jump {
            revision: self.kv.revision(),
        });
        self.applied = slot;
        self.snapshot = Some((slot, data));
        self.snapshots_installed += 1;
        let installed = match membership {
            Some(configuration) => {
                self.connect_peers(&configuration);
                self.replica
                    .install_snapshot_with_membership(slot, configuration)
            }
            None => self.replica.install_snapshot(slot),
        };
        assert!(installed, "wanted snapshot refused");
        self.members_dirty = true;
        let answered: Vec<(u64, u64)> = self
            .writes
            .keys()
            .filter(|(c, q)| self.kv.session_outcome(*c, *q).is_some())
            .copied()
            .collect();
        for key in answered {
            if let (Some((reply, _)), Some(outcome)) = (
                self.writes.remove(&key),
                self.kv.session_outcome(key.0, key.1),
            ) {
                answer(reply, outcome.clone());
            }
        }
        self.serve_reads();
    }

    fn apply(&mut self, slot: Slot, value: &Value<Bytes>) {
        assert_eq!(slot, self.applied.next(), "apply out of order");
        self.applied = slot;
        let Value::Batch(commands) = value else {
            return;
        };
        for bytes in commands.iter() {
            let Ok(command) = Command::decode(bytes.clone()) else {
                tracing::error!(%slot, "undecodable command in the log skipped");
                continue;
            };
            let mut applied = self.kv.apply(&command);
            if !applied.duplicate {
                self.follow_leases(&command);
            }
            self.events.append(&mut applied.events);
            let key = (command.client, command.seq);
            if let Some((reply, _)) = self.writes.remove(&key) {
                answer(reply, applied.outcome);
            }
            if let Some(w) = self.barrier_reads.remove(&key) {
                let _ = w.reply.send(self.kv.range(&w.request));
            }
        }
    }

    /// Keeps lease deadlines in step with grants and revocations.
    fn follow_leases(&mut self, command: &Command) {
        match &command.op {
            Some(Op::LeaseGrant(r)) => {
                if let Some(l) = self.kv.leases().get(r.id) {
                    self.lessor.granted(r.id, l.ttl, self.now().0);
                }
            }
            Some(Op::LeaseRevoke(r)) => self.lessor.revoked(r.id),
            Some(Op::LeaseExpire(r)) => {
                for id in &r.ids {
                    self.lessor.revoked(*id);
                }
            }
            Some(Op::MemberTable(_)) => {
                self.members_dirty = true;
                if let Some(c) = self.replica.membership().cloned() {
                    // An address may have changed (member update).
                    self.connect_peers(&c);
                }
            }
            _ => {}
        }
    }

    fn serve_reads(&mut self) {
        while let Some((slot, _)) = self.reads_at.front() {
            if *slot > self.applied {
                break;
            }
            let (_, w) = self.reads_at.pop_front().expect("front exists");
            self.serve(w);
        }
    }

    fn send(&mut self, to: NodeId, messages: Vec<peerpb::Envelope>, forwards: Vec<Bytes>) {
        self.send_batch(to, messages, forwards, None, Vec::new(), Vec::new());
    }

    fn send_batch(
        &mut self,
        to: NodeId,
        messages: Vec<peerpb::Envelope>,
        forwards: Vec<Bytes>,
        snapshot: Option<peerpb::Snapshot>,
        lease_queries: Vec<peerpb::LeaseQuery>,
        lease_answers: Vec<peerpb::LeaseAnswer>,
    ) {
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        let batch = peerpb::Batch {
            from: self.id.0,
            cluster_id: self.cluster_id,
            messages,
            forwards,
            snapshot,
            lease_queries,
            lease_answers,
        };
        // A full queue means the peer is slow or gone: drop, Paxos resends.
        let _ = peer.try_send(batch);
    }

    fn publish(&mut self) {
        let status = self.replica.status();
        let mut p = self.published.lock().expect("status lock");
        p.leader = status.leader;
        p.is_leader = status.role == RoleKind::Leader;
        p.round = status.promised.round;
        p.commit = status.commit.0;
        p.applied = self.applied.0;
        p.revision = self.kv.revision();
        p.compact_revision = self.kv.compact_revision();
        p.snapshot_slot = self.snapshot.as_ref().map_or(0, |(s, _)| s.0);
        p.snapshots_installed = self.snapshots_installed;
        p.alarms = self
            .kv
            .alarms()
            .iter()
            .map(|a| (a.member_id, a.alarm))
            .collect();
        p.membership_changing = status.membership_changing;
        p.transferring_to = status.transferring_to;
        if p.membership != status.membership {
            p.membership = status.membership;
            p.members = member_list(self.member_table(), p.membership.as_ref());
        } else if self.members_dirty {
            p.members = member_list(self.member_table(), p.membership.as_ref());
        }
        drop(p);
        self.members_dirty = false;
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

/// Checks a snapshot chunk's claims before any byte of it is buffered: a
/// peer cannot make this node allocate more than `SNAPSHOT_BYTES_MAX`, nor
/// write past the total it announced.
fn check_chunk(data: &[u8], offset: u64, total: u64) -> Result<(), String> {
    if total == 0 || total > SNAPSHOT_BYTES_MAX {
        return Err(format!("total {total} outside 1..={SNAPSHOT_BYTES_MAX}"));
    }
    if data.len() > SNAPSHOT_CHUNK_BYTES_MAX {
        return Err(format!(
            "{} bytes in one chunk, more than {SNAPSHOT_CHUNK_BYTES_MAX}",
            data.len()
        ));
    }
    match offset.checked_add(data.len() as u64) {
        Some(end) if end <= total => Ok(()),
        _ => Err(format!(
            "{} bytes at {offset} run past the total",
            data.len()
        )),
    }
}

/// Hands a write's outcome to its client, if one waits.
fn answer(reply: Option<OutcomeReply>, outcome: Outcome) {
    if let Some(reply) = reply {
        let _ = reply.send(outcome);
    }
}

/// Decodes a state-machine snapshot (from disk or from a leader).
pub(crate) fn decode_snapshot(data: &Bytes) -> Result<KvStore, String> {
    let snapshot =
        synod_proto::synodpb::Snapshot::decode(data.clone()).map_err(|e| e.to_string())?;
    KvStore::restore(snapshot).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_chunks_that_claim_too_much_are_refused() {
        assert!(check_chunk(b"abc", 0, 3).is_ok());
        assert!(check_chunk(b"abc", 7, 10).is_ok());
        assert!(check_chunk(b"abc", 8, 10)
            .unwrap_err()
            .contains("past the total"));
        assert!(check_chunk(b"abc", u64::MAX - 1, 10).is_err());
        assert!(check_chunk(b"", 0, 0).unwrap_err().contains("outside"));
        assert!(check_chunk(b"a", 0, SNAPSHOT_BYTES_MAX + 1).is_err());
        let big = vec![0u8; SNAPSHOT_CHUNK_BYTES_MAX + 1];
        assert!(check_chunk(&big, 0, SNAPSHOT_BYTES_MAX).is_err());
    }
}
