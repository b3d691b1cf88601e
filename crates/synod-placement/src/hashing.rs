//! Consistent hashing with virtual nodes, the placement synod does not use,
//! kept here to measure range placement against.
//!
//! Every live node puts `vnodes × capacity` points on a ring of `u64`
//! positions; a shard hashes to a position, and its replicas are the first
//! R distinct nodes clockwise from there, the first one leading. Placement
//! after a join or a leave is a recomputation: nothing is chosen, so
//! nothing can be balanced either.
//!
//! ```text
//!             a₁        b₁
//!        c₂ ·─────●─────· a₂        shard ● → [b, a, c]
//!           │           │           (b₁, then a₂, then c₁ clockwise)
//!        b₂ ·───────────· c₁
//! ```

use crate::types::{Node, NodeId, ShardId};
use crate::view::ClusterView;

/// The splitmix64 finalizer: a bijection on `u64` that spreads nearby
/// inputs over the whole range. Written here because std's hashers are
/// either randomly seeded (`RandomState`) or not promised to stay the same
/// across releases, and a ring must be the same on every node and run.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Keeps shard positions apart from node positions, so shard `k` and node
/// `k` are not hashed alike.
const SHARD_SALT: u64 = 0x5348_4152_445f_4b45;

/// Where virtual node `i` of `node` sits on the ring.
pub fn vnode_position(node: NodeId, i: u32) -> u64 {
    splitmix64(splitmix64(node.0) ^ u64::from(i))
}

/// Where a shard hashes to on the ring.
pub fn shard_position(shard: ShardId) -> u64 {
    splitmix64(shard.0 ^ SHARD_SALT)
}

/// The ring: every virtual node's position, sorted.
///
/// Invariant: `points` is sorted by `(position, node)`, so a lookup is a
/// binary search and ties are broken the same way everywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    points: Vec<(u64, NodeId)>,
}

impl Ring {
    /// The ring of `nodes`, each with `vnodes × capacity` points.
    pub fn new<'a>(nodes: impl IntoIterator<Item = &'a Node>, vnodes: u32) -> Ring {
        let mut points: Vec<(u64, NodeId)> = nodes
            .into_iter()
            .flat_map(|n| {
                let count = vnodes.saturating_mul(n.capacity);
                (0..count).map(move |i| (vnode_position(n.id, i), n.id))
            })
            .collect();
        points.sort_unstable();
        Ring { points }
    }

    /// The first `count` distinct nodes clockwise from `position` (fewer if
    /// the ring has fewer nodes). The walk is bounded by one turn.
    pub fn successors(&self, position: u64, count: usize) -> Vec<NodeId> {
        let start = self.points.partition_point(|(p, _)| *p < position);
        let mut nodes = Vec::with_capacity(count);
        for k in 0..self.points.len() {
            if nodes.len() == count {
                break;
            }
            let (_, node) = self.points[(start + k) % self.points.len()];
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        nodes
    }
}

/// Consistent hashing with `vnodes` virtual nodes per unit of capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsistentHashing {
    /// Points per node (times its capacity) on the ring. More points give
    /// a more even spread and a bigger ring.
    pub vnodes: u32,
}

impl ConsistentHashing {
    /// The ring over the view's live nodes.
    pub fn ring(&self, view: &ClusterView) -> Ring {
        Ring::new(view.nodes().filter(|n| n.alive), self.vnodes)
    }

    /// The view with every shard's replicas recomputed from the ring of
    /// live nodes, leader first: what consistent hashing places after any
    /// change of membership.
    pub fn place(&self, view: &ClusterView) -> ClusterView {
        let ring = self.ring(view);
        let count = view.replication().count();
        let mut placed = view.clone();
        let ids: Vec<ShardId> = view.shards().map(|s| s.id).collect();
        for id in ids {
            let shard = placed.shard_mut(id);
            shard.replicas = ring.successors(shard_position(id), count);
            shard.leader = shard.replicas.first().copied();
        }
        placed
    }
}
