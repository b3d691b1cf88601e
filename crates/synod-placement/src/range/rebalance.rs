//! The rebalance pass: move replicas of healthy shards from the heaviest
//! live nodes to the lightest until no move narrows the spread.

use super::Planner;
use crate::action::Action;
use crate::load::NodeLoad;
use crate::types::{NodeId, ShardId};

impl Planner {
    /// Moves one replica at a time while budget is left and some move still
    /// pays (see `Weighted::should_shed_to`).
    pub(super) fn rebalance(&mut self) {
        while self.budget_left() {
            match self.next_rebalance_move() {
                Some(action) => self.emit(action),
                None => return,
            }
        }
    }

    /// The move from the heaviest node to the lightest that can take one of
    /// its shards. Pairs are tried heaviest donor first, then lightest
    /// receiver first, so when the extreme pair is blocked (every shard on
    /// the donor already has a replica on the receiver, or is busy) the next
    /// best pair is used.
    fn next_rebalance_move(&self) -> Option<Action> {
        let donors = self.loads.live_by(NodeLoad::replica_load, true);
        let receivers = self.loads.live_by(NodeLoad::replica_load, false);
        for (from, from_load) in &donors {
            for (to, to_load) in &receivers {
                if from == to || !from_load.should_shed_to(*to_load) {
                    continue;
                }
                if let Some(shard) = self.movable_shard(*from, *to) {
                    return Some(Action::Move {
                        shard,
                        add: *to,
                        remove: *from,
                    });
                }
            }
        }
        None
    }

    /// A healthy, free shard on `from` without a replica on `to`, preferring
    /// one that `from` does not lead so that the shard keeps its leader;
    /// lowest id otherwise.
    fn movable_shard(&self, from: NodeId, to: NodeId) -> Option<ShardId> {
        let mut led = None;
        for id in &self.loads.node(from).replicas {
            let shard = self.shard(*id);
            if !self.is_free(shard) || !self.is_healthy(shard) || shard.has_replica(to) {
                continue;
            }
            if shard.leader != Some(from) {
                return Some(*id);
            }
            led.get_or_insert(*id);
        }
        led
    }
}
