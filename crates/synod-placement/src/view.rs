//! The cluster as the placement driver reads it from the meta shard: every
//! node, every shard descriptor, and the replica count to aim for.

use std::collections::BTreeMap;
use std::fmt;

use crate::types::{Node, NodeId, Replication, Shard, ShardId};

/// Why a node or shard was refused by [`ClusterView`]. A refused call
/// changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViewError {
    /// A node with this id is already in the view.
    DuplicateNode(NodeId),
    /// A node's capacity is 0; every node holds a share, however small.
    ZeroCapacity(NodeId),
    /// A shard with this id is already in the view.
    DuplicateShard(ShardId),
    /// The node is not in the view.
    UnknownNode(NodeId),
    /// A shard lists the same node twice: two replicas of a shard on one
    /// node would fail together.
    DuplicateReplica {
        /// The shard.
        shard: ShardId,
        /// The node listed twice.
        node: NodeId,
    },
    /// A shard's leader is not one of its replicas.
    LeaderNotReplica {
        /// The shard.
        shard: ShardId,
        /// The leader it names.
        leader: NodeId,
    },
}

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewError::DuplicateNode(n) => write!(f, "node {n} is already in the view"),
            ViewError::ZeroCapacity(n) => write!(f, "node {n} has capacity 0; use at least 1"),
            ViewError::DuplicateShard(s) => write!(f, "shard {s} is already in the view"),
            ViewError::UnknownNode(n) => write!(f, "node {n} is not in the view"),
            ViewError::DuplicateReplica { shard, node } => {
                write!(f, "shard {shard} lists node {node} twice")
            }
            ViewError::LeaderNotReplica { shard, leader } => {
                write!(
                    f,
                    "shard {shard} names leader {leader}, which is not a replica"
                )
            }
        }
    }
}

impl std::error::Error for ViewError {}

/// Every node and shard the placement driver knows, in id order.
///
/// Invariants (held by every method, checked by
/// [`ClusterView::check_invariants`]): every shard's replicas are distinct
/// nodes of the view; a shard's leader is one of its replicas; every
/// capacity is at least 1. Maps are `BTreeMap`s, so every walk over the
/// view, and so every plan, is in id order and reproducible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    nodes: BTreeMap<NodeId, Node>,
    shards: BTreeMap<ShardId, Shard>,
    replication: Replication,
}

impl ClusterView {
    /// An empty cluster whose shards should each have `replication` voters.
    pub fn new(replication: Replication) -> ClusterView {
        ClusterView {
            nodes: BTreeMap::new(),
            shards: BTreeMap::new(),
            replication,
        }
    }

    /// The replica count every shard should reach.
    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// Changes the replica count to aim for (3 → 5 or back); the next plans
    /// add or remove replicas one per shard at a time.
    pub fn set_replication(&mut self, replication: Replication) {
        self.replication = replication;
    }

    /// Adds a node (a join).
    pub fn add_node(&mut self, node: Node) -> Result<(), ViewError> {
        if self.nodes.contains_key(&node.id) {
            return Err(ViewError::DuplicateNode(node.id));
        }
        if node.capacity == 0 {
            return Err(ViewError::ZeroCapacity(node.id));
        }
        self.nodes.insert(node.id, node);
        Ok(())
    }

    /// Marks a node up or down (a failure detector's verdict, or an
    /// operator decommissioning it: both leave its replicas to be replaced).
    pub fn set_alive(&mut self, node: NodeId, alive: bool) -> Result<(), ViewError> {
        let entry = self
            .nodes
            .get_mut(&node)
            .ok_or(ViewError::UnknownNode(node))?;
        entry.alive = alive;
        Ok(())
    }

    /// Adds a shard descriptor (a split created it, or the driver restarted
    /// and reads the meta shard).
    pub fn add_shard(&mut self, shard: Shard) -> Result<(), ViewError> {
        if self.shards.contains_key(&shard.id) {
            return Err(ViewError::DuplicateShard(shard.id));
        }
        for (i, node) in shard.replicas.iter().enumerate() {
            if !self.nodes.contains_key(node) {
                return Err(ViewError::UnknownNode(*node));
            }
            if shard.replicas[..i].contains(node) {
                return Err(ViewError::DuplicateReplica {
                    shard: shard.id,
                    node: *node,
                });
            }
        }
        if let Some(leader) = shard.leader {
            if !shard.has_replica(leader) {
                return Err(ViewError::LeaderNotReplica {
                    shard: shard.id,
                    leader,
                });
            }
        }
        self.shards.insert(shard.id, shard);
        Ok(())
    }

    /// Every node, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.nodes.values()
    }

    /// Every shard, in id order.
    pub fn shards(&self) -> impl Iterator<Item = &Shard> + '_ {
        self.shards.values()
    }

    /// One node, if it is in the view.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// One shard, if it is in the view.
    pub fn shard(&self, id: ShardId) -> Option<&Shard> {
        self.shards.get(&id)
    }

    /// Whether `node` is in the view and up. Placement only ever adds
    /// replicas and leaders on such nodes.
    pub fn is_live(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.alive)
    }

    /// How many of a shard's replicas are on live nodes.
    pub fn live_replicas(&self, shard: &Shard) -> usize {
        shard.replicas.iter().filter(|n| self.is_live(**n)).count()
    }

    /// Whether a shard can still change its membership: its live voters
    /// are a majority of its configuration (synod's default quorums), so
    /// the configuration change can be chosen. A shard without replicas is
    /// being created and has nothing to lose.
    pub fn has_quorum(&self, shard: &Shard) -> bool {
        shard.replicas.is_empty() || 2 * self.live_replicas(shard) > shard.replicas.len()
    }

    /// The shards that lost their quorum: placement cannot repair them (no
    /// configuration change can be chosen), an operator must.
    pub fn shards_without_quorum(&self) -> Vec<ShardId> {
        self.shards()
            .filter(|s| !self.has_quorum(s))
            .map(|s| s.id)
            .collect()
    }

    /// The shard for a change; callers have checked that it exists.
    pub(crate) fn shard_mut(&mut self, id: ShardId) -> &mut Shard {
        self.shards
            .get_mut(&id)
            .unwrap_or_else(|| panic!("shard {id} is not in the view"))
    }

    /// Panics if an invariant of the view does not hold: a bug in whatever
    /// changed it, never a condition to handle.
    pub fn check_invariants(&self) {
        for node in self.nodes.values() {
            assert!(node.capacity >= 1, "node {} has capacity 0", node.id);
        }
        for (id, shard) in &self.shards {
            assert_eq!(*id, shard.id, "shard {} is filed under {}", shard.id, id);
            for (i, node) in shard.replicas.iter().enumerate() {
                assert!(
                    self.nodes.contains_key(node),
                    "shard {id} has a replica on unknown node {node}"
                );
                assert!(
                    !shard.replicas[..i].contains(node),
                    "shard {id} has two replicas on node {node}: {:?}",
                    shard.replicas
                );
            }
            if let Some(leader) = shard.leader {
                assert!(
                    shard.has_replica(leader),
                    "shard {id}'s leader {leader} is not among its replicas {:?}",
                    shard.replicas
                );
            }
        }
    }
}
