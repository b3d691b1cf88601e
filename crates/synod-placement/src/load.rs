//! How loaded each node is: its replicas and the shards it leads, counted
//! relative to its capacity. The planner keeps this index next to its
//! working view so that choosing a node is a walk over nodes, not shards.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::types::{NodeId, Shard, ShardId};
use crate::view::ClusterView;

/// A count of things on a node together with the node's capacity; compared
/// by `count / capacity` without leaving the integers, so every choice is
/// exact and reproducible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Weighted {
    pub(crate) count: u64,
    pub(crate) capacity: u64,
}

impl Weighted {
    /// Orders by load (`count / capacity`), lighter first.
    pub(crate) fn cmp_load(self, other: Weighted) -> Ordering {
        let (a, b) = (self.wide(), other.wide());
        (a.0 * b.1).cmp(&(b.0 * a.1))
    }

    /// Count and capacity in a type whose products cannot overflow.
    fn wide(self) -> (u128, u128) {
        (u128::from(self.count), u128::from(self.capacity))
    }

    /// The load after one more.
    pub(crate) fn plus_one(self) -> Weighted {
        Weighted {
            count: self.count + 1,
            capacity: self.capacity,
        }
    }

    /// Whether moving one unit from `self` to `to` strictly lowers
    /// `Σ count² / capacity` over the nodes. With capacities of 1 this is
    /// exactly "the counts differ by more than 1"; in general it is
    /// `load(self) − load(to) > (1/cap(self) + 1/cap(to)) / 2`. Because
    /// every accepted move lowers that sum, which takes finitely many
    /// values, rebalancing by such moves always stops.
    pub(crate) fn should_shed_to(self, to: Weighted) -> bool {
        let ((c_from, w_from), (c_to, w_to)) = (self.wide(), to.wide());
        2 * c_from * w_to > 2 * c_to * w_from + w_from + w_to
    }
}

/// What one node holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeLoad {
    pub(crate) live: bool,
    pub(crate) capacity: u64,
    /// The shards with a replica here.
    pub(crate) replicas: BTreeSet<ShardId>,
    /// The shards whose leader is here.
    pub(crate) leads: BTreeSet<ShardId>,
}

impl NodeLoad {
    pub(crate) fn replica_load(&self) -> Weighted {
        Weighted {
            count: self.replicas.len() as u64,
            capacity: self.capacity,
        }
    }

    pub(crate) fn leader_load(&self) -> Weighted {
        Weighted {
            count: self.leads.len() as u64,
            capacity: self.capacity,
        }
    }
}

/// Every node's load, in id order.
///
/// Invariant: `nodes[n].replicas` holds exactly the shards of the view
/// with a replica on `n`, and `nodes[n].leads` exactly those led by `n`;
/// [`Loads::forget`] and [`Loads::record`] keep it so across a change.
#[derive(Clone, Debug)]
pub(crate) struct Loads {
    pub(crate) nodes: BTreeMap<NodeId, NodeLoad>,
}

impl Loads {
    pub(crate) fn of(view: &ClusterView) -> Loads {
        let nodes = view
            .nodes()
            .map(|n| {
                let load = NodeLoad {
                    live: n.alive,
                    capacity: u64::from(n.capacity),
                    ..NodeLoad::default()
                };
                (n.id, load)
            })
            .collect();
        let mut loads = Loads { nodes };
        for shard in view.shards() {
            loads.record(shard);
        }
        loads
    }

    /// Adds a shard's replicas and leader to the index.
    pub(crate) fn record(&mut self, shard: &Shard) {
        for node in &shard.replicas {
            self.node_mut(*node).replicas.insert(shard.id);
        }
        if let Some(leader) = shard.leader {
            self.node_mut(leader).leads.insert(shard.id);
        }
    }

    /// Takes a shard's replicas and leader out of the index.
    pub(crate) fn forget(&mut self, shard: &Shard) {
        for node in &shard.replicas {
            self.node_mut(*node).replicas.remove(&shard.id);
        }
        if let Some(leader) = shard.leader {
            self.node_mut(leader).leads.remove(&shard.id);
        }
    }

    pub(crate) fn node(&self, id: NodeId) -> &NodeLoad {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} is not in the load index"))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut NodeLoad {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("node {id} is not in the load index"))
    }

    /// The live nodes, in id order.
    pub(crate) fn live(&self) -> impl Iterator<Item = (NodeId, &NodeLoad)> + '_ {
        self.nodes
            .iter()
            .filter(|(_, l)| l.live)
            .map(|(id, l)| (*id, l))
    }

    /// The live nodes ordered by `key`'s load, heaviest first (`heavy`) or
    /// lightest first, ties by id so the order is total.
    pub(crate) fn live_by(
        &self,
        key: fn(&NodeLoad) -> Weighted,
        heavy: bool,
    ) -> Vec<(NodeId, Weighted)> {
        let mut nodes: Vec<(NodeId, Weighted)> = self.live().map(|(id, l)| (id, key(l))).collect();
        nodes.sort_by(|(a_id, a), (b_id, b)| {
            let by_load = if heavy {
                b.cmp_load(*a)
            } else {
                a.cmp_load(*b)
            };
            by_load.then(a_id.cmp(b_id))
        });
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::Weighted;

    fn w(count: u64, capacity: u64) -> Weighted {
        Weighted { count, capacity }
    }

    #[test]
    fn unit_capacities_shed_while_counts_differ_by_more_than_one() {
        assert!(w(5, 1).should_shed_to(w(3, 1)));
        assert!(!w(5, 1).should_shed_to(w(4, 1)));
        assert!(!w(5, 1).should_shed_to(w(5, 1)));
    }

    #[test]
    fn capacities_weigh_the_load() {
        // 10 on capacity 2 (load 5) against 3 on capacity 1 (load 3).
        assert!(w(10, 2).should_shed_to(w(3, 1)));
        // 9 on capacity 2 (4.5) against 4 on capacity 1 (4): moving would
        // make it 4 against 5, worse.
        assert!(!w(9, 2).should_shed_to(w(4, 1)));
        assert_eq!(w(4, 2).cmp_load(w(2, 1)), std::cmp::Ordering::Equal);
    }
}
