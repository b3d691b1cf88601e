//! The repair pass: bring every shard to its target count of replicas on
//! live nodes, one replica per shard per plan, most endangered shards
//! first.

use std::cmp::Reverse;

use super::Planner;
use crate::action::Action;
use crate::hashing::splitmix64;
use crate::types::{NodeId, Shard, ShardId};

impl Planner {
    /// Repairs shards in order of danger: most dead replicas first, then
    /// fewest live ones, then id. A shard without a quorum is skipped: no
    /// configuration change can be chosen for it.
    pub(super) fn repair(&mut self) {
        let mut needy: Vec<(Reverse<usize>, usize, ShardId)> = self
            .view
            .shards()
            .filter(|s| self.is_free(s) && self.view.has_quorum(s) && !self.is_healthy(s))
            .map(|s| {
                let live = self.view.live_replicas(s);
                (Reverse(s.replicas.len() - live), live, s.id)
            })
            .collect();
        needy.sort();
        for (_, _, id) in needy {
            if !self.budget_left() {
                return;
            }
            if let Some(action) = self.repair_action(self.shard(id)) {
                self.emit(action);
            }
        }
    }

    /// The one action that brings `shard` closest to healthy, if a node can
    /// take it:
    ///
    /// | replicas vs target | has a dead replica | action                       |
    /// |--------------------|--------------------|------------------------------|
    /// | more               | yes                | remove the dead one          |
    /// | fewer              | either             | add on the lightest node     |
    /// | equal              | yes                | move dead → lightest node    |
    /// | more               | no                 | remove from the heaviest     |
    fn repair_action(&self, shard: &Shard) -> Option<Action> {
        let target = self.view.replication().count();
        let dead = shard
            .replicas
            .iter()
            .copied()
            .find(|n| !self.view.is_live(*n));
        let len = shard.replicas.len();
        match (len.cmp(&target), dead) {
            (std::cmp::Ordering::Greater, Some(node)) => Some(Action::Remove {
                shard: shard.id,
                node,
            }),
            (std::cmp::Ordering::Less, _) => self.lightest_for(shard).map(|node| Action::Add {
                shard: shard.id,
                node,
            }),
            (std::cmp::Ordering::Equal, Some(remove)) => {
                self.lightest_for(shard).map(|add| Action::Move {
                    shard: shard.id,
                    add,
                    remove,
                })
            }
            (std::cmp::Ordering::Greater, None) => Some(Action::Remove {
                shard: shard.id,
                node: self.heaviest_of(shard),
            }),
            (std::cmp::Ordering::Equal, None) => None,
        }
    }

    /// The live node without a replica of `shard` that would be lightest
    /// with one more. Ties go by a hash of (shard, node), not by node id:
    /// ties by id would send consecutive shards to the same few nodes, so
    /// the shards that lose a node would share their other replicas and,
    /// late in a repair, find every light node already taken.
    pub(super) fn lightest_for(&self, shard: &Shard) -> Option<NodeId> {
        self.loads
            .live()
            .filter(|(id, _)| !shard.has_replica(*id))
            .min_by(|(a_id, a), (b_id, b)| {
                let a = a.replica_load().plus_one();
                let b = b.replica_load().plus_one();
                let tie = |n: &NodeId| (splitmix64(shard.id.0 ^ splitmix64(n.0)), *n);
                a.cmp_load(b).then(tie(a_id).cmp(&tie(b_id)))
            })
            .map(|(id, _)| id)
    }

    /// The replica of an all-live `shard` on the heaviest node; among equals
    /// one that does not lead (so the shard keeps its leader), then the
    /// lower id.
    fn heaviest_of(&self, shard: &Shard) -> NodeId {
        shard
            .replicas
            .iter()
            .copied()
            .max_by(|a, b| {
                let a_load = self.loads.node(*a).replica_load();
                let b_load = self.loads.node(*b).replica_load();
                let a_follows = shard.leader != Some(*a);
                let b_follows = shard.leader != Some(*b);
                a_load
                    .cmp_load(b_load)
                    .then(a_follows.cmp(&b_follows))
                    .then(b.cmp(a))
            })
            .unwrap_or_else(|| panic!("shard {} over target has no replicas", shard.id))
    }
}
