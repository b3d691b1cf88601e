//! When leases expire. The state machine knows which leases exist; only the
//! leader's clock says when one runs out, and the leader says so through
//! the log (`LeaseExpire`), so every replica deletes the attached keys at
//! the same revision.
//!
//! Pure like the rest of this crate: time is the caller's clock reading in
//! milliseconds, so the node runtime and the simulator run the same lessor.
//!
//! Every node tracks deadlines from the moment a grant applies, but only
//! the leader acts on them. A node that becomes leader restarts every
//! lease's full TTL (etcd's "promote"): it cannot know when the old leader
//! last renewed one, and expiring a lease that a client kept alive would
//! delete its keys wrongly; granting up to one extra TTL is the safe side.
//!
//! A keep-alive is answered only after the leader confirmed its leadership
//! at a time after the request arrived (a lease read or a read-index
//! round), so a deposed leader cannot promise a lifetime that its
//! successor's deadlines (set at takeover, later still) would cut short.

use crate::store::KvStore;
use std::collections::{BTreeMap, BTreeSet};

/// The shortest TTL granted, in seconds: a lease must outlive a leader
/// election, or every failover would expire healthy leases (etcd's
/// `minLeaseTTL` is 1.5 election timeouts, rounded up).
pub const LEASE_TTL_MIN_S: i64 = 2;
/// Leases revoked by one expiry command.
const EXPIRE_BATCH_MAX: usize = 1000;
/// An expiry proposed this long ago (ms) without applying is proposed again.
const EXPIRE_RETRY_MS: u64 = 1000;

/// Lease deadlines on one node, in its clock's milliseconds.
///
/// Invariant: `queue` holds `(deadline, id)` for exactly the leases in
/// `deadline` that are not in `expiring`, so finding what ran out costs
/// the number of leases due, not the number of leases.
#[derive(Clone, Debug, Default)]
pub struct Lessor {
    deadline: BTreeMap<i64, u64>,
    queue: BTreeSet<(u64, i64)>,
    /// Leases whose expiry was proposed, and when.
    expiring: BTreeMap<i64, u64>,
}

fn ttl_ms(ttl: i64) -> u64 {
    (ttl.max(0) as u64).saturating_mul(1000)
}

impl Lessor {
    fn set_deadline(&mut self, id: i64, at: u64) {
        if let Some(old) = self.deadline.insert(id, at) {
            self.queue.remove(&(old, id));
        }
        self.expiring.remove(&id);
        self.queue.insert((at, id));
    }

    /// A grant applied.
    pub fn granted(&mut self, id: i64, ttl: i64, now: u64) {
        self.set_deadline(id, now.saturating_add(ttl_ms(ttl)));
    }

    /// A revocation or expiry applied.
    pub fn revoked(&mut self, id: i64) {
        if let Some(old) = self.deadline.remove(&id) {
            self.queue.remove(&(old, id));
        }
        self.expiring.remove(&id);
    }

    /// This node became leader: every lease gets its full TTL again.
    pub fn promote(&mut self, kv: &KvStore, now: u64) {
        self.deadline.clear();
        self.queue.clear();
        self.expiring.clear();
        for (id, lease) in kv.leases().iter() {
            self.set_deadline(id, now.saturating_add(ttl_ms(lease.ttl)));
        }
    }

    /// A snapshot replaced the store: track exactly its leases.
    pub fn reset(&mut self, kv: &KvStore, now: u64) {
        self.promote(kv, now);
    }

    /// A confirmed keep-alive: the lease's time starts again. Returns the
    /// TTL, or `None` when the lease is gone or already ran out.
    pub fn renew(&mut self, kv: &KvStore, id: i64, now: u64) -> Option<i64> {
        let ttl = kv.leases().get(id)?.ttl;
        if self.deadline.get(&id).is_some_and(|d| *d <= now) {
            return None;
        }
        self.set_deadline(id, now.saturating_add(ttl_ms(ttl)));
        Some(ttl)
    }

    /// Seconds left (rounded up) and the granted TTL, or `None` when the
    /// lease does not exist.
    pub fn remaining(&self, kv: &KvStore, id: i64, now: u64) -> Option<(i64, i64)> {
        let ttl = kv.leases().get(id)?.ttl;
        let left = match self.deadline.get(&id) {
            Some(d) => d.saturating_sub(now),
            None => ttl_ms(ttl),
        };
        let secs = left.div_ceil(1000) as i64;
        Some((secs, ttl))
    }

    /// Leases past their deadline that need an expiry proposed now: newly
    /// due ones, and those whose proposed expiry has not applied for a
    /// while (it may have been lost to a leader change). In id order.
    pub fn due(&mut self, now: u64) -> Vec<i64> {
        let mut due: Vec<i64> = self
            .expiring
            .iter()
            .filter(|(_, at)| now.saturating_sub(**at) >= EXPIRE_RETRY_MS)
            .map(|(id, _)| *id)
            .take(EXPIRE_BATCH_MAX)
            .collect();
        while due.len() < EXPIRE_BATCH_MAX {
            match self.queue.first() {
                Some(&(at, id)) if at <= now => {
                    self.queue.pop_first();
                    due.push(id);
                }
                _ => break,
            }
        }
        for id in &due {
            self.expiring.insert(*id, now);
        }
        due.sort_unstable();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::etcdserverpb::LeaseGrantRequest;
    const S: u64 = 1000;
    use synod_proto::synodpb::{command::Op, Command};

    fn store_with(leases: &[(i64, i64)]) -> KvStore {
        let mut kv = KvStore::default();
        for (seq, (id, ttl)) in leases.iter().enumerate() {
            kv.apply(&Command {
                client: 1,
                seq: seq as u64 + 1,
                op: Some(Op::LeaseGrant(LeaseGrantRequest { id: *id, ttl: *ttl })),
                ..Default::default()
            });
        }
        kv
    }

    #[test]
    fn deadlines_renewals_and_promotion() {
        let kv = store_with(&[(1, 5), (2, 10)]);
        let t0 = 0;
        let mut l = Lessor::default();
        l.granted(1, 5, t0);
        l.granted(2, 10, t0);
        assert!(l.due(t0 + 4 * S).is_empty());
        assert_eq!(l.renew(&kv, 1, t0 + 4 * S), Some(5));
        assert_eq!(l.remaining(&kv, 1, t0 + 4500), Some((5, 5)));
        assert!(l.due(t0 + 8 * S).is_empty(), "renewed");
        assert_eq!(l.due(t0 + 9 * S), vec![1]);
        assert!(
            l.due(t0 + 9500).is_empty(),
            "an expiry in flight is not proposed twice at once"
        );
        assert_eq!(l.due(t0 + 11 * S), vec![1, 2], "retried");
        assert_eq!(l.renew(&kv, 1, t0 + 11 * S), None);
        // A new leader gives every lease its whole TTL again.
        l.promote(&kv, t0 + 11 * S);
        assert!(l.due(t0 + 15 * S).is_empty());
        assert_eq!(l.renew(&kv, 3, t0), None, "unknown lease");
    }

    /// Random grants, renewals, revocations and expiry rounds: the queue
    /// stays in step with the deadlines, and `due` returns exactly the
    /// leases a full scan would.
    #[test]
    fn the_deadline_queue_agrees_with_a_full_scan() {
        let mut kv = store_with(&(1..=20).map(|id| (id, 1 + id % 3)).collect::<Vec<_>>());
        let mut l = Lessor::default();
        l.promote(&kv, 0);
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        let mut now = 0;
        for _ in 0..2000 {
            now += next() % 300;
            let id = (next() % 20 + 1) as i64;
            match next() % 4 {
                0 => {
                    l.renew(&kv, id, now);
                }
                1 => {
                    let expected: Vec<i64> = {
                        let mut v: Vec<i64> = l
                            .deadline
                            .iter()
                            .filter(|(id, d)| {
                                **d <= now
                                    && l.expiring
                                        .get(id)
                                        .is_none_or(|at| now - at >= EXPIRE_RETRY_MS)
                            })
                            .map(|(id, _)| *id)
                            .collect();
                        v.sort_unstable();
                        v
                    };
                    assert_eq!(l.due(now), expected);
                }
                2 if next() % 8 == 0 => {
                    l.revoked(id);
                    kv = store_with(
                        &kv.leases()
                            .iter()
                            .filter(|(i, _)| *i != id)
                            .map(|(i, lease)| (i, lease.ttl))
                            .collect::<Vec<_>>(),
                    );
                }
                _ => {}
            }
            let queued: BTreeSet<(u64, i64)> = l
                .deadline
                .iter()
                .filter(|(id, _)| !l.expiring.contains_key(id))
                .map(|(id, d)| (*d, *id))
                .collect();
            assert_eq!(l.queue, queued, "queue out of step");
        }
    }
}
