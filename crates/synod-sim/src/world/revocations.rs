//! Revoked leases' keys deleted shard by shard (design 0017), driven by
//! the node's own code (`synod_group::DetachTracker`): the node whose
//! meta group leads sends each shard that still holds keys of a revoked
//! lease a stamped `LeaseDetach`, and
//! records the range the shard answers with (`LeaseDetached`) in its meta
//! group. The lease agent's keys live in the shards of a sharded run, so
//! every expiry goes through this under the run's faults.
//!
//! Checked (with the lease agent's checks): after healing, no shard
//! replica holds a key of a lease, and no meta replica a revocation
//! still under way (see `leases_settled`); a key attached to a lease the
//! oracle did not find live would outlive every revocation and fail it.

use super::World;
use crate::node::Waiting;
use synod_group::{Answer, DetachTracker, Request};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{outcome, LeaseDetach, LeaseDetached, Outcome};
use synod_storage::GroupId;

/// A detach not answered in this long is sent again (the runs are
/// shorter than a node's life: less than `synod_group::DETACH_AGAIN_MS`).
const DETACH_AGAIN_MS: u64 = 500;

impl World {
    /// On node `i`'s tick: the detaches its meta group's revocations
    /// still need, one command per shard, as `DetachTracker` (the node's
    /// code) decides.
    pub(super) fn drive_revocations(&mut self, i: usize) {
        let node = &self.nodes[i];
        let id = node.id;
        let (Some(meta), Some(map)) = (node.group.as_ref(), node.shard_map()) else {
            return;
        };
        let local = node.local_time(self.now);
        let tracker = self
            .detaches_sent
            .entry(id)
            .or_insert_with(|| DetachTracker::new(DETACH_AGAIN_MS));
        let due = tracker.due(meta, &map, local, |g| !node.is_blank(GroupId(g)));
        for (group, ids) in due {
            self.note(|| format!("{id}: detach leases {ids:?} in {group}"));
            let batch = self.detach_batches.len() as u64;
            self.detach_batches.push(ids.clone());
            let node = &mut self.nodes[i];
            let ticket = node.ticket(Waiting::Detach(batch));
            let op = Op::LeaseDetach(LeaseDetach { ids });
            if let Some(g) = node.group_of(GroupId(group)) {
                g.request(ticket, Request::Write(op), local);
            }
        }
    }

    /// A shard deleted a revoked lease's keys on node `i`: the range it
    /// held is recorded in the node's meta group.
    pub(super) fn on_detach_answer(&mut self, i: usize, batch: u64, answer: Option<Answer>) {
        let leases = std::mem::take(&mut self.detach_batches[batch as usize]);
        let Some(Answer::Write(Outcome {
            result: Some(outcome::Result::Detached(range)),
        })) = answer
        else {
            return;
        };
        self.report.detaches += 1;
        let now = self.nodes[i].local_time(self.now);
        let node = &mut self.nodes[i];
        let ticket = node.ticket(Waiting::Detached);
        let op = Op::LeaseDetached(LeaseDetached {
            ids: leases,
            range: Some(range),
        });
        node.group().request(ticket, Request::Write(op), now);
    }
}
