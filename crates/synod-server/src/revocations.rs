//! Revoked leases' keys deleted shard by shard (design 0017): the core
//! loop's part. The meta group records a revocation; the node leading the
//! meta group sends each shard not yet reported clean a stamped
//! `LeaseDetach`, and records each shard's answer (the range it held when
//! it deleted) with `LeaseDetached` in the meta group, until the ranges
//! cover the key space.
//!
//! ```text
//!   meta: lease revoked / expired ─► revoking[id] = {}
//!   meta leader, every DRIVE_EVERY ─► ShardMap::detaches ─► LeaseDetach{id} in each shard
//!   shard applied it ─► Detached(range) ─► LeaseDetached{id, range} in the meta group
//!   ranges cover every key ─► revoking[id] dropped; the client's revoke answers
//! ```
//!
//! A lost detach or record is sent again after `DETACH_AGAIN`; both are
//! idempotent (a shard with no key of the lease deletes nothing, a range
//! recorded twice covers the same keys).

use super::{Answer, Core, Reply, Request, GROUP};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use synod_paxos::RoleKind;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{outcome, LeaseDetach, LeaseDetached, Outcome};
use synod_storage::GroupId;

/// How often the meta leader looks for detaches to send.
const DRIVE_EVERY: Duration = Duration::from_millis(20);
/// A detach without an answer for this long is sent again.
const DETACH_AGAIN: Duration = Duration::from_secs(2);
/// Detaches in flight at once, over every lease and shard.
const DETACHES_MAX: usize = 256;

/// The detaches this node has sent and not yet seen answered.
#[derive(Default)]
pub(super) struct Revocations {
    /// `(lease, shard)` → when sent.
    sent: BTreeMap<(i64, u64), Instant>,
    driven: Option<Instant>,
}

impl Core {
    /// Sends the detaches the meta group's revocations still need, when
    /// this node leads the meta group of a sharded cluster.
    pub(super) fn drive_revocations(&mut self) {
        let Some(view) = &self.shards else {
            return;
        };
        if self
            .revocations
            .driven
            .is_some_and(|t| t.elapsed() < DRIVE_EVERY)
        {
            return;
        }
        self.revocations.driven = Some(Instant::now());
        let meta = &self.groups[&GROUP];
        if meta.replica().role_kind() != RoleKind::Leader {
            self.revocations.sent.clear();
            return;
        }
        let revoking = meta.kv().revoking();
        if revoking.is_empty() {
            self.revocations.sent.clear();
            return;
        }
        let work = view.get().detaches(revoking, DETACHES_MAX);
        let sent = &mut self.revocations.sent;
        sent.retain(|key, at| work.contains(key) && at.elapsed() < DETACH_AGAIN);
        let now = self.now();
        for (lease, group) in work {
            if self.revocations.sent.len() >= DETACHES_MAX
                || self.revocations.sent.contains_key(&(lease, group))
            {
                continue;
            }
            self.revocations.sent.insert((lease, group), Instant::now());
            let ticket = self.ticket(Reply::Detach { lease });
            let op = Op::LeaseDetach(LeaseDetach { id: lease });
            self.request(GroupId(group), ticket, Request::Write(op), now);
        }
    }

    /// A shard answered a detach: its range is recorded in the meta group
    /// (a refusal is sent again on a later round).
    pub(super) fn detached(&mut self, lease: i64, answer: Answer) {
        let Answer::Write(Outcome {
            result: Some(outcome::Result::Detached(range)),
        }) = answer
        else {
            tracing::debug!(lease, ?answer, "a detach was not applied; sent again later");
            return;
        };
        let ticket = self.ticket(Reply::Discard);
        let op = Op::LeaseDetached(LeaseDetached {
            id: lease,
            range: Some(range),
        });
        let now = self.now();
        self.request(GROUP, ticket, Request::Write(op), now);
    }
}
