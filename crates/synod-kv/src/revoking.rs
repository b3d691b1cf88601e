//! Revoked leases whose keys the shards are still deleting (design 0017).
//!
//! In a sharded cluster a lease lives in the meta group and its keys in
//! the shards. Revoking it (by a client or by expiry) removes the lease in
//! the meta group's log at once and records it here; each shard then
//! deletes its keys with a stamped `LeaseDetach` and the meta group
//! records the shard's range (`LeaseDetached`). Once the recorded ranges
//! cover the whole key space, no shard holds a key of the lease and none
//! can attach one (every later put was checked against the meta group
//! when it was stamped, and found the lease gone): the entry is dropped
//! and the lease's id may be granted again.
//!
//! Ranges, not shard ids, are recorded because shards split while a
//! revocation runs: a shard that split after detaching passed the
//! deletion to both halves; one that split before has a smaller range,
//! and the half that left reports its own.

use crate::shard::Shard;
use bytes::Bytes;
use synod_proto::synodpb::ShardRange;

/// The most leases one detach (or its record) names: a driver batches
/// the leases it detaches in one shard into one command.
pub const DETACH_IDS_MAX: usize = 1_000;

/// The most ranges one revocation records before it is complete; a
/// shard map with more shards than this completes in pieces it merges.
pub const COVERED_MAX: usize = 100_000;

/// The key ranges known to hold no key of one revoked lease.
///
/// Invariant: `spans` are sorted, non-empty, disjoint and not adjacent
/// (adjacent ones are merged), so "covers everything" is one span
/// `["", ∞)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Covered {
    spans: Vec<(Bytes, Option<Bytes>)>,
}

impl Covered {
    /// Adds `[start, end)` (`None`: no end).
    pub fn add(&mut self, start: Bytes, end: Option<Bytes>) {
        if end.as_ref().is_some_and(|e| *e <= start) {
            return;
        }
        let mut start = start;
        let mut end = end;
        // Fold in every span that overlaps or touches the new one.
        let mut kept = Vec::with_capacity(self.spans.len() + 1);
        for (s, e) in std::mem::take(&mut self.spans) {
            let before = e.as_ref().is_some_and(|e| *e < start);
            let after = end.as_ref().is_some_and(|end| s > *end);
            if before || after {
                kept.push((s, e));
                continue;
            }
            if s < start {
                start = s;
            }
            end = match (end, e) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        let at = kept.partition_point(|(s, _)| *s < start);
        kept.insert(at, (start, end));
        self.spans = kept;
        debug_assert!(self.well_formed(), "{self:?}");
    }

    /// True when every key is covered.
    pub fn is_full(&self) -> bool {
        matches!(self.spans.as_slice(), [(s, None)] if s.is_empty())
    }

    /// True when every key of `shard` is covered.
    pub fn covers(&self, shard: &Shard) -> bool {
        self.spans.iter().any(|(s, e)| {
            *s <= shard.start
                && match (e, &shard.end) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(e), Some(end)) => end <= e,
                }
        })
    }

    /// Number of separate spans (the tests' view of the merging).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.spans.len()
    }

    /// As recorded in the state and snapshots.
    pub fn to_proto(&self) -> Vec<ShardRange> {
        self.spans
            .iter()
            .map(|(s, e)| Shard::new(s.clone(), e.clone()).to_proto())
            .collect()
    }

    /// From the state or a peer's snapshot: refused when a range is
    /// malformed or there are too many.
    pub fn from_proto(ranges: &[ShardRange]) -> Result<Covered, String> {
        if ranges.len() > COVERED_MAX {
            return Err(format!("{} covered ranges", ranges.len()));
        }
        let mut c = Covered::default();
        for r in ranges {
            let s = Shard::from_proto(r)?;
            c.add(s.start, s.end);
        }
        Ok(c)
    }

    fn well_formed(&self) -> bool {
        self.spans.windows(2).all(|w| match &w[0].1 {
            Some(e) => *e < w[1].0,
            None => false,
        }) && self
            .spans
            .iter()
            .all(|(s, e)| e.as_ref().is_none_or(|e| s < e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn ranges_merge_until_everything_is_covered() {
        let mut c = Covered::default();
        c.add(b("m"), Some(b("t")));
        assert!(!c.is_full());
        assert!(c.covers(&Shard::new(b("m"), Some(b("t")))));
        assert!(!c.covers(&Shard::new(b("a"), Some(b("t")))));
        c.add(b("t"), None);
        assert_eq!(c.len(), 1, "adjacent spans merge");
        assert!(c.covers(&Shard::new(b("x"), None)));
        c.add(b(""), Some(b("c")));
        assert_eq!(c.len(), 2);
        c.add(b("c"), Some(b("m")));
        assert!(c.is_full());
        let back = Covered::from_proto(&c.to_proto()).unwrap();
        assert_eq!(back, c);
    }

    proptest! {
        /// Adding shards' ranges in any order, with repeats, covers the
        /// key space exactly when every shard was added.
        #[test]
        fn full_exactly_when_every_piece_was_added(
            cuts in proptest::collection::btree_set("[a-e]{1,2}", 0..6),
            order in proptest::collection::vec(0usize..8, 0..20),
        ) {
            let mut starts: Vec<Bytes> = vec![Bytes::new()];
            starts.extend(cuts.iter().map(|s| b(s)));
            let pieces: Vec<(Bytes, Option<Bytes>)> = starts
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), starts.get(i + 1).cloned()))
                .collect();
            let mut c = Covered::default();
            let mut added = vec![false; pieces.len()];
            for i in order {
                let i = i % pieces.len();
                c.add(pieces[i].0.clone(), pieces[i].1.clone());
                added[i] = true;
                prop_assert!(c.well_formed());
            }
            prop_assert_eq!(c.is_full(), added.iter().all(|a| *a));
            for (i, (s, e)) in pieces.iter().enumerate() {
                prop_assert_eq!(c.covers(&Shard::new(s.clone(), e.clone())), added[i]);
            }
        }
    }
}
