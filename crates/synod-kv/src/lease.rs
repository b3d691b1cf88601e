//! Leases as the state machine sees them: which exist, their granted TTL,
//! and which keys are attached. *When* a lease expires is not here: only the
//! leader's clock decides that, and it says so through the log
//! (`LeaseExpire`), so every replica deletes the same keys at the same
//! revision.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use synod_proto::mvccpb::{event::EventType, Event};

/// The largest TTL a lease may be granted (etcd's `MaxLeaseTTL`, seconds).
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// One granted lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// Seconds granted; a keep-alive restarts this much time.
    pub ttl: i64,
    /// Keys whose live version names this lease.
    pub keys: BTreeSet<Bytes>,
}

/// Every lease, by id.
///
/// Invariant: a key is in the set of lease `l` exactly when its live version
/// has `lease == l` (checked by `KvStore::check_invariants`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    by_id: BTreeMap<i64, Lease>,
}

impl Leases {
    /// True when `id` was granted and not yet revoked.
    pub fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// The lease `id`, if it exists.
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.by_id.get(&id)
    }

    /// Every lease in id order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &Lease)> {
        self.by_id.iter().map(|(id, l)| (*id, l))
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no lease exists.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub(crate) fn grant(&mut self, id: i64, ttl: i64) {
        let fresh = self.by_id.insert(
            id,
            Lease {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        assert!(fresh.is_none(), "lease {id:x} granted twice");
    }

    pub(crate) fn remove(&mut self, id: i64) -> Option<Lease> {
        self.by_id.remove(&id)
    }

    /// Attaches `key` to lease `id`. With `stubs` (a shard, design
    /// 0017: the lease itself lives in the meta group) a lease not known
    /// here gets a stub, which only lists its keys here.
    pub(crate) fn attach(&mut self, id: i64, key: &Bytes, stubs: bool) {
        if id == 0 {
            return;
        }
        let lease = if stubs {
            self.by_id.entry(id).or_default()
        } else {
            self.by_id
                .get_mut(&id)
                .unwrap_or_else(|| panic!("key attached to missing lease {id:x}"))
        };
        lease.keys.insert(key.clone());
    }

    /// Detaches `key` from stub `id`, forgetting the stub once it lists
    /// no key (its keys left with a split).
    pub(crate) fn detach(&mut self, id: i64, key: &Bytes) {
        if let Some(l) = self.by_id.get_mut(&id) {
            l.keys.remove(key);
            if l.keys.is_empty() {
                self.by_id.remove(&id);
            }
        }
    }

    /// Follows the attachments through one committed write's events, in
    /// order: the previous version leaves its lease, a put joins its own.
    /// With `stubs`, a stub left without keys is forgotten.
    pub(crate) fn follow(&mut self, events: &[Event], stubs: bool) {
        for e in events {
            let Some(kv) = &e.kv else { continue };
            if let Some(prev) = &e.prev_kv {
                if prev.lease != 0 {
                    if let Some(l) = self.by_id.get_mut(&prev.lease) {
                        l.keys.remove(&kv.key);
                        if stubs && l.keys.is_empty() {
                            self.by_id.remove(&prev.lease);
                        }
                    }
                }
            }
            if e.r#type == EventType::Put as i32 {
                self.attach(kv.lease, &kv.key, stubs);
            }
        }
    }
}
