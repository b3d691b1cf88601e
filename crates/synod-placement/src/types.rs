//! The words placement speaks: nodes, shards, and how many replicas a
//! shard should have.

use std::fmt;

/// A node of the cluster, as the meta shard names it. A newtype so a node
/// can never be passed where a shard is meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// A shard (a key range and the Paxos group that replicates it), as the
/// meta shard's descriptors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// How many voters every shard should have. Only odd sizes that survive
/// one or two failures are offered: an even size adds a replica without
/// tolerating one more failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// Three voters: one failure tolerated.
    Three,
    /// Five voters: two failures tolerated.
    Five,
}

impl Replication {
    /// The number of replicas this stands for.
    pub fn count(self) -> usize {
        match self {
            Replication::Three => 3,
            Replication::Five => 5,
        }
    }
}

/// One node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's id.
    pub id: NodeId,
    /// Whether the node is up. A dead node's replicas count as already
    /// lost: they are replaced, and never counted towards a quorum.
    pub alive: bool,
    /// How much the node can hold relative to others (at least 1): a node of
    /// capacity 2 is given twice the replicas and leaders of a node of
    /// capacity 1.
    pub capacity: u32,
}

impl Node {
    /// A live node of capacity 1, the common case.
    pub fn new(id: NodeId) -> Node {
        Node {
            id,
            alive: true,
            capacity: 1,
        }
    }
}

/// One shard as placement sees it: its voters and its leader.
///
/// Invariant (checked by [`crate::ClusterView`]): `replicas` has no
/// duplicates, and `leader`, when set, is one of `replicas`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// The shard's id.
    pub id: ShardId,
    /// The nodes holding a voter of this shard, in descriptor order.
    pub replicas: Vec<NodeId>,
    /// The node whose replica leads, if one is known.
    pub leader: Option<NodeId>,
    /// A placement action on this shard is still running (a membership
    /// change in its joint configuration, or a leadership transfer). The
    /// plan leaves such a shard alone, so a shard has at most one change in
    /// flight and never loses two replicas to overlapping moves.
    pub in_flight: bool,
}

impl Shard {
    /// A shard with these replicas and leader and nothing in flight.
    pub fn new(id: ShardId, replicas: Vec<NodeId>, leader: Option<NodeId>) -> Shard {
        Shard {
            id,
            replicas,
            leader,
            in_flight: false,
        }
    }

    /// Whether `node` holds a replica of this shard.
    pub fn has_replica(&self, node: NodeId) -> bool {
        self.replicas.contains(&node)
    }
}
