//! Membership changes in a sharded run (design 0019), driven by the
//! node's own code: the membership nemesis changes the meta group's
//! configuration; on every tick each node's `MembershipFollower` looks at
//! the shards it leads, asks its meta replica for a linearizable barrier
//! when one is behind, and proposes the meta target in that shard once
//! the barrier answers; a shard led from a node the meta target leaves
//! out, or that has not heard the meta group for a while, is handed to
//! another voter. Spares host the shards the run started with and learn
//! the rest from their logs and snapshots, as a joining node does. A node
//! that gets a message for a shard it does not host, from a member, hosts
//! it empty in join mode (one it votes in though it never applied the
//! split that made it), as the node's core does; the split, if it applies
//! later, hands it its state (`Group::adopt_split`).
//!
//! Checked by the per-group checkers (chosen values, applies, convergence)
//! under every fault, with spares joining and members retired; and after
//! healing, every shard replica of a running member settles on the meta
//! group's configuration (`World::shards_followed`).

use super::World;
use crate::node::Waiting;
use synod_group::Answer;
use synod_storage::GroupId;

impl World {
    /// On node `i`'s tick: the follower's look at its shards, and a
    /// barrier on its meta group when one is behind.
    pub(super) fn drive_follower(&mut self, i: usize) {
        if self.cfg.shard_map.is_none() {
            return;
        }
        let node = &mut self.nodes[i];
        let local = node.local_time(self.now);
        let Some(meta) = node.group.as_ref() else {
            return;
        };
        let meta = meta.replica().membership().cloned();
        let shards = node.shards.iter().map(|(id, g)| (id.0, g));
        let look = node.follower.check(node.id, local, meta.as_ref(), shards);
        let id = node.id;
        let mut notes = Vec::new();
        for (group, to) in look.hand_over {
            let group = GroupId(group);
            let result = node.group_of(group).map(|g| g.transfer_leadership(to));
            notes.push(format!("{id}: hands {group} to {to}: {result:?}"));
        }
        for text in notes {
            self.note(|| text);
        }
        if !look.barrier {
            return;
        }
        let node = &mut self.nodes[i];
        let ticket = node.ticket(Waiting::FollowBarrier);
        node.group()
            .request(ticket, synod_group::meta_barrier(), local);
    }

    /// Node `i`'s barrier answered: its shards still behind follow.
    pub(super) fn on_follow_barrier(&mut self, i: usize, answer: Option<Answer>) {
        let ok = matches!(answer, Some(Answer::Read(Ok(_))));
        let node = &mut self.nodes[i];
        let id = node.id;
        let Some(meta) = node.group.as_ref() else {
            return;
        };
        let meta = meta.replica().membership().cloned();
        let mut notes = Vec::new();
        let local = node.local_time(self.now);
        for behind in node.follower.confirmed(ok, local) {
            let group = GroupId(behind.group);
            let Some(shard) = node.shards.get_mut(&group) else {
                continue;
            };
            let Some((target, result)) =
                synod_group::follow_membership(meta.as_ref(), &behind, shard)
            else {
                continue;
            };
            notes.push(format!(
                "{id}: {group} follows the meta group: {target}: {result:?}"
            ));
            if result.is_ok() {
                self.report.shard_membership_changes += 1;
            }
        }
        for text in notes {
            self.note(|| text);
        }
    }

    /// A message for shard `group` reached node `i`, which does not host
    /// it: hosts it empty when the sender is a member (the meta group's
    /// configuration or member table), as the node's core does.
    pub(super) fn host_on_demand(&mut self, i: usize, from: synod_paxos::NodeId, group: GroupId) {
        if self.cfg.shard_map.is_none() || group == crate::node::GROUP {
            return;
        }
        let now = self.now;
        let node = &mut self.nodes[i];
        let Some(meta) = node.group.as_ref() else {
            return;
        };
        if !meta.knows_member(from) {
            return;
        }
        node.host_empty(&self.cfg, now, group);
        let id = node.id;
        self.note(|| format!("{id}: hosts {group} for {from}"));
    }
}
