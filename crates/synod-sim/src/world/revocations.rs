//! Revoked leases' keys deleted shard by shard (design 0017), driven as
//! the node's core drives them: the node whose meta group leads sends
//! each shard `ShardMap::detaches` names a stamped `LeaseDetach`, and
//! records the range the shard answers with (`LeaseDetached`) in its meta
//! group. The lease agent's keys live in the shards of a sharded run, so
//! every expiry goes through this under the run's faults.
//!
//! Checked (with the lease agent's checks): after healing, no shard
//! replica holds a key of a lease, and no meta replica a revocation
//! still under way (see `leases_settled`); a key attached to a lease the
//! oracle did not find live would outlive every revocation and fail it.

use super::World;
use crate::config::{Micros, MS};
use crate::node::Waiting;
use synod_group::{Answer, Request};
use synod_paxos::RoleKind;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{outcome, LeaseDetach, LeaseDetached, Outcome};
use synod_storage::GroupId;

/// A detach not answered in this long is sent again.
const DETACH_AGAIN: Micros = 500 * MS;
/// Detaches one node sends per tick at most.
const DETACHES_MAX: usize = 64;

impl World {
    /// On node `i`'s tick: when its meta group leads, the detaches its
    /// revocations still need.
    pub(super) fn drive_revocations(&mut self, i: usize) {
        let now = self.now;
        let node = &self.nodes[i];
        let id = node.id;
        let (Some(meta), Some(map)) = (node.group.as_ref(), node.shard_map()) else {
            return;
        };
        if meta.replica().role_kind() != RoleKind::Leader || meta.kv().revoking().is_empty() {
            return;
        }
        let work = map.detaches(meta.kv().revoking(), DETACHES_MAX);
        self.detaches_sent.retain(|(n, lease, group), at| {
            *n != id || (work.contains(&(*lease, *group)) && now - *at < DETACH_AGAIN)
        });
        let local = self.nodes[i].local_time(now);
        for (lease, group) in work {
            if self.detaches_sent.contains_key(&(id, lease, group))
                || self.nodes[i].is_blank(GroupId(group))
            {
                continue;
            }
            self.detaches_sent.insert((id, lease, group), now);
            let node = &mut self.nodes[i];
            let ticket = node.ticket(Waiting::Detach(lease));
            let op = Op::LeaseDetach(LeaseDetach { id: lease });
            if let Some(g) = node.group_of(GroupId(group)) {
                g.request(ticket, Request::Write(op), local);
            }
            self.note(|| format!("{id}: detach lease {lease} in {group}"));
        }
    }

    /// A shard deleted a revoked lease's keys on node `i`: the range it
    /// held is recorded in the node's meta group.
    pub(super) fn on_detach_answer(&mut self, i: usize, lease: i64, answer: Option<Answer>) {
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
            id: lease,
            range: Some(range),
        });
        node.group().request(ticket, Request::Write(op), now);
    }
}
