//! Which revoked leases' keys a meta leader asks the shards to delete now
//! (design 0017). Pure, so the node's core and the simulator drive
//! revocations with this same code.
//!
//! ```text
//!   meta leads, revoking non-empty ─► ShardMap::detaches: per shard, the
//!   leases not yet reported clean ─► minus those sent less than `again`
//!   ago ─► one LeaseDetach per shard, recorded as sent
//! ```
//!
//! A detach or its record that is lost is sent again after `again`: both
//! are idempotent (a shard with no key of the lease deletes nothing, a
//! range recorded twice covers the same keys).

use crate::group::Group;
use crate::shards::ShardMap;
use std::collections::{BTreeMap, BTreeSet};
use synod_paxos::{RoleKind, Time};

/// Leases one detach names at most (one command's worth).
pub const DETACH_LEASES_MAX: usize = synod_kv::revoking::DETACH_IDS_MAX;
/// A detach without an answer for this long is sent again (the node's
/// setting; the simulator's runs are shorter and use less).
pub const DETACH_AGAIN_MS: u64 = 2_000;

/// The detaches a node has sent while its meta group led, and when.
#[derive(Debug)]
pub struct DetachTracker {
    /// `(lease, shard)` → when sent.
    sent: BTreeMap<(i64, u64), Time>,
    again_ms: u64,
}

impl Default for DetachTracker {
    /// The node's tracker: sends again after `DETACH_AGAIN_MS`.
    fn default() -> DetachTracker {
        DetachTracker::new(DETACH_AGAIN_MS)
    }
}

impl DetachTracker {
    /// A tracker that sends an unanswered detach again after `again_ms`.
    pub fn new(again_ms: u64) -> DetachTracker {
        DetachTracker {
            sent: BTreeMap::new(),
            again_ms,
        }
    }

    /// The detaches to send at `now`, one per shard (its group and the
    /// leases it names), recorded as sent: none unless `meta` leads and
    /// revokes something; for each shard of `map` that `reachable` says
    /// can take a command now, the leases it still has to detach that
    /// were not sent to it in the last `again_ms`.
    pub fn due(
        &mut self,
        meta: &Group,
        map: &ShardMap,
        now: Time,
        reachable: impl Fn(u64) -> bool,
    ) -> Vec<(u64, Vec<i64>)> {
        let revoking = meta.kv().revoking();
        if meta.replica().role_kind() != RoleKind::Leader || revoking.is_empty() {
            self.sent.clear();
            return Vec::new();
        }
        let work = map.detaches(revoking, DETACH_LEASES_MAX);
        let wanted: BTreeSet<(i64, u64)> = work
            .iter()
            .flat_map(|(g, leases)| leases.iter().map(|l| (*l, *g)))
            .collect();
        let again = self.again_ms;
        self.sent
            .retain(|key, at| wanted.contains(key) && now.0.saturating_sub(at.0) < again);
        let mut due = Vec::new();
        for (group, leases) in work {
            if !reachable(group) {
                continue;
            }
            let ids: Vec<i64> = leases
                .into_iter()
                .filter(|l| !self.sent.contains_key(&(*l, group)))
                .collect();
            if ids.is_empty() {
                continue;
            }
            for l in &ids {
                self.sent.insert((*l, group), now);
            }
            due.push((group, ids));
        }
        due
    }
}
