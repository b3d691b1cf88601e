//! The leader pass: every shard with a quorum gets a live leader, and
//! leadership is spread over live nodes by capacity. A leader must be a
//! replica, so leadership only moves within a shard's replica set.

use super::Planner;
use crate::action::Action;
use crate::load::{NodeLoad, Weighted};
use crate::types::{NodeId, Shard, ShardId};

impl Planner {
    /// Elects leaders where none is live, then transfers leadership from
    /// the nodes that lead most while budget is left and a transfer pays.
    pub(super) fn balance_leaders(&mut self) {
        self.elect_missing_leaders();
        while self.budget_left() {
            match self.next_transfer() {
                Some(action) => self.emit(action),
                None => return,
            }
        }
    }

    /// A shard whose leader is unknown or on a dead node will elect one of
    /// its own accord; the plan names the live replica that leads least, so
    /// the election does not undo the balance.
    fn elect_missing_leaders(&mut self) {
        let leaderless: Vec<ShardId> = self
            .view
            .shards()
            .filter(|s| {
                self.may_change_leader(s) && !s.leader.is_some_and(|l| self.view.is_live(l))
            })
            .map(|s| s.id)
            .collect();
        for id in leaderless {
            if !self.budget_left() {
                return;
            }
            let shard = self.shard(id);
            let lightest = shard
                .replicas
                .iter()
                .copied()
                .filter(|n| self.view.is_live(*n))
                .map(|n| (n, self.loads.node(n).leader_load().plus_one()))
                .min_by(|(a_id, a), (b_id, b)| a.cmp_load(*b).then(a_id.cmp(b_id)));
            if let Some((to, _)) = lightest {
                self.emit(Action::TransferLeader { shard: id, to });
            }
        }
    }

    /// The transfer from the node that leads most (relative to capacity) to
    /// the lightest live replica of one of its shards, trying donors from
    /// heaviest down until one has a transfer that pays.
    fn next_transfer(&self) -> Option<Action> {
        for (from, from_load) in self.loads.live_by(NodeLoad::leader_load, true) {
            let mut best: Option<(NodeId, Weighted, ShardId)> = None;
            for id in &self.loads.node(from).leads {
                let shard = self.shard(*id);
                if !self.may_change_leader(shard) {
                    continue;
                }
                for to in shard.replicas.iter().copied() {
                    if to == from || !self.view.is_live(to) {
                        continue;
                    }
                    let to_load = self.loads.node(to).leader_load();
                    let lighter = best.is_none_or(|(best_to, best_load, _)| {
                        to_load.cmp_load(best_load).then(to.cmp(&best_to)).is_lt()
                    });
                    if from_load.should_shed_to(to_load) && lighter {
                        best = Some((to, to_load, *id));
                    }
                }
            }
            if let Some((to, _, shard)) = best {
                return Some(Action::TransferLeader { shard, to });
            }
        }
        None
    }

    /// Leadership can change on a free shard whose live voters can elect.
    fn may_change_leader(&self, shard: &Shard) -> bool {
        self.is_free(shard) && !shard.replicas.is_empty() && self.view.has_quorum(shard)
    }
}
