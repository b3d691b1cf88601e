//! Membership changes in a sharded cluster (design 0019): the core
//! loop's part.
//!
//! ```text
//!   etcdctl member add/remove/promote ─► the meta group's configuration
//!   every tick: shards this node leads, not at the meta target
//!       ─► a linearizable barrier on the meta group ─► the shard proposes
//!          the meta target in its own log (synod_group::MembershipFollower)
//!   a shard led from a node the meta target leaves out, or that has
//!   not heard the meta group for FOLLOW_CUT_OFF_MS ─► leadership handed
//!   to another voter
//! ```
//!
//! A joining node needs no list of shards: it hosts those the cluster
//! started with (the same `--split-at`), replays their logs or installs
//! their snapshots, and so learns every split (a split applied hosts the
//! new group; a snapshot's range names its right neighbour, hosted empty
//! in join mode until its own snapshot comes). A batch for a shard it
//! does not host, from a member, hosts it empty too (see
//! `host_on_demand`).

use super::{Answer, Core, Reply, GROUP};
use synod_paxos::Membership;
use synod_storage::GroupId;

impl Core {
    /// Moves the shards this node leads towards the meta group's
    /// configuration (sharded clusters only): asks the barrier when one
    /// is behind.
    pub(super) fn follow_membership(&mut self) {
        if self.shards.is_none() {
            return;
        }
        let now = self.now();
        let meta = self.groups[&GROUP].replica().membership().cloned();
        let shards = self
            .groups
            .iter()
            .filter(|(id, _)| **id != GROUP)
            .map(|(id, g)| (id.0, g));
        let look = self.follower.check(self.id, now, meta.as_ref(), shards);
        for (id, to) in look.hand_over {
            let id = GroupId(id);
            if let Some(group) = self.groups.get_mut(&id) {
                let result = group.transfer_leadership(to);
                if result.is_ok() {
                    self.metrics.shard_hand_overs.inc();
                }
                tracing::info!(group = %id, %to, ?result, "shard leadership handed over: this node left the meta group or cannot hear it");
            }
        }
        if !look.barrier {
            return;
        }
        let ticket = self.ticket(Reply::Follow);
        self.request(GROUP, ticket, synod_group::meta_barrier(), now);
    }

    /// The follower's barrier answered: every shard still behind as it was
    /// seen proposes the meta target.
    pub(super) fn followed(&mut self, answer: Answer) {
        let ok = matches!(answer, Answer::Read(Ok(_)));
        let meta = self.groups[&GROUP].replica().membership().cloned();
        let now = self.now();
        for behind in self.follower.confirmed(ok, now) {
            let id = GroupId(behind.group);
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            match synod_group::follow_membership(meta.as_ref(), &behind, group) {
                Some((target, Ok(()))) => {
                    self.metrics.shard_follows.inc();
                    self.metrics.event(
                        id.0,
                        "membership",
                        format!("following the meta group's configuration: {target}"),
                    )
                }
                Some((target, Err(e))) => {
                    tracing::info!(group = %id, %target, error = %e, "shard did not follow")
                }
                None => {}
            }
        }
    }

    /// Whether every shard this node hosts has settled on `target` (see
    /// `synod_group::shards_settled`).
    pub(super) fn shards_follow(&self, target: &Membership) -> bool {
        let shards = self.groups.iter().filter(|(id, _)| **id != GROUP);
        synod_group::shards_settled(self.id, target, shards.map(|(_, g)| g))
    }

    /// Hosts shard `id`, empty, for a batch from `from`, when `from` is a
    /// member of the cluster (the meta group's member table or
    /// configuration): a shard whose voters include this node though it
    /// never applied the split that made it (it lagged, and was then
    /// removed from the parent), and whose quorum may need it. The group
    /// waits in join mode for its leader's snapshot, or takes the split's
    /// state if the split applies here after all (`adopt_split`). Returns
    /// whether it is hosted now.
    pub(super) fn host_on_demand(&mut self, id: GroupId, from: u64) -> bool {
        if self.shards.is_none() || id == GROUP {
            return false;
        }
        if !self.groups[&GROUP].knows_member(synod_paxos::NodeId(from)) {
            return false;
        }
        let group = self.make_empty(id);
        self.groups.insert(id, group);
        // A shard the cluster started with replays its log from the
        // start, from the range it started with.
        self.adopt_ranges();
        self.metrics.event(
            id.0,
            "shard",
            format!("hosting a shard node {from} replicates to this node; its state follows"),
        );
        true
    }
}
