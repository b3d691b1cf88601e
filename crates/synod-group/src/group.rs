//! The group driver's state and its inputs.

use crate::read_index::Question;
use crate::types::{
    Answer, Compaction, Granted, GroupConfig, GroupStatus, PeerItem, Request, Ticket,
};
use bytes::Bytes;
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synod_kv::zk::ZkEvent;
use synod_kv::{error_outcome, KvError, KvStore, Lessor};
use synod_paxos::{
    Ballot, Configuration, Membership, NodeId, ProposeError, ReadId, Replica, RoleKind, Slot, Time,
};
use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::{AlarmRequest, AlarmType, Member, RangeRequest};
use synod_proto::mvccpb::Event;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{Caller, Command, MemberTable};

/// Writes waiting for their outcome here (proposed or forwarded) before
/// new client writes are refused with "too many requests". Each holds its
/// encoded command, so this bounds memory too.
pub const PENDING_WRITES_MAX: usize = 16_384;
/// The slot a group made by a split starts from: its state at the split
/// stands for the log through here.
pub const SPLIT_SLOT: Slot = Slot(1);
/// A forwarded command not yet applied is forwarded again after this long.
pub const REFORWARD_MS: u64 = 300;
/// How often a member that joined checks that the table shows its own
/// name and client address.
const PUBLISH_SELF_MS: u64 = 2_000;

const _: () = assert!(PENDING_WRITES_MAX <= synod_kv::SESSION_OUTCOMES_MAX);

/// A write this node proposed or forwarded, until it applies here.
pub(crate) struct PendingWrite {
    /// The encoded command: these bytes are proposed, forwarded and logged.
    pub(crate) command: Bytes,
    /// When it was last forwarded; `None` when proposed here.
    pub(crate) forwarded_at: Option<Time>,
    /// Who waits for the outcome (`None`: the node's own commands).
    pub(crate) ticket: Option<Ticket>,
    /// Valid only under the leadership that issued it (a lease expiry,
    /// decided on this leader's clock): never forwarded to another leader,
    /// dropped when this replica stops leading.
    pub(crate) leader_only: bool,
    /// When it was first submitted: past the deadline it is dropped.
    pub(crate) submitted_at: Time,
    /// Its node stamped it (see `Request::WriteStamped`): proposed as it
    /// is, never stamped by the leader.
    pub(crate) prestamped: bool,
}

/// How a write is handled until it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteKind {
    /// Proposed here or forwarded to the leader, again until it applies.
    Plain,
    /// Proposed by this leader or not at all (see `issue_as_leader`).
    LeaderOnly,
    /// Stamped by its node (see `Request::WriteStamped`).
    Stamped(i64),
}

/// A range read waiting for a linearizable point.
pub(crate) struct WaitingRead {
    pub(crate) request: RangeRequest,
    pub(crate) ticket: Ticket,
}

/// Where an answer given at a confirmed point of leadership goes (a
/// lease question, timestamps): a client here, or the member that asked.
pub(crate) enum ReplyTo {
    Local(Ticket),
    Remote { to: NodeId, token: u64 },
}

/// Something waiting for a point at which this replica surely leads.
pub(crate) enum Waiter {
    Read(WaitingRead),
    Lease {
        id: i64,
        renew: bool,
        reply: ReplyTo,
    },
    /// Leases that ran out, proposed for expiry once leadership is
    /// confirmed.
    Expire(Vec<i64>),
    /// A follower's read-index question: answered with the slot.
    Index {
        to: NodeId,
        token: u64,
    },
    /// Timestamps, handed out once leadership is confirmed.
    Timestamps {
        count: u32,
        leases: Vec<i64>,
        reply: ReplyTo,
    },
}

/// Deliberately broken variants, for the simulator's negative controls.
#[cfg(feature = "mutations")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupMutation {
    /// Answer keep-alives without confirming leadership first.
    UnconfirmedKeepalives,
    /// Serve a follower's linearizable read from its own state at once,
    /// without asking the leader for a confirmed point.
    FollowerReadsUnconfirmed,
    /// Hand out timestamps without confirming leadership first.
    UnconfirmedTimestamps,
    /// A shard's leader asks the oracle for more stamps than it needs and
    /// stamps later writes from what is left, without asking again: a
    /// leftover lies below stamps other shards handed out since.
    StampsFromLeftovers,
    /// A shard keeps applying writes of keys a split gave away (its
    /// state machine does not refuse them): they are lost to the new
    /// shard that owns them.
    SplitUnfenced,
    /// A shard's leader attaches keys to every lease its writes name,
    /// without the oracle's word that they are live: a put stamped after
    /// a revocation keeps its key forever.
    LeasesUnchecked,
    /// A shard's state machine applies a client's write whatever the
    /// stamp's auth fence says: a write its node judged before a
    /// permission was revoked applies after the revocation (design 0018).
    AuthUnfenced,
    /// A compaction goes out without the rows it relies on: the log below
    /// it is deleted while the rows on disk may still stand for an older
    /// slot, so a crash then loses the writes between.
    RowsUnwrittenAtCompaction,
}

/// One Paxos group on one node: its replica, its state machine, its lease
/// deadlines and every request waiting on it. Pure: time comes in with
/// each input, and everything to send, persist or answer comes out of
/// [`ready`](Group::ready).
///
/// Invariants (checked by `check_invariants`): `applied` is the replica's
/// applied slot as far as the state machine knows; every key of `writes`
/// is of this incarnation's session and below `next_seq`; `reads_at` is
/// in slot order (R2, see `read_index`).
pub struct Group {
    pub(crate) config: GroupConfig,
    pub(crate) replica: Replica<Bytes>,
    pub(crate) kv: KvStore,
    pub(crate) lessor: Lessor,
    pub(crate) now: Time,
    pub(crate) applied: Slot,
    pub(crate) next_seq: u64,
    /// Writes waiting for their `(session, seq)` to apply here.
    pub(crate) writes: BTreeMap<(u64, u64), PendingWrite>,
    /// Linearizable reads and lease questions registered with the replica.
    pub(crate) reads: BTreeMap<ReadId, Waiter>,
    /// Released by the replica, waiting for `applied` to reach a slot.
    pub(crate) reads_at: VecDeque<(Slot, Waiter)>,
    /// Reads on a follower waiting for the next read-index question.
    pub(crate) index_waiting: Vec<WaitingRead>,
    /// Read-index questions sent to the leader, by token.
    pub(crate) index_asked: BTreeMap<u64, Question>,
    /// The leader refused a question since the last tick: ask again after
    /// the next one.
    pub(crate) index_refused: bool,
    pub(crate) next_read: u64,
    /// The ballot this replica led with at the last lease check.
    pub(crate) led_ballot: Option<Ballot>,
    /// Lease questions forwarded to the leader, by token.
    pub(crate) lease_queries: BTreeMap<u64, Ticket>,
    pub(crate) next_token: u64,
    /// A snapshot stream to a replica holds compaction at this slot,
    /// since this time (see `snapshot_started`).
    pub(crate) hold: Option<(Slot, Time)>,
    /// Replicas the shell should stream a snapshot to.
    pub(crate) snapshots_out: Vec<NodeId>,
    /// The log is compacted through this slot.
    pub(crate) compacted: Slot,
    /// Bytes of commands applied since the last compaction.
    pub(crate) log_bytes: u64,
    pub(crate) snapshots_installed: u64,
    /// Per session: the revision its last command left and when this
    /// replica applied it (see `sessions`).
    pub(crate) session_seen: BTreeMap<u64, (i64, Time)>,
    pub(crate) sessions_scanned_at: Time,
    /// Sessions expired through the log since start.
    pub(crate) sessions_expired: u64,
    pub(crate) published_self_at: Time,
    /// The timestamp oracle (see `tso`).
    pub(crate) oracle: crate::tso::Oracle,
    /// Writes waiting for stamps (see `stamps`).
    pub(crate) stamper: crate::stamps::Stamper,
    /// Running totals for the shell's metrics.
    pub(crate) counters: crate::types::GroupCounters,
    /// The replica's role at the last `ready`, to count elections.
    pub(crate) last_role: RoleKind,
    // Output gathered between two `ready` calls.
    pub(crate) sends: Vec<(NodeId, PeerItem)>,
    pub(crate) answers: Vec<(Ticket, Answer)>,
    pub(crate) events: Vec<Event>,
    pub(crate) zk_events: Vec<ZkEvent>,
    pub(crate) compact_out: Option<Compaction>,
    pub(crate) jump: Option<i64>,
    pub(crate) membership_out: Option<Configuration>,
    pub(crate) members_changed: bool,
    pub(crate) expired: Vec<i64>,
    pub(crate) installed: Option<crate::types::Installed>,
    pub(crate) applied_log: Vec<(Slot, synod_paxos::Value<Bytes>)>,
    /// Groups applied splits cut off since the last ready.
    pub(crate) splits: Vec<crate::types::SplitOff>,
    /// Rounds that applied commands since the rows were last written.
    pub(crate) rounds_unwritten: u64,
    /// The applied slot at the last `ready`.
    pub(crate) ready_applied: Slot,
    /// When the rows were last written.
    pub(crate) rows_written_at: Time,
    /// Write the rows in the next ready whatever is due.
    pub(crate) flush_now: bool,
    /// Per ready handed out and not yet reported written: whether it
    /// carried the store's changes (`on_written` releases only those).
    pub(crate) carried_rows: VecDeque<bool>,
    #[cfg(feature = "mutations")]
    pub(crate) mutation: Option<GroupMutation>,
}

impl Group {
    /// A group restored from its durable state: the replica from its log,
    /// the state machine from its rows, which must hold the log through
    /// the replica's applied slot (the durable applied slot written with
    /// them; an empty store for a new group).
    pub fn new(config: GroupConfig, replica: Replica<Bytes>, kv: KvStore, now: Time) -> Group {
        let status = replica.status();
        let (applied, compacted) = (status.applied, status.snapshot);
        let mut lessor = Lessor::default();
        lessor.reset(&kv, now.0);
        let mut group = Group {
            config,
            replica,
            kv,
            lessor,
            now,
            applied,
            next_seq: 1,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            reads_at: VecDeque::new(),
            index_waiting: Vec::new(),
            index_asked: BTreeMap::new(),
            index_refused: false,
            next_read: 1,
            led_ballot: None,
            lease_queries: BTreeMap::new(),
            next_token: 1,
            hold: None,
            snapshots_out: Vec::new(),
            compacted,
            log_bytes: 0,
            snapshots_installed: 0,
            session_seen: BTreeMap::new(),
            sessions_scanned_at: now,
            sessions_expired: 0,
            published_self_at: now,
            oracle: crate::tso::Oracle::default(),
            stamper: crate::stamps::Stamper::default(),
            counters: crate::types::GroupCounters::default(),
            last_role: RoleKind::Follower,
            sends: Vec::new(),
            answers: Vec::new(),
            events: Vec::new(),
            zk_events: Vec::new(),
            compact_out: None,
            jump: None,
            membership_out: None,
            members_changed: true,
            expired: Vec::new(),
            installed: None,
            applied_log: Vec::new(),
            splits: Vec::new(),
            rounds_unwritten: 0,
            ready_applied: applied,
            rows_written_at: now,
            flush_now: false,
            carried_rows: VecDeque::new(),
            #[cfg(feature = "mutations")]
            mutation: None,
        };
        group.reset_sessions();
        group
    }

    /// A group a split of another cut off on this node (design 0016): its
    /// store holds the keys from the split point with their history, as
    /// of the split's slot; its log starts after [`SPLIT_SLOT`], which
    /// stands for that state (a replica of it that was not there at the
    /// split catches up by a snapshot). `membership` is the parent's.
    /// Persist its first ready in the same write as the parent's split.
    /// With `lead` (this node leads the parent), the new replica runs for
    /// leader at once instead of waiting out an election timeout: writes
    /// to the moved keys stall for one round, not for a timeout.
    pub fn from_split(
        config: GroupConfig,
        mut replica: Replica<Bytes>,
        membership: Option<Configuration>,
        kv: KvStore,
        now: Time,
        lead: bool,
    ) -> Group {
        let installed = match &membership {
            Some(m) => replica.install_snapshot_with_membership(SPLIT_SLOT, m.clone()),
            // A joining replica replaying its parent's log from before it
            // learned the parent's configuration (design 0019): the new
            // group learns its own from its log, where the change that
            // added this node to it lies, as the parent did.
            None => replica.install_snapshot(SPLIT_SLOT),
        };
        assert!(installed, "a new replica takes its first state");
        if lead
            && membership
                .as_ref()
                .is_some_and(|m| m.voters().contains(&config.node))
        {
            replica.campaign_now();
        }
        let mut group = Group::new(config, replica, kv, now);
        group.compact_out = Some(crate::types::Compaction {
            slot: SPLIT_SLOT,
            membership,
        });
        group
    }

    /// A split applied on this node cut off `kv` for this group, which the
    /// node already hosts empty (a member sent it messages first, design
    /// 0019): the split's state is installed as a snapshot at
    /// [`SPLIT_SLOT`], keeping whatever this replica promised or accepted
    /// since. Returns false, changing nothing, when the group already
    /// holds a state (its leader's snapshot came first).
    pub fn adopt_split(&mut self, membership: Option<Configuration>, kv: KvStore) -> bool {
        if !self.replica.wants_snapshot(SPLIT_SLOT) {
            return false;
        }
        let installed = match membership.clone() {
            Some(m) => self.replica.install_snapshot_with_membership(SPLIT_SLOT, m),
            None => self.replica.install_snapshot(SPLIT_SLOT),
        };
        assert!(installed, "a wanted snapshot is installed");
        self.kv = kv;
        self.lessor.reset(&self.kv, self.now.0);
        self.reset_sessions();
        self.applied = SPLIT_SLOT;
        self.compacted = SPLIT_SLOT;
        self.log_bytes = 0;
        self.compact_out = Some(crate::types::Compaction {
            slot: SPLIT_SLOT,
            membership,
        });
        self.members_changed = true;
        true
    }

    /// Whether the events of applied writes carry the previous version's
    /// value (see `KvStore::set_prev_values_in_events`).
    pub fn set_prev_values_in_events(&mut self, on: bool) {
        self.kv.set_prev_values_in_events(on);
    }

    /// Turns this group into a deliberately broken variant.
    #[cfg(feature = "mutations")]
    pub fn set_mutation(&mut self, mutation: Option<GroupMutation>) {
        self.kv
            .set_unfenced(mutation == Some(GroupMutation::SplitUnfenced));
        self.kv
            .set_auth_unfenced(mutation == Some(GroupMutation::AuthUnfenced));
        self.mutation = mutation;
    }

    #[cfg(feature = "mutations")]
    pub(crate) fn mutated(&self, mutation: GroupMutation) -> bool {
        self.mutation == Some(mutation)
    }

    /// The log is compacted through this slot: a snapshot for a peer must
    /// cover at least this much.
    pub fn compacted(&self) -> Slot {
        self.compacted
    }

    /// The replica (for status, membership and the simulator's checkers).
    pub fn replica(&self) -> &Replica<Bytes> {
        &self.replica
    }

    /// Mutable access to the replica, for the simulator's mutation
    /// switches.
    pub fn replica_mut(&mut self) -> &mut Replica<Bytes> {
        &mut self.replica
    }

    /// The state machine, for local reads (serializable reads, watch
    /// history, hashes, snapshots for backups).
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// Records the range of a shard the cluster was started with, unless
    /// its store records one already (see `KvStore::set_shard_if_unset`).
    pub fn set_shard_if_unset(&mut self, shard: synod_kv::Shard) {
        self.kv.set_shard_if_unset(shard);
    }

    /// Makes this the meta group of a sharded cluster, whose leases'
    /// keys live in the shards (see `KvStore::set_lease_keys_in_shards`).
    pub fn set_lease_keys_in_shards(&mut self) {
        self.kv.set_lease_keys_in_shards();
    }

    /// Slots applied to the state machine.
    pub fn applied(&self) -> Slot {
        self.applied
    }

    /// Requests waiting here (writes, reads, lease questions).
    pub fn waiting(&self) -> usize {
        self.writes.len()
            + self.reads.len()
            + self.reads_at.len()
            + self.lease_queries.len()
            + self.index_reads()
            + self.timestamp_waiters()
            + self.stamper.len()
    }

    /// The member table: the replicated one once a change recorded it,
    /// else the members the node was started with.
    pub fn members(&self) -> &[Member] {
        if self.kv.members().is_empty() {
            &self.config.initial_members
        } else {
            self.kv.members()
        }
    }

    /// A client request. Its answer comes out of `ready` with `ticket`.
    pub fn request(&mut self, ticket: Ticket, request: Request, now: Time) {
        self.now = self.now.max(now);
        let member = self
            .replica
            .membership()
            .is_some_and(|c| c.is_member(self.config.node));
        if !member
            && !matches!(
                request,
                Request::Read {
                    serializable: true,
                    ..
                }
            )
        {
            // A spare not yet added, or a removed member: it would wait for
            // a leader forever. Its client asks another member.
            let answer = match request {
                Request::Write(_) | Request::WriteAs { .. } => {
                    Answer::Write(error_outcome(&KvError::NoLeader))
                }
                Request::Read { .. } => Answer::Read(Err(KvError::NoLeader)),
                Request::Lease { .. } => Answer::Lease(None),
                Request::Timestamps { .. } => Answer::Timestamps(None, Granted::default()),
                Request::WriteStamped { .. } => Answer::Write(error_outcome(&KvError::NoLeader)),
            };
            self.answers.push((ticket, answer));
            return;
        }
        match request {
            Request::Write(op) => self.client_write(op, None, ticket),
            Request::WriteStamped { op, stamp } => self.stamped_write(op, stamp, ticket),
            Request::WriteAs { op, caller } => self.client_write(op, Some(caller), ticket),
            Request::Read {
                request,
                serializable,
            } => self.read(WaitingRead { request, ticket }, serializable),
            Request::Lease { id, renew } => self.lease_query(id, renew, ReplyTo::Local(ticket)),
            Request::Timestamps { count, leases } => {
                self.timestamps(count, leases, ReplyTo::Local(ticket))
            }
        }
    }

    /// Something from a peer of this group.
    pub fn step(&mut self, from: NodeId, item: PeerItem, now: Time) {
        self.now = self.now.max(now);
        match item {
            PeerItem::Paxos(message) => self.replica.step(from, message, self.now),
            // Forwarded to us as the leader; if we no longer lead, the
            // sender forwards again to whoever does.
            PeerItem::Forward(command) => {
                if self.propose_or_stamp(command, None, false).is_ok() {
                    self.counters.proposed += 1;
                }
            }
            PeerItem::LeaseQuery { token, id, renew } => {
                self.lease_query(id, renew, ReplyTo::Remote { to: from, token })
            }
            PeerItem::LeaseAnswer { token, answer } => {
                if let Some(ticket) = self.lease_queries.remove(&token) {
                    self.answers.push((ticket, Answer::Lease(answer)));
                }
            }
            PeerItem::ReadIndex { token } => self.answer_read_index(from, token),
            PeerItem::TimestampQuery {
                token,
                count,
                leases,
            } => self.timestamps(count, leases, ReplyTo::Remote { to: from, token }),
            PeerItem::TimestampAnswer {
                token,
                range,
                granted,
            } => {
                if let Some(ticket) = self.oracle.asked.remove(&token) {
                    self.answers
                        .push((ticket, Answer::Timestamps(range, granted)));
                }
            }
            PeerItem::ReadIndexAnswer { token, slot } => {
                self.read_index_answered(from, token, slot)
            }
        }
    }

    /// The clock moved: elections, retransmission, forwarding again, lease
    /// duties, the member table's own entry.
    pub fn tick(&mut self, now: Time) {
        self.now = self.now.max(now);
        self.replica.tick(self.now);
        self.reforward();
        self.read_index_duties();
        self.oracle_duties();
        self.stamp_duties();
        self.session_duties();
        self.lease_duties();
        self.publish_self();
        self.rows_duties();
    }

    /// The shell's clients for `tickets` stopped waiting (timed out or
    /// disconnected): their writes are not forwarded again and count no
    /// more against the bound, their reads are not served. A copy already
    /// proposed may still apply; nobody is told.
    pub fn abandon(&mut self, tickets: &BTreeSet<Ticket>) {
        if tickets.is_empty() {
            return;
        }
        let gone = |w: &WaitingRead| tickets.contains(&w.ticket);
        self.index_waiting.retain(|w| !gone(w));
        for question in self.index_asked.values_mut() {
            question.reads.retain(|w| !gone(w));
        }
        self.writes
            .retain(|_, p| p.ticket.is_none_or(|t| !tickets.contains(&t)));
        self.lease_queries.retain(|_, t| !tickets.contains(t));
        self.oracle.abandon(tickets);
        let waiting = |w: &Waiter| match w {
            Waiter::Read(r) => !gone(r),
            Waiter::Lease {
                reply: ReplyTo::Local(t),
                ..
            }
            | Waiter::Timestamps {
                reply: ReplyTo::Local(t),
                ..
            } => !tickets.contains(t),
            _ => true,
        };
        self.reads.retain(|_, w| waiting(w));
        self.reads_at.retain(|(_, w)| waiting(w));
    }

    /// Starts a membership change towards `target` (this replica must
    /// lead). The joint configuration comes out of the next `ready` first,
    /// so the shell connects to new members before they are sent accepts.
    pub fn change_membership(&mut self, target: Membership) -> Result<(), String> {
        if let Some(current) = self.replica.membership().cloned() {
            self.membership_out = Some(Configuration::Joint {
                old: current.target().clone(),
                new: target.clone(),
            });
        }
        self.replica
            .propose_membership(target)
            .map_err(|e| e.to_string())
    }

    /// Whether `node` may talk to this group: its member table names it
    /// (where `member add` puts a node before it joins; before anything
    /// is known, the members this node was started with) or its
    /// configuration does. Anyone else could forward commands into the
    /// log.
    pub fn knows_member(&self, node: NodeId) -> bool {
        self.members().iter().any(|m| m.id == node.0)
            || self.replica.membership().is_some_and(|c| c.is_member(node))
    }

    /// The voter to hand leadership to on hand-over number `turn`: the
    /// voters other than this node in turn, so that a node that keeps
    /// handing over tries each (none when it votes alone).
    pub fn another_voter(&self, turn: usize) -> Option<NodeId> {
        let me = self.config.node;
        let others: Vec<NodeId> = self
            .replica
            .membership()
            .map(|c| c.voters())
            .unwrap_or_default()
            .into_iter()
            .filter(|v| *v != me)
            .collect();
        (!others.is_empty()).then(|| others[turn % others.len()])
    }

    /// Hands leadership to voter `to` (this replica must lead).
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), String> {
        self.replica
            .transfer_leadership(to)
            .map_err(|e| e.to_string())
    }

    /// Raises this member's NOSPACE alarm once the database outgrows the
    /// quota (etcd's `--quota-backend-bytes`); the shell measures the size.
    pub fn check_quota(&mut self, db_bytes: u64, quota_bytes: u64) {
        let me = self.config.node.0;
        let raised = self
            .kv
            .alarms()
            .iter()
            .any(|a| a.member_id == me && a.alarm == AlarmType::Nospace as i32);
        if quota_bytes == 0 || db_bytes <= quota_bytes || raised {
            return;
        }
        tracing::warn!(
            size = db_bytes,
            quota = quota_bytes,
            "database over quota: raising NOSPACE"
        );
        self.issue(Op::Alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: me,
            alarm: AlarmType::Nospace as i32,
        }));
    }

    /// What status calls show.
    pub fn status(&self) -> GroupStatus {
        let status = self.replica.status();
        GroupStatus {
            leader: status.leader,
            is_leader: status.role == RoleKind::Leader,
            seeking_leader: matches!(status.role, RoleKind::Prober | RoleKind::Candidate),
            round: status.promised.round,
            commit: status.commit.0,
            applied: self.applied.0,
            revision: self.kv.revision(),
            compact_revision: self.kv.compact_revision(),
            data_bytes: self.kv.mvcc().bytes(),
            shard_epoch: self.kv.shard().map_or(0, |s| s.epoch),
            snapshot_slot: self.compacted.0,
            snapshots_installed: self.snapshots_installed,
            sessions_expired: self.sessions_expired,
            alarms: self
                .kv
                .alarms()
                .iter()
                .map(|a| (a.member_id, a.alarm))
                .collect(),
            membership: status.membership,
            membership_changing: status.membership_changing,
            transferring_to: status.transferring_to,
            counters: self.counters,
        }
    }

    /// A client's write, refused at once when too many are in flight.
    fn client_write(&mut self, op: Op, caller: Option<Caller>, ticket: Ticket) {
        if self.writes.len() >= PENDING_WRITES_MAX {
            let outcome = error_outcome(&KvError::TooManyRequests);
            self.answers.push((ticket, Answer::Write(outcome)));
            return;
        }
        let key = self.next_key();
        self.write(key, Some(op), caller, Some(ticket), WriteKind::Plain);
    }

    /// A write its node stamped (see `Request::WriteStamped`).
    fn stamped_write(&mut self, op: Op, stamp: i64, ticket: Ticket) {
        if self.writes.len() >= PENDING_WRITES_MAX || stamp <= 0 {
            let e = if stamp <= 0 {
                KvError::InvalidArgument(synod_kv::validate::STAMP_NOT_POSITIVE)
            } else {
                KvError::TooManyRequests
            };
            self.answers
                .push((ticket, Answer::Write(error_outcome(&e))));
            return;
        }
        let key = self.next_key();
        self.write(key, Some(op), None, Some(ticket), WriteKind::Stamped(stamp));
    }

    /// The next `(session, seq)` of this incarnation.
    pub(crate) fn next_key(&mut self) -> (u64, u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (self.config.session, seq)
    }

    /// Proposes a command of the node's own; nobody waits for its answer.
    pub(crate) fn issue(&mut self, op: Op) {
        let key = self.next_key();
        self.write(key, Some(op), None, None, WriteKind::Plain);
    }

    /// Proposes a command only this leadership may propose (a lease expiry
    /// decided on its clock): if it is not proposed here and now, it is
    /// dropped; the next leader decides for itself.
    pub(crate) fn issue_as_leader(&mut self, op: Op) {
        let key = self.next_key();
        self.write(key, Some(op), None, None, WriteKind::LeaderOnly);
    }

    /// Encodes the command once, remembers it until it applies here, and
    /// submits it.
    pub(crate) fn write(
        &mut self,
        key: (u64, u64),
        op: Option<Op>,
        caller: Option<Caller>,
        ticket: Option<Ticket>,
        kind: WriteKind,
    ) {
        let session = self.config.session;
        assert_eq!(key.0, session, "a write outside this incarnation's session");
        // Every seq below the lowest one still pending was answered (or
        // given up): the state machine may forget those outcomes.
        let answered_below = self
            .writes
            .range((session, 0)..=(session, u64::MAX))
            .next()
            .map_or(key.1, |((_, seq), _)| (*seq).min(key.1));
        let command = Command {
            stamp: match kind {
                WriteKind::Stamped(s) => s,
                _ => 0,
            },
            client: key.0,
            seq: key.1,
            answered_below,
            op,
            caller,
            // Appended by the stamper (design 0017).
            live_leases: Vec::new(),
            auth_fence: None,
        };
        let pending = PendingWrite {
            command: Bytes::from(command.encode_to_vec()),
            forwarded_at: None,
            ticket,
            leader_only: kind == WriteKind::LeaderOnly,
            submitted_at: self.now,
            prestamped: matches!(kind, WriteKind::Stamped(_)),
        };
        self.writes.insert(key, pending);
        self.submit(key);
    }

    /// Proposes here when leading, else forwards to the leader.
    pub(crate) fn submit(&mut self, key: (u64, u64)) {
        let Some(pending) = self.writes.get_mut(&key) else {
            return;
        };
        let command = pending.command.clone();
        let leader_only = pending.leader_only;
        let prestamped = pending.prestamped;
        let result = self.propose_or_stamp(command.clone(), Some(key), prestamped);
        let Some(pending) = self.writes.get_mut(&key) else {
            return;
        };
        match result {
            Ok(()) => {
                pending.forwarded_at = None;
                self.counters.proposed += 1;
            }
            Err(_) if leader_only => {
                self.writes.remove(&key);
            }
            Err(ProposeError::NotLeader { leader: Some(l) }) if l != self.config.node => {
                pending.forwarded_at = Some(self.now);
                self.sends.push((l, PeerItem::Forward(command)));
                self.counters.forwarded += 1;
            }
            Err(ProposeError::Busy) => self.refuse_busy(key),
            Err(_) => pending.forwarded_at = Some(self.now),
        }
    }

    /// Submits again every write that may have been lost: forwarded long
    /// ago without an answer, or proposed here while this replica led and
    /// leads no more (the new leader may have filled its slot with a
    /// no-op). A write that was chosen after all applies once: the state
    /// machine remembers each `(session, seq)` until it is answered.
    fn reforward(&mut self) {
        let leading = self.replica.role_kind() == RoleKind::Leader;
        let now = self.now;
        let due: Vec<(u64, u64)> = self
            .writes
            .iter()
            .filter(|(_, p)| match p.forwarded_at {
                Some(t) => now.0.saturating_sub(t.0) >= REFORWARD_MS,
                None => !leading,
            })
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.submit(key);
        }
    }

    /// A range read: local when serializable; at a confirmed point on the
    /// leader; at the leader's confirmed point on a follower (read index).
    pub(crate) fn read(&mut self, read: WaitingRead, serializable: bool) {
        if serializable {
            self.counters.reads_serializable += 1;
            let answer = Answer::Read(self.kv.range_deferred(&read.request));
            self.answers.push((read.ticket, answer));
            return;
        }
        if let Some(read) = self.leader_read(read) {
            self.read_by_index(read);
        }
    }

    /// Registers a read with the replica as its leader; a leader whose
    /// read queue is full refuses it with etcd's "too many requests". Not
    /// leading: the read comes back.
    pub(crate) fn leader_read(&mut self, read: WaitingRead) -> Option<WaitingRead> {
        let rid = ReadId(self.next_read);
        self.next_read += 1;
        match self.replica.read(rid, self.now) {
            Ok(()) => {
                self.counters.reads_leader += 1;
                self.reads.insert(rid, Waiter::Read(read));
            }
            Err(ProposeError::Busy) => {
                let refusal = Answer::Read(Err(KvError::TooManyRequests));
                self.answers.push((read.ticket, refusal));
            }
            Err(_) => return Some(read),
        }
        None
    }

    /// A member added by `member add` is in the table with its peer
    /// address only; once it runs and is part of the configuration it
    /// records its name and client address there (etcd's publish).
    fn publish_self(&mut self) {
        if self.kv.members().is_empty()
            || self.now.0.saturating_sub(self.published_self_at.0) < PUBLISH_SELF_MS
        {
            return;
        }
        let id = self.config.node;
        let Some(mine) = self.kv.members().iter().find(|m| m.id == id.0) else {
            return;
        };
        let Some(me) = self.config.initial_members.iter().find(|m| m.id == id.0) else {
            return;
        };
        if mine.client_ur_ls == me.client_ur_ls && mine.name == me.name {
            return;
        }
        if !self.replica.membership().is_some_and(|c| c.is_member(id)) {
            return;
        }
        self.published_self_at = self.now;
        let update = Member {
            name: me.name.clone(),
            client_ur_ls: me.client_ur_ls.clone(),
            ..mine.clone()
        };
        self.issue(Op::MemberTable(MemberTable {
            members: vec![update],
            removed: Vec::new(),
        }));
    }

    /// Checks the invariants in the struct's doc; panics naming the broken
    /// one.
    pub fn check_invariants(&self) {
        for key in self.writes.keys() {
            assert_eq!(
                key.0, self.config.session,
                "write {key:?} of another session"
            );
            assert!(key.1 < self.next_seq, "write {key:?} not yet issued");
        }
        assert!(
            self.reads_at
                .iter()
                .zip(self.reads_at.iter().skip(1))
                .all(|((a, _), (b, _))| a <= b),
            "reads_at out of slot order"
        );
        assert!(
            self.applied <= self.replica.log().commit(),
            "applied {} past the commit point {}",
            self.applied,
            self.replica.log().commit()
        );
    }
}
