//! etcd's key-range convention, in one place:
//!
//! | `range_end`     | keys                         |
//! | --------------- | ---------------------------- |
//! | empty           | exactly `key`                |
//! | `"\0"`          | every key `>= key`           |
//! | anything else   | `[key, range_end)`           |
//!
//! (`key = "\0", range_end = "\0"` is therefore every key, and a prefix is
//! `range_end = key + 1`.)

use bytes::Bytes;
use std::ops::Bound;

/// A set of keys named the etcd way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// One key.
    Single(Bytes),
    /// `[start, end)`, `end = None` meaning unbounded.
    Span {
        /// First key included.
        start: Bytes,
        /// First key excluded; `None` for no upper bound.
        end: Option<Bytes>,
    },
}

impl KeyRange {
    /// Interprets an etcd `(key, range_end)` pair.
    pub fn from_etcd(key: &Bytes, range_end: &Bytes) -> KeyRange {
        if range_end.is_empty() {
            KeyRange::Single(key.clone())
        } else if range_end.as_ref() == [0] {
            KeyRange::Span {
                start: key.clone(),
                end: None,
            }
        } else {
            KeyRange::Span {
                start: key.clone(),
                end: Some(range_end.clone()),
            }
        }
    }

    /// Every key.
    pub fn all() -> KeyRange {
        KeyRange::Span {
            start: Bytes::new(),
            end: None,
        }
    }

    /// Bounds for a `BTreeMap<Bytes, _>` range scan.
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        match self {
            KeyRange::Single(k) => (Bound::Included(k.as_ref()), Bound::Included(k.as_ref())),
            KeyRange::Span { start, end } => (
                Bound::Included(start.as_ref()),
                match end {
                    Some(e) => Bound::Excluded(e.as_ref()),
                    None => Bound::Unbounded,
                },
            ),
        }
    }

    /// True when the range cannot contain any key (`start >= end`).
    pub fn is_empty(&self) -> bool {
        match self {
            KeyRange::Single(_) => false,
            KeyRange::Span { start, end } => end.as_ref().is_some_and(|e| start >= e),
        }
    }

    /// True when `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k.as_ref() == key,
            KeyRange::Span { start, end } => {
                key >= start.as_ref() && end.as_ref().is_none_or(|e| key < e.as_ref())
            }
        }
    }

    /// True when every key of `other` lies in this range (an empty range
    /// lies in any).
    pub fn covers(&self, other: &KeyRange) -> bool {
        match other {
            KeyRange::Single(k) => self.contains(k),
            _ if other.is_empty() => true,
            KeyRange::Span { start, end } => match self {
                KeyRange::Single(k) => end.as_ref().is_some_and(|e| {
                    start == k && e.len() == k.len() + 1 && e.starts_with(k) && e[k.len()] == 0
                }),
                KeyRange::Span {
                    start: s,
                    end: mine,
                } => {
                    start >= s
                        && match (end, mine) {
                            (_, None) => true,
                            (None, Some(_)) => false,
                            (Some(e), Some(m)) => e <= m,
                        }
                }
            },
        }
    }

    /// True when the two ranges share a key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        match (self, other) {
            (KeyRange::Single(a), _) => other.contains(a),
            (_, KeyRange::Single(b)) => self.contains(b),
            (KeyRange::Span { start: s1, end: e1 }, KeyRange::Span { start: s2, end: e2 }) => {
                let a_before_b_ends = e2.as_ref().is_none_or(|e| s1 < e);
                let b_before_a_ends = e1.as_ref().is_none_or(|e| s2 < e);
                a_before_b_ends && b_before_a_ends && !self.is_empty() && !other.is_empty()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn etcd_conventions() {
        let all = KeyRange::from_etcd(&Bytes::from_static(b"\0"), &Bytes::from_static(b"\0"));
        assert!(all.contains(b"zzz") && all.contains(b"\0") && all.contains(b"\x01"));
        let prefix = KeyRange::from_etcd(&b("foo"), &b("fop"));
        assert!(prefix.contains(b"foo") && prefix.contains(b"foo/bar") && !prefix.contains(b"fop"));
        let single = KeyRange::from_etcd(&b("foo"), &Bytes::new());
        assert!(single.contains(b"foo") && !single.contains(b"foo1"));
        let from = KeyRange::from_etcd(&b("m"), &Bytes::from_static(b"\0"));
        assert!(from.contains(b"m") && from.contains(b"z") && !from.contains(b"a"));
    }

    #[test]
    fn overlap() {
        let p = KeyRange::from_etcd(&b("a"), &b("c"));
        assert!(p.overlaps(&KeyRange::Single(b("b"))));
        assert!(!p.overlaps(&KeyRange::Single(b("c"))));
        assert!(p.overlaps(&KeyRange::from_etcd(&b("b"), &b("z"))));
        assert!(!p.overlaps(&KeyRange::from_etcd(&b("c"), &b("z"))));
        assert!(!KeyRange::from_etcd(&b("c"), &b("a")).overlaps(&p));
    }
}
