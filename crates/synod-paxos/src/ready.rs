//! The work a replica hands its runtime, and the one ordering rule that makes
//! Paxos safe on real disks: a promise or an acceptance leaves the replica only
//! after the state it reports is durable.
//!
//! ```text
//!   step / tick / propose / read
//!              │
//!              ▼
//!          ready() ──► Ready { persist, messages, apply, reads, snapshots, token }
//!              │          │        │
//!              │          │        └─ send now (depend on nothing unpersisted)
//!              │          └─ write + fsync
//!              ▼
//!   on_persisted(token) ──► releases the replies that waited for that write;
//!                           they come out of the next ready()
//! ```

use crate::membership::{Configuration, MembershipRecord};
use crate::message::{Envelope, SlotRecord};
use crate::types::{Ballot, NodeId, ReadId, Slot, Value};

/// State to make durable, all in one write (one fsync).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persist<C> {
    /// The new promised ballot, when it changed.
    pub promised: Option<Ballot>,
    /// Slots accepted or learned chosen, in the order they happened (a later
    /// record for the same slot replaces an earlier one).
    pub records: Vec<SlotRecord<C>>,
    /// The new commit point, when it advanced (a hint: losing it is safe).
    pub commit: Option<Slot>,
    /// Drop every slot up to and including this one: a snapshot covers them.
    pub compact_through: Option<Slot>,
    /// The configuration in effect after a slot, to store in place of any
    /// earlier one: set with `compact_through` (the log entries that chose
    /// it may be among those dropped) and when a snapshot is installed.
    /// Loaded back as `Durable::membership`.
    pub membership: Option<MembershipRecord>,
}

impl<C> Default for Persist<C> {
    fn default() -> Self {
        Persist {
            promised: None,
            records: Vec::new(),
            commit: None,
            compact_through: None,
            membership: None,
        }
    }
}

impl<C> Persist<C> {
    /// True when nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.promised.is_none()
            && self.records.is_empty()
            && self.commit.is_none()
            && self.compact_through.is_none()
            && self.membership.is_none()
    }

    /// True when the write must be synced before the token is acknowledged
    /// (the commit hint alone may be written lazily).
    pub fn must_sync(&self) -> bool {
        self.promised.is_some()
            || !self.records.is_empty()
            || self.compact_through.is_some()
            || self.membership.is_some()
    }
}

/// A chosen slot, handed to the application in slot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Apply<C> {
    /// The slot; consecutive across `Ready`s.
    pub slot: Slot,
    /// The value chosen for it.
    pub value: Value<C>,
}

/// A linearizable read may now be served from the application's state once it
/// has applied every slot up to `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadReady {
    /// The read's id as given to `read`.
    pub id: ReadId,
    /// Apply through this slot, then serve.
    pub slot: Slot,
}

/// Proof-of-order for persistence: hand it back to `on_persisted` once
/// `Ready::persist` is durable. Tokens are acknowledged in the order issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PersistToken(pub(crate) u64);

/// One batch of work for the runtime. Handle every field, then call
/// `Replica::on_persisted(token)`.
#[derive(Debug)]
pub struct Ready<C> {
    /// Write this durably (one transaction, one fsync when `must_sync`).
    pub persist: Persist<C>,
    /// Messages that may be sent at once, before or during the write.
    pub messages: Vec<Envelope<C>>,
    /// Chosen values to apply, in slot order.
    pub apply: Vec<Apply<C>>,
    /// Reads that may be served once `apply` up to their slot is done.
    pub reads: Vec<ReadReady>,
    /// Reads that were pending when this replica stopped leading; retry them
    /// at the new leader.
    pub reads_dropped: Vec<ReadId>,
    /// Replicas that are behind this leader's log start and need the
    /// application's latest snapshot (then `Replica::install_snapshot` there).
    pub snapshots: Vec<NodeId>,
    /// Commands that were queued when this replica stopped leading; they were
    /// never proposed, so the caller can safely retry them elsewhere.
    pub dropped: Vec<C>,
    /// The configuration in effect after the commit point changed (a
    /// membership entry was chosen, or a snapshot carried one): open
    /// connections to new members, and stop sending to removed ones.
    pub membership: Option<Configuration>,
    /// Acknowledge with `on_persisted` after `persist` is durable.
    pub token: PersistToken,
}

impl<C> Ready<C> {
    /// True when there is nothing to do but acknowledge the token.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.messages.is_empty()
            && self.apply.is_empty()
            && self.reads.is_empty()
            && self.reads_dropped.is_empty()
            && self.snapshots.is_empty()
            && self.dropped.is_empty()
            && self.membership.is_none()
    }
}
