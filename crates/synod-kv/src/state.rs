//! The state machine on disk: the layout of its rows and the journal of
//! changes a round hands to the runtime.
//!
//! The store keeps an index in memory (every key's versions, without the
//! large values), the leases, the sessions and the meta record; every
//! change to any of them is also journaled as a row write. The runtime
//! writes a round's journal in the same storage batch as the Paxos log and
//! the applied slot, so after a crash the rows and the applied slot agree
//! and no slot is applied twice or skipped. A restart rebuilds the store
//! from the rows ([`KvStore::load`](crate::KvStore::load)); it replays only
//! the log above the applied slot.
//!
//! Rows of one group, by first byte (the storage layer prefixes the group):
//!
//! | key                               | value                                   |
//! |-----------------------------------|-----------------------------------------|
//! | `m`                               | meta: revision, compaction, alarms, members (a `synodpb.Snapshot` without keys or sessions) |
//! | `k` mod_revision(8) key           | one version: create(8) version(8) lease(8) kind(1) [inline value or length(4)] |
//! | `d` mod_revision(8) key           | the value of a version longer than [`INLINE_VALUE_MAX`] |
//! | `l` id(8)                         | a lease's granted TTL (8)               |
//! | `s` client(8)                     | a session: below(8) revision(8), then its window of outcomes |
//! | `z` path                          | a znode (`synodpb.ZNode`): ZooKeeper's tree, design 0012 |
//! | `y` id(8)                         | a ZooKeeper session's timeout and password (`synodpb.ZkSession`) |
//!
//! Invariants:
//! - **S1** a version row exists for exactly the versions in the index;
//! - **S2** a `d` row exists for exactly the live versions longer than
//!   [`INLINE_VALUE_MAX`] and holds the value; the index keeps such a
//!   value in memory only until the batch that wrote its row is
//!   committed;
//! - **S3** the rows and the group's applied slot are written in one
//!   transaction (the runtime's duty), so they describe the same slot.

use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// Values up to this many bytes live in memory as well as in their
/// version row; longer ones only in their own `d` row, read from disk when
/// a read needs them. Version rows stay small, so a restart reads the
/// index without reading the data. Small values are what coordination data (locks,
/// elections, configuration) mostly is, and reading them costs nothing.
pub const INLINE_VALUE_MAX: usize = 128;

/// First byte of the meta row.
pub const TAG_META: u8 = b'm';
/// First byte of version rows.
pub const TAG_VERSION: u8 = b'k';
/// First byte of value rows.
pub const TAG_VALUE: u8 = b'd';
/// First byte of lease rows.
pub const TAG_LEASE: u8 = b'l';
/// First byte of session rows.
pub const TAG_SESSION: u8 = b's';
/// First byte of znode rows.
pub const TAG_ZNODE: u8 = b'z';
/// The auth store's one row (users, roles, the enabled flag).
pub const TAG_AUTH: u8 = b'a';
/// First byte of ZooKeeper session rows.
pub const TAG_ZK_SESSION: u8 = b'y';
/// A revoked lease whose keys the shards are still deleting (design
/// 0017): `r` + id (8 bytes, big-endian) → its covered ranges (`Revoking`).
pub const TAG_REVOKING: u8 = b'r';

/// Read access to the rows this store wrote, as committed on disk. The
/// runtime implements it over its storage; reads see every committed
/// batch. A read that fails is a broken disk: implementations stop the
/// process (fail-stop) rather than answer from a store with holes.
pub trait StateSource: Send + Sync {
    /// The committed value of row `key`, if it exists. It may be read
    /// from a view of the disk as of the last [`refresh`](StateSource::refresh).
    fn get(&self, key: &[u8]) -> Option<Bytes>;
    /// A batch of rows was committed since: later reads must see it.
    fn refresh(&self) {}
    /// Calls `each` with every committed row whose key starts with
    /// `prefix`, in key order.
    fn scan(&self, prefix: &[u8], each: &mut dyn FnMut(&[u8], &[u8]));
    /// A view of the rows as committed now that later batches do not
    /// change (a read on another thread must not see a row deleted under
    /// it); `None` when this source is such a view already, or cannot
    /// make one (rows in memory, for tests: read them at once).
    fn pin(&self) -> Option<Arc<dyn StateSource>> {
        None
    }
}

/// One row write.
#[derive(Clone, PartialEq, Eq)]
pub enum StateOp {
    /// Writes (or replaces) row `key`.
    Put {
        /// Row key (without the group).
        key: Vec<u8>,
        /// Row value.
        value: Bytes,
    },
    /// Deletes row `key` if it exists.
    Delete {
        /// Row key (without the group).
        key: Vec<u8>,
    },
    /// Deletes every row in `[from, to)` (nothing when `from >= to`).
    DeleteRange {
        /// First row key deleted.
        from: Vec<u8>,
        /// First row key kept.
        to: Vec<u8>,
    },
}

impl fmt::Debug for StateOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateOp::Put { key, value } => write!(f, "Put({key:?}, {} bytes)", value.len()),
            StateOp::Delete { key } => write!(f, "Delete({key:?})"),
            StateOp::DeleteRange { from, to } => write!(f, "DeleteRange({from:?}..{to:?})"),
        }
    }
}

/// The row writes of one round, to apply in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateChanges {
    /// Delete every row of the group first: the store was replaced whole
    /// (a snapshot from the leader, or a file from before rows existed).
    pub clear: bool,
    /// Row writes, in order; a later one wins.
    pub ops: Vec<StateOp>,
}

impl StateChanges {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.clear && self.ops.is_empty()
    }
}

/// Where the store records what it changed, while a source is attached.
#[derive(Clone, Debug, Default)]
pub(crate) struct Journal {
    /// Journaling is on (a store with no disk journals nothing).
    pub(crate) on: bool,
    pub(crate) changes: StateChanges,
    /// Versions with long values journaled this round: their memory copy
    /// is dropped once the row is written.
    pub(crate) large: Vec<(Bytes, i64)>,
    /// Bytes of row keys and values in `changes`: what a group waiting
    /// to write its rows holds in memory (see `Group`'s state flush).
    pub(crate) bytes: u64,
}

/// A point a failed write transaction rolls the journal back to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    ops: usize,
    large: usize,
    bytes: u64,
}

impl Journal {
    pub(crate) fn put(&mut self, key: Vec<u8>, value: Bytes) {
        if self.on {
            self.bytes += (key.len() + value.len()) as u64;
            self.changes.ops.push(StateOp::Put { key, value });
        }
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        if self.on {
            self.bytes += key.len() as u64;
            self.changes.ops.push(StateOp::Delete { key });
        }
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark {
            ops: self.changes.ops.len(),
            large: self.large.len(),
            bytes: self.bytes,
        }
    }

    pub(crate) fn rollback(&mut self, mark: Mark) {
        self.changes.ops.truncate(mark.ops);
        self.large.truncate(mark.large);
        self.bytes = mark.bytes;
    }

    /// Hands out the changes journaled so far.
    pub(crate) fn take(&mut self) -> StateChanges {
        self.bytes = 0;
        std::mem::take(&mut self.changes)
    }
}

/// Row key of a version or value row: tag, revision, key. Revision first:
/// new versions append at the end of the table (few pages dirtied per
/// batch, as in etcd's revision-keyed backend), while the key order lives
/// in the index in memory.
pub(crate) fn version_row(tag: u8, key: &[u8], rev: i64) -> Vec<u8> {
    let mut row = Vec::with_capacity(1 + 8 + key.len());
    row.push(tag);
    row.extend_from_slice(&rev.to_be_bytes());
    row.extend_from_slice(key);
    row
}

/// Row key with a tag and one or two numbers.
pub(crate) fn numbered_row(tag: u8, a: u64, b: Option<u64>) -> Vec<u8> {
    let mut row = Vec::with_capacity(17);
    row.push(tag);
    row.extend_from_slice(&a.to_be_bytes());
    if let Some(b) = b {
        row.extend_from_slice(&b.to_be_bytes());
    }
    row
}

/// Reads big-endian `u64` number `i` of a row suffix.
pub(crate) fn be_u64(bytes: &[u8], i: usize) -> Option<u64> {
    let chunk = bytes.get(i * 8..i * 8 + 8)?;
    Some(u64::from_be_bytes(chunk.try_into().ok()?))
}

/// Rows kept in memory: the reference implementation of a disk for
/// tests and models. Applying the same changes to it and to the storage
/// layer must leave the same rows.
#[derive(Debug, Default)]
pub struct MemoryRows {
    rows: std::sync::RwLock<std::collections::BTreeMap<Vec<u8>, Bytes>>,
}

impl MemoryRows {
    /// Applies one round's changes, as the runtime writes them.
    pub fn apply(&self, changes: &StateChanges) {
        let mut rows = self.rows.write().expect("not poisoned");
        if changes.clear {
            rows.clear();
        }
        for op in &changes.ops {
            match op {
                StateOp::Put { key, value } => {
                    rows.insert(key.clone(), value.clone());
                }
                StateOp::Delete { key } => {
                    rows.remove(key);
                }
                StateOp::DeleteRange { from, to } if from < to => {
                    let doomed: Vec<Vec<u8>> = rows
                        .range(from.clone()..to.clone())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        rows.remove(&k);
                    }
                }
                StateOp::DeleteRange { .. } => {}
            }
        }
    }

    /// Every row, in key order.
    pub fn rows(&self) -> Vec<(Vec<u8>, Bytes)> {
        let rows = self.rows.read().expect("not poisoned");
        rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl StateSource for MemoryRows {
    fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.rows.read().expect("not poisoned").get(key).cloned()
    }

    fn scan(&self, prefix: &[u8], each: &mut dyn FnMut(&[u8], &[u8])) {
        let rows = self.rows.read().expect("not poisoned");
        for (k, v) in rows.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            each(k, v);
        }
    }
}
