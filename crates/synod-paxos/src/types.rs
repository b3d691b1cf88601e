//! The protocol's nouns as newtypes, so a slot can never be passed where a
//! ballot or a time is expected.

use crate::membership::Configuration;
use std::fmt;
use std::sync::Arc;

/// Identifies one replica of a group (one node hosts at most one replica of a
/// group, so the node id names the replica).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Paxos's proposal number: totally ordered by `(round, node)`, so two
/// proposers never share one, and a proposer can always pick a higher one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    /// Compared first; raised past any round seen to win a takeover.
    pub round: u64,
    /// Breaks ties so that ballots of different proposers never collide.
    pub node: NodeId,
}

impl Ballot {
    /// The ballot below every real one: what a fresh acceptor has promised.
    pub const ZERO: Ballot = Ballot {
        round: 0,
        node: NodeId(0),
    };

    /// The next ballot `node` may use after having seen `self`. Saturates at
    /// round `u64::MAX` rather than overflowing (replicas refuse rounds above
    /// [`ROUND_MAX`](crate::ROUND_MAX) from peers, so they never get there).
    pub fn next_for(self, node: NodeId) -> Ballot {
        Ballot {
            round: self.round.saturating_add(1),
            node,
        }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node.0)
    }
}

/// A position in the replicated log. Slots start at 1; `Slot(0)` means "none"
/// (an empty log, nothing chosen, no snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u64);

impl Slot {
    /// The slot after this one.
    pub fn next(self) -> Slot {
        Slot(self.0 + 1)
    }

    /// The slot before this one; panics below 0 (a bug, never input).
    pub fn prev(self) -> Slot {
        Slot(self.0.checked_sub(1).expect("slot underflow"))
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A replica's local monotonic clock reading in milliseconds. Clocks of
/// different replicas are never compared by the core; only durations measured
/// on one clock are, which is what makes leases safe under bounded drift.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// `self + ms`, saturating (time never wraps).
    pub fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// What occupies a slot: a batch of client commands, a no-op that a new
/// leader writes into a gap it found during phase 1, or a membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<C> {
    /// Fills a slot no earlier ballot chose anything for.
    Noop,
    /// Commands applied in order; shared so fan-out to replicas copies nothing.
    Batch(Arc<[C]>),
    /// A configuration entry: once chosen at slot `i`, it governs every slot
    /// after `i`. The application applies it as a no-op; the core tells the
    /// runtime about the new membership in `Ready::membership`.
    Membership(Configuration),
}

impl<C> Value<C> {
    /// Number of client commands carried.
    pub fn len(&self) -> usize {
        match self {
            Value::Noop | Value::Membership(_) => 0,
            Value::Batch(commands) => commands.len(),
        }
    }

    /// The configuration this value installs, if it is a membership entry.
    pub fn configuration(&self) -> Option<&Configuration> {
        match self {
            Value::Membership(c) => Some(c),
            _ => None,
        }
    }

    /// True for a no-op, a membership entry or an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Names a linearizable read request so its caller can match the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);
