//! The keys a shard's state machine holds (issue 10, design 0016).
//!
//! A shard of a sharded cluster records its own range in its state, so
//! the check "is this key mine?" is made where commands apply, in log
//! order, the same on every replica. A split is a command in the shard's
//! own log: at the slot it applies, the keys from the split point on
//! leave with their history for a new group, and every later command or
//! read that names them is refused with `WRONG_SHARD`, changes nothing,
//! and is routed again by its node. A range only ever shrinks.
//!
//! Invariants:
//! - **K1** a store holds versions only of keys inside its range;
//! - **K2** after a split the two ranges are disjoint, adjacent at the
//!   split point, and their union is the parent's range before it.

use crate::range::KeyRange;
use bytes::Bytes;
use prost::Message as _;
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::TxnRequest;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::ShardRange;

/// The longest split point, in bytes: a boundary, not data.
pub const SPLIT_KEY_MAX: usize = 4_096;

/// One shard's keys `[start, end)` and the group that owns the keys from
/// `end` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// First key held.
    pub start: Bytes,
    /// First key not held; `None`: no end.
    pub end: Option<Bytes>,
    /// The group a split of this shard made, which owns the keys from
    /// `end` (0: the shard to the right is one of the cluster's first,
    /// known from its split points).
    pub right: u64,
    /// Splits this range went through.
    pub epoch: u64,
}

impl Shard {
    /// A range the cluster was started with.
    pub fn new(start: Bytes, end: Option<Bytes>) -> Shard {
        Shard {
            start,
            end,
            right: 0,
            epoch: 0,
        }
    }

    /// The range as a key range.
    pub fn range(&self) -> KeyRange {
        KeyRange::Span {
            start: self.start.clone(),
            end: self.end.clone(),
        }
    }

    /// True when `key` is this shard's.
    pub fn holds_key(&self, key: &[u8]) -> bool {
        self.range().contains(key)
    }

    /// True when every key `range` names is this shard's.
    pub fn holds(&self, range: &KeyRange) -> bool {
        self.range().covers(range)
    }

    /// True when every key `op` names is this shard's (ops that name no
    /// keys, such as a compaction, are every shard's).
    pub fn holds_op(&self, op: &Op) -> bool {
        match op {
            Op::Put(p) => self.holds_key(&p.key),
            Op::DeleteRange(d) => self.holds(&KeyRange::from_etcd(&d.key, &d.range_end)),
            Op::Txn(t) => self.holds_txn(t),
            _ => true,
        }
    }

    fn holds_txn(&self, t: &TxnRequest) -> bool {
        t.compare
            .iter()
            .all(|c| self.holds(&KeyRange::from_etcd(&c.key, &c.range_end)))
            && crate::txn_requests(t).all(|r| match r {
                Request::RequestRange(r) => self.holds(&KeyRange::from_etcd(&r.key, &r.range_end)),
                Request::RequestPut(p) => self.holds_key(&p.key),
                Request::RequestDeleteRange(d) => {
                    self.holds(&KeyRange::from_etcd(&d.key, &d.range_end))
                }
                Request::RequestTxn(_) => true,
            })
    }

    /// Whether `at` may cut this shard: strictly inside, not too long.
    pub fn may_split_at(&self, at: &[u8]) -> bool {
        !at.is_empty()
            && at.len() <= SPLIT_KEY_MAX
            && at > self.start.as_ref()
            && self.end.as_ref().is_none_or(|e| at < e.as_ref())
    }

    /// The two halves of a split at `at` (checked by `may_split_at`), the
    /// keys from `at` going to group `child`.
    pub fn split(&self, at: Bytes, child: u64) -> (Shard, Shard) {
        assert!(self.may_split_at(&at), "split point outside the shard");
        let epoch = self.epoch + 1;
        let left = Shard {
            start: self.start.clone(),
            end: Some(at.clone()),
            right: child,
            epoch,
        };
        let right = Shard {
            start: at,
            end: self.end.clone(),
            right: self.right,
            epoch,
        };
        (left, right)
    }

    /// As recorded in the meta row and in snapshots.
    pub fn to_proto(&self) -> ShardRange {
        ShardRange {
            start: self.start.clone(),
            end: self.end.clone().unwrap_or_default(),
            open: self.end.is_none(),
            right: self.right,
            epoch: self.epoch,
        }
    }

    /// From the meta row or a peer's snapshot: refused when the range is
    /// empty or inconsistent (an end with `open` set).
    pub fn from_proto(r: &ShardRange) -> Result<Shard, String> {
        if r.open && !r.end.is_empty() {
            return Err("a shard range with an end marked open".into());
        }
        let end = (!r.open).then(|| r.end.clone());
        if end.as_ref().is_some_and(|e| *e <= r.start) {
            return Err(format!("an empty shard range [{:?}, {:?})", r.start, r.end));
        }
        Ok(Shard {
            start: r.start.clone(),
            end,
            right: r.right,
            epoch: r.epoch,
        })
    }

    /// The encoded size of the range, for bounds checks.
    pub fn encoded_len(&self) -> usize {
        self.to_proto().encoded_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::etcdserverpb::{Compare, PutRequest, RequestOp};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_split_cuts_the_range_in_two_adjacent_halves() {
        let s = Shard::new(b("c"), Some(b("p")));
        assert!(!s.may_split_at(b"c"));
        assert!(!s.may_split_at(b"p"));
        assert!(!s.may_split_at(b"a"));
        assert!(s.may_split_at(b"g"));
        let (l, r) = s.split(b("g"), 9);
        assert_eq!(
            (l.start.clone(), l.end.clone(), l.right),
            (b("c"), Some(b("g")), 9)
        );
        assert_eq!(
            (r.start.clone(), r.end.clone(), r.right),
            (b("g"), Some(b("p")), 0)
        );
        assert_eq!((l.epoch, r.epoch), (1, 1));
        for k in ["c", "f\u{ff}", "g", "o"] {
            assert_ne!(l.holds_key(k.as_bytes()), r.holds_key(k.as_bytes()));
            assert!(s.holds_key(k.as_bytes()));
        }
        assert_eq!(Shard::from_proto(&l.to_proto()), Ok(l));
        let open = Shard::new(b("x"), None);
        assert_eq!(Shard::from_proto(&open.to_proto()), Ok(open));
    }

    #[test]
    fn ops_are_held_only_when_every_key_is() {
        let s = Shard::new(b("c"), Some(b("p")));
        let put = |k: &str| {
            Op::Put(PutRequest {
                key: b(k),
                ..Default::default()
            })
        };
        assert!(s.holds_op(&put("d")));
        assert!(!s.holds_op(&put("q")));
        let txn = Op::Txn(TxnRequest {
            compare: vec![Compare {
                key: b("d"),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b("z"),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        });
        assert!(!s.holds_op(&txn));
        // A prefix read ending past the shard is not held; one inside is.
        assert!(!s.holds(&KeyRange::from_etcd(&b("o"), &b("q"))));
        assert!(s.holds(&KeyRange::from_etcd(&b("o"), &b("p"))));
        assert!(!s.holds(&KeyRange::from_etcd(&b("o"), &b("\0"))));
        assert!(Shard::new(b("o"), None).holds(&KeyRange::from_etcd(&b("o"), &b("\0"))));
    }

    #[test]
    fn malformed_ranges_from_disk_are_refused() {
        let bad = ShardRange {
            start: b("p"),
            end: b("c"),
            ..Default::default()
        };
        assert!(Shard::from_proto(&bad).is_err());
        let bad = ShardRange {
            end: b("c"),
            open: true,
            ..Default::default()
        };
        assert!(Shard::from_proto(&bad).is_err());
    }
}
