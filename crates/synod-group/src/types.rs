//! What goes into a [`Group`](crate::Group) and what comes out of it.

use bytes::Bytes;
use synod_kv::zk::ZkEvent;
use synod_kv::{KvError, RangeAnswer, StateChanges};
use synod_paxos::{Configuration, Message, NodeId, Persist, PersistToken, Slot, Value};
use synod_proto::etcdserverpb::{Member, RangeRequest};
use synod_proto::mvccpb::Event;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{AuthFence, Caller, Outcome};

/// The shell's name for a waiting client request; the group hands it back
/// with the answer. The shell picks them (unique while they wait).
pub type Ticket = u64;

/// A lease's remaining seconds and granted TTL; `None` when it does not
/// exist (or already ran out on the leader).
pub type LeaseAnswer = Option<(i64, i64)>;

/// Timestamps handed out by the group's leader, `first..=last`; `None`
/// when no leader could hand them out now (ask again).
pub type Timestamps = Option<(i64, i64)>;

/// A stamped group's question for the timestamp oracle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StampQuestion {
    /// Names the answer.
    pub id: u64,
    /// Timestamps wanted.
    pub count: u32,
    /// The leases the writes to stamp name, sorted, once each.
    pub leases: Vec<i64>,
}

/// How a group is set up; fixed for the life of one incarnation.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// This node.
    pub node: NodeId,
    /// This incarnation's session: every command the node proposes or
    /// forwards is `(session, seq)`. Must differ from every earlier
    /// incarnation's (the shell derives it from a clock and the process).
    pub session: u64,
    /// Applied slots between state-machine snapshots.
    pub snapshot_every: u64,
    /// Slots a compaction leaves in the log behind the applied slot (at
    /// most half of `snapshot_every` is used), so a follower that far
    /// behind catches up from the log rather than from a whole snapshot;
    /// the node uses [`COMPACT_KEEP_SLOTS`](crate::COMPACT_KEEP_SLOTS).
    pub compact_keep: u64,
    /// A session none of whose commands applied for this long is expired
    /// through the log, and a write waits at most a quarter of it on its
    /// node (see `sessions`); 0: sessions never expire, writes wait until
    /// their client gives up.
    pub session_idle_ms: u64,
    /// The members the node was started with (the member table before a
    /// change recorded one in the log).
    pub initial_members: Vec<Member>,
    /// Hand every applied value out in [`GroupReady::applied`] (the
    /// simulator's checkers read them; a node does not).
    pub record_applied: bool,
    /// This group serves the timestamp oracle (design 0011): the meta
    /// group will. Any other refuses timestamp requests and questions, so
    /// that nothing puts jumps into its revisions.
    pub timestamp_oracle: bool,
    /// Rounds that applied commands between two writes of the state
    /// machine's rows (at least 1: every round). In between, the rows wait
    /// in memory and the log above the durable applied slot holds what
    /// they would: a restart replays it. Fewer writes of the same meta,
    /// session and version pages per applied command; the node uses
    /// [`STATE_FLUSH_ROUNDS`](crate::STATE_FLUSH_ROUNDS).
    pub state_flush_rounds: u64,
    /// This group is a shard whose writes take their revisions from the
    /// meta group's oracle (design 0011): its leader asks the shell for
    /// stamps ([`GroupReady::stamps`]) before proposing a write.
    pub stamped: bool,
}

/// A client request for the group.
#[derive(Clone, Debug)]
pub enum Request {
    /// A write; answered with its outcome once it applied here.
    Write(Op),
    /// A write from an etcd client: the state machine checks `caller`'s
    /// permissions when it applies (while auth is enabled).
    WriteAs {
        /// The write.
        op: Op,
        /// Who sent it.
        caller: Caller,
    },
    /// A range read: linearizable unless `serializable`.
    Read {
        /// The request.
        request: RangeRequest,
        /// Serve from local state at once.
        serializable: bool,
    },
    /// A keep-alive (`renew`) or a time-to-live question, answered by the
    /// leader at a point where it surely still leads.
    Lease {
        /// The lease.
        id: i64,
        /// Restart the lease's time.
        renew: bool,
    },
    /// `count` timestamps from the group's timestamp oracle: above every
    /// timestamp any leader handed out before this request arrived
    /// (design 0011).
    Timestamps {
        /// How many (1 to [`TIMESTAMPS_MAX`](crate::TIMESTAMPS_MAX)).
        count: u32,
        /// Leases the stamped writes name: the answer lists those live
        /// when the timestamps were handed out (design 0017).
        leases: Vec<i64>,
    },
    /// A write its node already stamped: in a stamped group, a read-only
    /// txn at a timestamp from the oracle (a read across shards), which
    /// reads at `stamp` once nothing at or below it can still apply here.
    WriteStamped {
        /// The write.
        op: Op,
        /// Its stamp (above 0).
        stamp: i64,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A write's outcome (a response or a refusal).
    Write(Outcome),
    /// A read's result; long values may still have to be read from disk
    /// ([`RangeAnswer::fill`], on another thread: the shell's choice).
    Read(Result<RangeAnswer, KvError>),
    /// A lease question's answer.
    Lease(LeaseAnswer),
    /// The timestamps, and what held when they were handed out (nothing
    /// when no timestamps were).
    Timestamps(Timestamps, Granted),
}

/// What the oracle says of the moment it handed timestamps out: a shard
/// stamps its writes with it, so that they apply as the meta group stood
/// then.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Granted {
    /// The asked leases live then (design 0017).
    pub live: Vec<i64>,
    /// The auth store then (design 0018).
    pub auth: AuthFence,
}

/// Something one replica of a group sends another. The shell encodes these
/// for the wire, with the group id beside them.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerItem {
    /// A consensus message.
    Paxos(Message<Bytes>),
    /// An encoded command for the leader to propose.
    Forward(Bytes),
    /// A lease question for the leader.
    LeaseQuery {
        /// Matches the answer to the question.
        token: u64,
        /// The lease.
        id: i64,
        /// Restart the lease's time.
        renew: bool,
    },
    /// The leader's answer to a lease question.
    LeaseAnswer {
        /// The question's token.
        token: u64,
        /// The answer.
        answer: LeaseAnswer,
    },
    /// Timestamps asked of the leader for a request that reached another
    /// member.
    TimestampQuery {
        /// Matches the answer to the question.
        token: u64,
        /// How many.
        count: u32,
        /// Leases to check.
        leases: Vec<i64>,
    },
    /// The leader's answer to a timestamp question.
    TimestampAnswer {
        /// The question's token.
        token: u64,
        /// The timestamps, or `None` (ask again).
        range: Timestamps,
        /// What held when they were handed out.
        granted: Granted,
    },
    /// A follower's question for the leader: a slot at which it surely
    /// led, for the linearizable reads that wait on the follower.
    ReadIndex {
        /// Matches the answer to the question.
        token: u64,
    },
    /// The leader's answer: the commit point at a confirmed moment of its
    /// leadership, or `None` when it does not lead (ask again).
    ReadIndexAnswer {
        /// The question's token.
        token: u64,
        /// The slot the reads wait to apply.
        slot: Option<Slot>,
    },
}

/// A snapshot from the leader to make live: the storage stage it was
/// received into, and the slot it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The snapshot covers the log through this slot.
    pub slot: Slot,
    /// The storage stage holding its rows (the shell's token).
    pub stage: u64,
}

/// A log compaction to write: the log through `slot` is deleted and the
/// configuration in effect at `slot` stored, in the same transaction as
/// the ready's `state` rows and applied slot, which hold the effects of
/// the deleted entries (storage invariants F8 and F9).
#[derive(Clone, Debug)]
pub struct Compaction {
    /// The log is compacted through this slot.
    pub slot: Slot,
    /// The configuration in effect at `slot`.
    pub membership: Option<Configuration>,
}

/// One batch of work for the shell. Handle it in this order: connect to
/// `membership`, send `sends`, write `persist`, `state`, the applied slot
/// `applied_through` and `compact` in one transaction (one fsync when
/// `must_sync`); once it is committed call
/// [`Group::on_written`](crate::Group::on_written), and once it is durable
/// [`Group::on_persisted`](crate::Group::on_persisted) with `token`. The
/// answers, events and the rest may be handed out at once.
#[derive(Debug)]
pub struct GroupReady {
    /// Messages that may go at once.
    pub sends: Vec<(NodeId, PeerItem)>,
    /// The replica's durable state to write.
    pub persist: Persist<Bytes>,
    /// The state machine's row writes (see `synod_kv::state`).
    pub state: StateChanges,
    /// The state machine has applied the log through this slot: written
    /// with `state`, so rows and applied slot always agree.
    pub applied_through: Slot,
    /// A log compaction to write with `state`.
    pub compact: Option<Compaction>,
    /// Acknowledge once the write is durable.
    pub token: PersistToken,
    /// Answers for waiting requests.
    pub answers: Vec<(Ticket, Answer)>,
    /// Events of the commands applied, in order (for watchers).
    pub events: Vec<Event>,
    /// Changes to the ZooKeeper tree, in order (for its watchers).
    pub zk_events: Vec<ZkEvent>,
    /// The state machine's revision after them.
    pub revision: i64,
    /// The state machine was replaced by a snapshot at this revision:
    /// watchers must resync.
    pub jump: Option<i64>,
    /// The configuration changed: open connections to new members, close
    /// those to removed ones.
    pub membership: Option<Configuration>,
    /// The member table (names, addresses) changed.
    pub members_changed: bool,
    /// Leases an applied expiry removed.
    pub expired: Vec<i64>,
    /// A question for the meta group's oracle. Ask it for `count`
    /// timestamps and `leases` checked, and hand the answer (or `None`
    /// when it fails) to
    /// [`Group::stamps_granted`](crate::Group::stamps_granted) with `id`.
    /// Only in a [stamped](GroupConfig::stamped) group.
    pub stamps: Option<StampQuestion>,
    /// Every value applied, with its slot (only with
    /// [`GroupConfig::record_applied`]).
    pub applied: Vec<(Slot, Value<Bytes>)>,
    /// A snapshot from the leader replaced the state through its slot:
    /// make its stage live before writing `state`, in this write.
    pub installed: Option<Installed>,
    /// Replicas behind the log start: stream each the committed rows (at
    /// the slot they hold, after this write), and report the slot with
    /// [`Group::snapshot_started`](crate::Group::snapshot_started).
    pub snapshots: Vec<NodeId>,
    /// Splits applied: each new group's id, store and configuration.
    /// Host each with [`Group::from_split`](crate::Group::from_split) and
    /// write its first ready in this write, so the split and the new group
    /// are durable together (design 0016).
    pub splits: Vec<SplitOff>,
}

/// A group a split applied here cut off (see `GroupReady::splits`).
#[derive(Debug)]
pub struct SplitOff {
    /// The new group's id.
    pub id: u64,
    /// Its store: the keys from the split point, as of the split.
    pub kv: synod_kv::KvStore,
    /// The parent's configuration in effect at the split's slot, the same
    /// on every replica (not the one after the parent's commit point,
    /// which may already be a later one); `None` on a joining replica
    /// that replays the parent's log from before it learned one.
    pub membership: Option<synod_paxos::Configuration>,
}

impl GroupReady {
    /// True when the write must reach the disk before `on_persisted`.
    pub fn must_sync(&self) -> bool {
        self.installed.is_some() || self.persist.must_sync()
    }
}

/// What a group shows for status calls.
#[derive(Clone, Debug, Default)]
pub struct GroupStatus {
    /// Believed leader.
    pub leader: Option<NodeId>,
    /// This replica leads.
    pub is_leader: bool,
    /// This replica's election timer fired and no leader has been heard
    /// since (it probes or campaigns): `leader` may still name the leader
    /// it lost. A replica cut off from its quorum stays so.
    pub seeking_leader: bool,
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
    /// Bytes of the state machine's retained versions (what a shard
    /// splits by).
    pub data_bytes: u64,
    /// Splits the shard's range went through (0 unsharded).
    pub shard_epoch: u64,
    /// The log is compacted through this slot.
    pub snapshot_slot: u64,
    /// Snapshots received from a leader and installed since start.
    pub snapshots_installed: u64,
    /// Client sessions expired through the log since start.
    pub sessions_expired: u64,
    /// Raised alarms, `(member, alarm type)`.
    pub alarms: Vec<(u64, i32)>,
    /// The configuration (None while joining).
    pub membership: Option<Configuration>,
    /// A membership change is under way.
    pub membership_changing: bool,
    /// A leadership transfer to this replica is under way.
    pub transferring_to: Option<NodeId>,
    /// What this replica has done since start, for the node's metrics.
    pub counters: GroupCounters,
}

/// Running totals kept by the pure group, so that the shell can export
/// them (Prometheus counters) without the group knowing about metrics.
/// Only ever incremented; a restart starts them at zero, as Prometheus
/// counters do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCounters {
    /// Commands this replica proposed as leader: its own clients' writes
    /// and those other members forwarded to it.
    pub proposed: u64,
    /// Client writes this replica forwarded to the leader (resends
    /// included).
    pub forwarded: u64,
    /// Commands applied to the state machine (duplicates included).
    pub applied_commands: u64,
    /// Reads served from local state without a check.
    pub reads_serializable: u64,
    /// Linearizable reads registered with this replica as leader (lease
    /// or read index).
    pub reads_leader: u64,
    /// Linearizable reads on a follower, waiting for the leader's index.
    pub reads_follower: u64,
    /// Read-index questions this follower asked the leader.
    pub read_index_asked: u64,
    /// Read-index questions of followers this leader took.
    pub read_index_answered: u64,
    /// Times this replica started phase 1 to lead.
    pub elections: u64,
    /// Writes of this node refused for a stale stamp and stamped again.
    pub restamped: u64,
}
