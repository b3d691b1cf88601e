//! Multi-version key storage: every key keeps its versions since the last
//! compaction, so reads can be served at any retained revision.
//!
//! Invariants (checked by `check_invariants`):
//! - per key, versions are in strictly increasing `mod_revision`;
//! - every `mod_revision` is in `(compact_revision - ∞, revision]` and the
//!   versions below the compaction point are gone except the newest one at or
//!   below it (which is live, never a tombstone);
//! - a live version has `version >= 1` and `create_revision <= mod_revision`;
//!   a tombstone has `version == 0` and an empty value.

use crate::range::KeyRange;
use bytes::Bytes;
use std::collections::BTreeMap;
use synod_proto::mvccpb::KeyValue;

/// etcd's revision counter starts at 1 on an empty store.
pub const INITIAL_REVISION: i64 = 1;

/// The versions of every key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mvcc {
    keys: BTreeMap<Bytes, Vec<KeyValue>>,
    revision: i64,
    compact_revision: i64,
}

impl Default for Mvcc {
    fn default() -> Self {
        Mvcc {
            keys: BTreeMap::new(),
            revision: INITIAL_REVISION,
            compact_revision: 0,
        }
    }
}

fn is_tombstone(kv: &KeyValue) -> bool {
    kv.version == 0
}

/// The newest version at or below `rev`, if it is live.
fn live_at(versions: &[KeyValue], rev: i64) -> Option<&KeyValue> {
    let n = versions.partition_point(|v| v.mod_revision <= rev);
    let v = versions.get(n.checked_sub(1)?)?;
    (!is_tombstone(v)).then_some(v)
}

impl Mvcc {
    /// Rebuilds a store from its parts (snapshot restore), refusing parts
    /// that break an invariant: they may come from a peer or a file.
    pub fn from_parts(
        keys: BTreeMap<Bytes, Vec<KeyValue>>,
        revision: i64,
        compact_revision: i64,
    ) -> Result<Mvcc, String> {
        let m = Mvcc {
            keys,
            revision,
            compact_revision,
        };
        m.validate()?;
        Ok(m)
    }

    /// Takes the store apart (keys, revision, compaction point).
    pub fn into_parts(self) -> (BTreeMap<Bytes, Vec<KeyValue>>, i64, i64) {
        (self.keys, self.revision, self.compact_revision)
    }

    /// Every key's retained versions, for snapshots.
    pub fn keys(&self) -> &BTreeMap<Bytes, Vec<KeyValue>> {
        &self.keys
    }

    /// The revision of the last write.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Reads below this revision fail.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Sets the store's revision once a write transaction is done.
    pub fn set_revision(&mut self, revision: i64) {
        assert!(
            revision >= self.revision,
            "revision went back: {} -> {revision}",
            self.revision
        );
        self.revision = revision;
    }

    /// The live version of `key` at `rev`.
    pub fn get(&self, key: &[u8], rev: i64) -> Option<&KeyValue> {
        live_at(self.keys.get(key)?, rev)
    }

    /// Live versions at `rev` of every key in `range`, in key order.
    pub fn scan<'a>(
        &'a self,
        range: &KeyRange,
        rev: i64,
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        let iter = if range.is_empty() {
            None
        } else {
            Some(self.keys.range::<[u8], _>(range.bounds()))
        };
        iter.into_iter()
            .flatten()
            .filter_map(move |(_, versions)| live_at(versions, rev))
    }

    /// Writes a new version of `key` at revision `rev`; returns the previous
    /// live version. Writing one key twice in one revision keeps the last.
    pub fn put(
        &mut self,
        key: &Bytes,
        value: Bytes,
        lease: i64,
        rev: i64,
    ) -> (KeyValue, Option<KeyValue>) {
        assert!(
            rev > self.revision,
            "write at {rev} not above revision {}",
            self.revision
        );
        let versions = self.keys.entry(key.clone()).or_default();
        let prev = live_at(versions, rev).cloned();
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (rev, 1),
        };
        let kv = KeyValue {
            key: key.clone(),
            create_revision,
            mod_revision: rev,
            version,
            value,
            lease,
        };
        if versions.last().is_some_and(|v| v.mod_revision == rev) {
            versions.pop();
        }
        versions.push(kv.clone());
        (kv, prev)
    }

    /// Deletes `key` at revision `rev` if it is live; returns its last version.
    pub fn delete(&mut self, key: &Bytes, rev: i64) -> Option<KeyValue> {
        assert!(
            rev > self.revision,
            "write at {rev} not above revision {}",
            self.revision
        );
        let versions = self.keys.get_mut(key)?;
        let prev = live_at(versions, rev).cloned()?;
        if versions.last().is_some_and(|v| v.mod_revision == rev) {
            versions.pop();
        }
        versions.push(KeyValue {
            key: key.clone(),
            mod_revision: rev,
            ..KeyValue::default()
        });
        Some(prev)
    }

    /// Removes what a failed write transaction wrote to `key` at `rev`
    /// (every version at `rev` is the transaction's own).
    pub fn undo(&mut self, key: &Bytes, rev: i64) {
        assert!(rev > self.revision, "undo of committed revision {rev}");
        if let Some(versions) = self.keys.get_mut(key) {
            versions.retain(|v| v.mod_revision != rev);
            if versions.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// Drops every version superseded at or before `rev`. Reads at `rev`
    /// and later still see the same data.
    pub fn compact(&mut self, rev: i64) {
        assert!(
            rev <= self.revision && rev > self.compact_revision,
            "compact to {rev} out of range"
        );
        self.keys.retain(|_, versions| {
            let n = versions.partition_point(|v| v.mod_revision <= rev);
            // Keep the newest version at or below `rev` unless it is a deletion.
            let keep_from = match n.checked_sub(1) {
                Some(i) if !is_tombstone(&versions[i]) => i,
                Some(i) => i + 1,
                None => 0,
            };
            versions.drain(..keep_from);
            !versions.is_empty()
        });
        self.compact_revision = rev;
    }

    /// Checks the invariants in the module doc; panics naming the broken one.
    pub fn check_invariants(&self) {
        if let Err(broken) = self.validate() {
            panic!("MVCC invariant broken: {broken}");
        }
    }

    /// The first invariant of the module doc that does not hold, if any:
    /// what a store built from untrusted parts (a peer's snapshot) is
    /// checked with before it is used.
    pub fn validate(&self) -> Result<(), String> {
        if self.compact_revision > self.revision {
            return Err(format!(
                "compact {} > revision {}",
                self.compact_revision, self.revision
            ));
        }
        for (key, versions) in &self.keys {
            validate_key(key, versions, self.revision, self.compact_revision)?;
        }
        Ok(())
    }
}

/// One key's versions against the invariants in the module doc.
fn validate_key(
    key: &Bytes,
    versions: &[KeyValue],
    revision: i64,
    compact_revision: i64,
) -> Result<(), String> {
    let Some(first) = versions.first() else {
        return Err(format!("key {key:?} has no versions"));
    };
    if versions
        .windows(2)
        .any(|w| w[0].mod_revision >= w[1].mod_revision)
    {
        return Err(format!("key {key:?} versions out of order"));
    }
    for v in versions {
        if v.key != *key {
            return Err(format!("key {key:?} holds a version of {:?}", v.key));
        }
        if v.mod_revision > revision || v.mod_revision < 1 {
            return Err(format!(
                "key {key:?} version at {} outside 1..={revision}",
                v.mod_revision
            ));
        }
        if is_tombstone(v) {
            if !v.value.is_empty() {
                return Err(format!("key {key:?}: tombstone with a value"));
            }
        } else if v.create_revision > v.mod_revision || v.create_revision < 1 || v.version < 1 {
            return Err(format!(
                "key {key:?}: live version created at {}, modified at {}, version {}",
                v.create_revision, v.mod_revision, v.version
            ));
        }
    }
    if first.mod_revision < compact_revision && is_tombstone(first) {
        return Err(format!("compacted tombstone kept for {key:?}"));
    }
    let below = versions
        .iter()
        .filter(|v| v.mod_revision <= compact_revision)
        .count();
    if below > 1 {
        return Err(format!(
            "key {key:?} keeps {below} versions below the compaction point"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn versions_and_reads_in_the_past() {
        let mut m = Mvcc::default();
        let (kv, prev) = m.put(&b("a"), b("1"), 0, 2);
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
        assert!(prev.is_none());
        m.set_revision(2);
        let (kv, prev) = m.put(&b("a"), b("2"), 0, 3);
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        assert_eq!(prev.unwrap().value, b("1"));
        m.set_revision(3);
        assert!(m.delete(&b("a"), 4).is_some());
        m.set_revision(4);
        let (kv, _) = m.put(&b("a"), b("3"), 0, 5);
        assert_eq!(
            (kv.create_revision, kv.version),
            (5, 1),
            "a new generation after delete"
        );
        m.set_revision(5);
        assert_eq!(m.get(b"a", 2).unwrap().value, b("1"));
        assert!(m.get(b"a", 4).is_none());
        assert!(m.get(b"a", 1).is_none());
        m.check_invariants();
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_see() {
        let mut m = Mvcc::default();
        for (rev, (k, v)) in [("a", "1"), ("a", "2"), ("b", "1")].iter().enumerate() {
            let rev = rev as i64 + 2;
            m.put(&b(k), b(v), 0, rev);
            m.set_revision(rev);
        }
        m.delete(&b("b"), 5);
        m.set_revision(5);
        m.compact(5);
        assert_eq!(m.get(b"a", 5).unwrap().value, b("2"));
        assert!(
            m.keys().get(&b("b")).is_none(),
            "deleted key dropped by compaction"
        );
        assert_eq!(m.keys()[&b("a")].len(), 1);
        m.check_invariants();
    }
}
