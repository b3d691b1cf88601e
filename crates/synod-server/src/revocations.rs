//! Revoked leases' keys deleted shard by shard (design 0017): the core
//! loop's part. The meta group records a revocation; the node leading the
//! meta group sends each shard not yet reported clean a stamped
//! `LeaseDetach`, and records each shard's answer (the range it held when
//! it deleted) with `LeaseDetached` in the meta group, until the ranges
//! cover the key space.
//!
//! ```text
//!   meta: lease revoked / expired ─► revoking[id] = {}
//!   meta leader, on every change ─► ShardMap::detaches ─► LeaseDetach{ids} in each shard
//!   shard applied it ─► Detached(range) ─► LeaseDetached{ids, range} in the meta group
//!   ranges cover every key ─► revoking[id] dropped; the client's revoke answers
//! ```
//!
//! One command per shard carries every lease that shard still has to
//! detach (not one per lease: under a lock or election workload many are
//! revoked at once). Which to send when is `synod_group::DetachTracker`'s
//! call, the simulator's too; a lost detach or record is sent again after
//! `DETACH_AGAIN_MS`.

use super::{Answer, Core, Reply, Request, GROUP};
use std::time::{Duration, Instant};
use synod_group::DetachTracker;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{outcome, LeaseDetach, LeaseDetached, Outcome};
use synod_storage::GroupId;
use tokio::sync::oneshot;

/// How often the meta leader looks for detaches to send again when its
/// meta group applied nothing new (it looks at once when it did).
const DRIVE_EVERY: Duration = Duration::from_millis(20);

/// The detaches this node has sent and not yet seen answered.
#[derive(Default)]
pub(super) struct Revocations {
    sent: DetachTracker,
    /// When the driver last looked, and the meta group's applied slot then.
    driven: Option<(Instant, synod_paxos::Slot)>,
    /// Clients' revocations waiting for their lease's keys to be gone.
    waiters: Vec<(i64, oneshot::Sender<bool>)>,
}

impl Core {
    /// Sends the detaches the meta group's revocations still need, when
    /// this node leads the meta group of a sharded cluster.
    pub(super) fn drive_revocations(&mut self) {
        let Some(view) = &self.shards else {
            return;
        };
        let meta = &self.groups[&GROUP];
        let applied = meta.applied();
        if self
            .revocations
            .driven
            .is_some_and(|(t, slot)| t.elapsed() < DRIVE_EVERY && slot == applied)
        {
            return;
        }
        self.revocations.driven = Some((Instant::now(), applied));
        let map = view.get();
        let now = self.now();
        // A shard whose state is still on its way (a snapshot) is asked
        // once it has some.
        let groups = &self.groups;
        let holds_state = |g: u64| {
            groups
                .get(&GroupId(g))
                .is_some_and(|s| s.kv().shard().is_some())
        };
        let due = self
            .revocations
            .sent
            .due(&groups[&GROUP], &map, now, holds_state);
        for (group, ids) in due {
            let ticket = self.ticket(Reply::Detach {
                leases: ids.clone(),
            });
            let op = Op::LeaseDetach(LeaseDetach { ids });
            self.request(GroupId(group), ticket, Request::Write(op), now);
        }
    }

    /// Answers `reply` once no shard holds a key of revoked lease `id`:
    /// at once with false when the lease is not being revoked here.
    pub(super) fn await_revocation(&mut self, id: i64, reply: oneshot::Sender<bool>) {
        if self.groups[&GROUP].kv().is_revoking(id) {
            self.revocations.waiters.push((id, reply));
        } else {
            let _ = reply.send(false);
        }
    }

    /// Answers the waiters whose revocation completed on this node (or
    /// who stopped waiting).
    pub(super) fn answer_revocation_waiters(&mut self) {
        if self.revocations.waiters.is_empty() {
            return;
        }
        let kv = self.groups[&GROUP].kv();
        let mut done = Vec::new();
        self.revocations.waiters.retain_mut(|(id, reply)| {
            if reply.is_closed() {
                return false;
            }
            if kv.is_revoking(*id) {
                return true;
            }
            done.push(std::mem::replace(reply, oneshot::channel().0));
            false
        });
        for reply in done {
            let _ = reply.send(true);
        }
    }

    /// A shard answered a detach: its range is recorded in the meta group
    /// (a refusal is sent again on a later round).
    pub(super) fn detached(&mut self, leases: Vec<i64>, answer: Answer) {
        let Answer::Write(Outcome {
            result: Some(outcome::Result::Detached(range)),
        }) = answer
        else {
            tracing::debug!(
                ?leases,
                ?answer,
                "a detach was not applied; sent again later"
            );
            return;
        };
        let ticket = self.ticket(Reply::Discard);
        let op = Op::LeaseDetached(LeaseDetached {
            ids: leases,
            range: Some(range),
        });
        let now = self.now();
        self.request(GROUP, ticket, Request::Write(op), now);
    }
}
