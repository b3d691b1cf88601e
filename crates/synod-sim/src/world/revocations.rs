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
/// Leases one detach names at most.
const DETACH_LEASES_MAX: usize = synod_kv::revoking::DETACH_IDS_MAX;

impl World {
    /// On node `i`'s tick: when its meta group leads, the detaches its
    /// revocations still need, one command per shard.
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
        let work = map.detaches(meta.kv().revoking(), DETACH_LEASES_MAX);
        self.detaches_sent.retain(|(n, lease, group), at| {
            *n != id
                || (work.get(group).is_some_and(|l| l.contains(lease)) && now - *at < DETACH_AGAIN)
        });
        let local = self.nodes[i].local_time(now);
        for (group, leases) in work {
            if self.nodes[i].is_blank(GroupId(group)) {
                continue;
            }
            let sent = &mut self.detaches_sent;
            let ids: Vec<i64> = leases
                .into_iter()
                .filter(|l| !sent.contains_key(&(id, *l, group)))
                .collect();
            if ids.is_empty() {
                continue;
            }
            for l in &ids {
                sent.insert((id, *l, group), now);
            }
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
