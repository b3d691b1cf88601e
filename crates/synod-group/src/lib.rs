//! The pure per-group driver of a synod node.
//!
//! A [`Group`] is one Paxos group as one node runs it: the replica, the
//! state machine, the lease deadlines, and every request waiting on them
//! (writes proposed or forwarded, linearizable reads, lease questions). It
//! never touches a clock, a socket, a file or a thread: time comes in with
//! each input, and everything to send, persist and answer comes out of
//! [`Group::ready`]. The node runtime (`synod-server`) and the simulator
//! (`synod-sim`) both run this code, so what the simulator checks under
//! faults is what a node does.
//!
//! ```text
//!   request(ticket, Request) ┐
//!   step(from, PeerItem)     ├─► Group ─► ready() ─► GroupReady { sends, persist, state rows,
//!   tick(now)                ┘                          compact, token, answers, events, ... }
//!                                     ◄─ on_written() once the write is committed
//!                                     ◄─ on_persisted(token) once it is durable
//! ```
//!
//! ```
//! use synod_group::{Answer, Group, GroupConfig, Request};
//! use synod_kv::KvStore;
//! use synod_paxos::{Config, NodeId, Replica, Time};
//! use synod_proto::etcdserverpb::PutRequest;
//! use synod_proto::synodpb::command::Op;
//!
//! // A one-voter group: it elects itself and commits alone.
//! let me = NodeId(1);
//! let replica = Replica::new(Config::majority(me, &[me]), Time(0)).unwrap();
//! let config = GroupConfig {
//!     node: me,
//!     session: 7,
//!     snapshot_every: 10_000,
//!     compact_keep: 1_000,
//!     session_idle_ms: 600_000,
//!     initial_members: Vec::new(),
//!     record_applied: false,
//!     timestamp_oracle: false,
//!     stamped: false,
//!     state_flush_rounds: synod_group::STATE_FLUSH_ROUNDS,
//! };
//! let mut group = Group::new(config, replica, KvStore::default(), Time(0));
//! let put = PutRequest { key: "k".into(), value: "v".into(), ..Default::default() };
//! let mut answers = Vec::new();
//! for ms in (0..3000).step_by(10) {
//!     if ms == 1000 {
//!         group.request(1, Request::Write(Op::Put(put.clone())), Time(ms));
//!     }
//!     group.tick(Time(ms));
//!     while group.has_ready() {
//!         let ready = group.ready();
//!         // A node would send ready.sends and write ready.persist here.
//!         answers.extend(ready.answers);
//!         group.on_written();
//!         group.on_persisted(ready.token);
//!     }
//! }
//! assert!(matches!(answers.as_slice(), [(1, Answer::Write(_))]));
//! assert_eq!(group.kv().revision(), 2);
//! ```

mod detach;
mod drive;
mod follow;
mod group;
mod leases;
mod load;
mod read_index;
mod sessions;
pub mod shards;
mod snapshots;
mod stamps;
mod tso;
mod types;

pub use detach::{DetachTracker, DETACH_AGAIN_MS, DETACH_LEASES_MAX};
pub use drive::{
    COMPACT_KEEP_SLOTS, COMPACT_LOG_BYTES, STATE_FLUSH_BYTES, STATE_FLUSH_IDLE_MS,
    STATE_FLUSH_ROUNDS,
};
pub use follow::{
    follow as follow_membership, hand_over, meta_barrier, shards_settled,
    wanted as membership_wanted, Behind, Look, MembershipFollower, FOLLOW_BARRIER_MS,
    FOLLOW_CHECK_MS, FOLLOW_CUT_OFF_MS,
};
#[cfg(feature = "mutations")]
pub use group::GroupMutation;
pub use group::{Group, PENDING_WRITES_MAX, REFORWARD_MS, SPLIT_SLOT};
pub use load::{LoadSplitter, LOAD_SAMPLE_MAX, LOAD_WINDOW_MS};
pub use sessions::SESSION_IDLE_MS;
pub use snapshots::{SNAPSHOT_HOLD_LOG_BYTES, SNAPSHOT_HOLD_MS};
pub use stamps::{STAMP_QUESTION_MS, STAMP_QUEUE_MAX, STAMP_RETRY_MS, STAMP_STARVED_MS};
pub use tso::{TIMESTAMPS_MAX, TIMESTAMP_BATCH};
pub use types::{
    Answer, Compaction, Granted, GroupConfig, GroupCounters, GroupReady, GroupStatus, Installed,
    LeaseAnswer, PeerItem, Request, SplitOff, StampQuestion, Ticket, Timestamps,
};
