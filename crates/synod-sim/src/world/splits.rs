//! Shards splitting under faults (issue 10, design 0016): an agent asks a
//! random node to split the shard holding a random key there, through
//! the shard's log, as `synod split` does; the checkers hold every node's
//! shards to the rules a split must keep.
//!
//! - **no key owned by two shards**: the ranges a node's replicas hold
//!   never overlap;
//! - **one range per shard and epoch**: every replica of a shard shows
//!   the same range at the same epoch (the split applied at one slot);
//! - no acknowledged write lost across a split: the clients' history
//!   stays linearizable (their writes are rerouted when a shard refuses
//!   keys it no longer holds).

use super::{Event, World};
use crate::checker::Violation;
use crate::config::MS;
use crate::node::Waiting;
use rand::Rng;
use synod_group::{Answer, Request};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::SplitShard;
use synod_storage::GroupId;

/// The first group a split makes (the run's own shards come before).
pub(super) const FIRST_SPLIT_GROUP: u64 = 64;
/// Splits asked per run at most (group ids stay below 256).
const SPLITS_ASKED_MAX: u64 = 24;

impl World {
    /// The split agent: one split through a random running node, at a
    /// random key, then again later while faults run.
    pub(super) fn on_split_agent(&mut self) {
        if self.healed_at.is_some() || self.next_split_group >= FIRST_SPLIT_GROUP + SPLITS_ASKED_MAX
        {
            return;
        }
        let delay = self.rng.gen_range(100 * MS..600 * MS);
        self.schedule(delay, Event::SplitAgent);
        let Some(i) = self.random_running_node() else {
            return;
        };
        let Some(map) = self.nodes[i].shard_map() else {
            return;
        };
        let at = crate::kv::key(self.rng.gen_range(0..self.cfg.keys));
        let group = GroupId(map.group_of(&at));
        if self.nodes[i].is_blank(group) {
            return;
        }
        let child = self.next_split_group;
        self.next_split_group += 1;
        let node = &mut self.nodes[i];
        let id = node.id;
        let ticket = node.ticket(Waiting::Split(child));
        let now = node.local_time(self.now);
        let op = Op::Split(SplitShard {
            at: at.clone(),
            child,
        });
        if let Some(g) = node.group_of(group) {
            g.request(ticket, Request::Write(op), now);
        }
        self.note(|| format!("{id}: split {group} at {at:?} into {child}?"));
    }

    /// A split's answer: taken or refused (the key was a shard's start,
    /// or the shard moved), never a violation.
    pub(super) fn on_split_answer(&mut self, child: u64, answer: Option<Answer>) {
        self.note(|| format!("split into {child}: {answer:?}"));
    }

    /// Node `i`'s shards against the split rules (see the module doc).
    pub(super) fn check_shards(&mut self, i: usize) -> Result<(), Violation> {
        let node = &self.nodes[i];
        let mut ranges: Vec<(GroupId, synod_kv::Shard)> = node
            .shards
            .iter()
            .filter_map(|(g, group)| Some((*g, group.kv().shard()?.clone())))
            .collect();
        ranges.sort_by(|a, b| a.1.start.cmp(&b.1.start));
        for w in ranges.windows(2) {
            if w[0].1.end.as_ref().is_none_or(|e| *e > w[1].1.start) {
                return Err(Violation {
                    invariant: "no key owned by two shards",
                    detail: format!(
                        "on {}: {} holds {:?} and {} holds {:?}",
                        node.id, w[0].0, w[0].1, w[1].0, w[1].1
                    ),
                });
            }
        }
        for (g, shard) in ranges {
            let seen = self
                .shard_epochs
                .entry((g, shard.epoch))
                .or_insert_with(|| shard.clone());
            if *seen != shard {
                return Err(Violation {
                    invariant: "one range per shard and epoch",
                    detail: format!(
                        "{g} at epoch {}: {:?} on {}, {:?} elsewhere",
                        shard.epoch, shard, node.id, seen
                    ),
                });
            }
        }
        Ok(())
    }
}
