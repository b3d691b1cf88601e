//! The on-disk format: one redb file, three tables, checksummed values.
//!
//! This module is public so that tools (an `admin inspect` command, format
//! tests) can name the tables and keys. Writing through these definitions
//! bypasses every check of [`Batch`](crate::Batch); only tests that corrupt a
//! file on purpose do that.
//!
//! # File
//!
//! `<data_dir>/synod.redb`, one per node. Every Paxos group of the node lives
//! in it, so that one redb write transaction (one fsync) commits a whole batch
//! of writes across groups. Later layers (the MVCC state machine) add their
//! own tables to the same file and write them in the same transaction as the
//! applied slot.
//!
//! # Tables
//!
//! ```text
//! table           key                                  value (see codec.rs)
//! --------------  -----------------------------------  ----------------------------
//! synod_meta      "format"  (&str)                     Format   { version: u32 }
//!                 "identity"                           Identity { cluster: u64, node: u64 }
//! paxos_acceptor  group id, u64 big-endian ([u8; 8])   Acceptor { promised, snapshot, commit, applied }
//! paxos_log       group id ++ slot, both u64           Record   { slot, ballot, chosen, value }
//!                 big-endian ([u8; 16])
//! ```
//!
//! Keys are big-endian so that redb's byte-wise key order is numeric order:
//! all of a group's log records form one contiguous range, in slot order, so
//! loading a group is one range scan and compacting it is one range delete.
//!
//! Every value is encoded by the hand-written codec in `codec.rs`: a codec
//! version byte, a kind byte, little-endian fixed-width fields,
//! length-prefixed byte strings, and a trailing CRC32 over everything before
//! it. redb checksums its pages too, but only against torn writes of its own;
//! our CRC also catches a value written to the wrong key or table, a bug in an
//! encoder, or a byte flipped after redb verified the page.
//!
//! # Invariants
//!
//! - **F1** `synod_meta["format"]` exists in every initialised file and equals
//!   [`FORMAT_VERSION`]; its layout (`[1, b'F', u32 LE, crc32 LE]`) never
//!   changes, so every future build can tell which format a file has.
//! - **F2** `synod_meta["identity"]` exists whenever `"format"` does, and never
//!   changes after it is written.
//! - **F3** every group with a log record has a `paxos_acceptor` row, so
//!   [`Storage::groups`](crate::Storage::groups) lists every group on disk.
//! - **F4** every log key `(g, s)` with `s <= paxos_acceptor[g].snapshot`
//!   is garbage, never read: records at or below the snapshot are never
//!   written, and compaction raises the snapshot at once but deletes the
//!   records it covers a bounded number per transaction (the rest are
//!   listed in `paxos_log_garbage` and collected in later rounds: deleting
//!   8 MiB of records in one round stalled every group's writes, issue
//!   14).
//! - **F5** a log record's value repeats its slot, and it equals the slot in
//!   the key (a value copied to the wrong key is detected).
//! - **F6** per group, `promised`, `snapshot`, `commit` and `applied` never
//!   decrease.
//! - **F7** every write of one `Batch` is in one redb write transaction: after
//!   a crash the file holds all of a batch or none of it.
//!
//! - **F8** a group's state-machine snapshot (`kv_snapshot`, see
//!   [`snapshot`](mod@crate::snapshot)) covers the log through its slot:
//!   [`Batch::put_snapshot`](crate::Batch::put_snapshot) raises
//!   `paxos_acceptor[g].snapshot` and `applied` to it and deletes the records
//!   it covers in its own transaction. A file from before that rule may hold
//!   a snapshot above the compaction point; load leaves the covered records
//!   out, since they may be acceptances under deposed ballots that restore
//!   would otherwise take as chosen.
//!
//! - **F9** a group's stored membership record never moves to an earlier
//!   slot: the configuration in effect at the compaction point is what a
//!   restart rebuilds the membership history from.
//!
//! F5 is checked again on every load (records at or below the snapshot
//! are not read); a violation is reported as
//! [`StorageError::Corrupt`](crate::StorageError::Corrupt), like a checksum
//! mismatch.

use crate::types::GroupId;
use redb::TableDefinition;
use synod_paxos::{Ballot, Slot};

/// The version of the layout described above. Bump it (and teach `open` to
/// upgrade) whenever a table, key or value layout changes.
pub const FORMAT_VERSION: u32 = 1;

/// The database file's name inside the data dir.
pub const FILE_NAME: &str = "synod.redb";

/// Name of the table holding the format version and the node identity.
pub const META_TABLE_NAME: &str = "synod_meta";
/// Name of the table holding each group's acceptor state.
pub const ACCEPTOR_TABLE_NAME: &str = "paxos_acceptor";
/// Name of the table holding each group's log records.
pub const LOG_TABLE_NAME: &str = "paxos_log";
/// Name of the table holding each group's stored membership.
pub const MEMBERSHIP_TABLE_NAME: &str = "paxos_membership";

/// The meta table: two well-known keys, [`META_FORMAT_KEY`] and
/// [`META_IDENTITY_KEY`].
pub const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(META_TABLE_NAME);
/// Per group: promised ballot, snapshot slot, commit hint, applied slot.
pub const ACCEPTOR_TABLE: TableDefinition<&[u8; 8], &[u8]> =
    TableDefinition::new(ACCEPTOR_TABLE_NAME);
/// Per group and slot: the accepted or chosen value.
pub const LOG_TABLE: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new(LOG_TABLE_NAME);
/// Name of the log garbage table.
pub const LOG_GARBAGE_TABLE_NAME: &str = "paxos_log_garbage";
/// Per group (keyed like `paxos_acceptor`): the slot through which its
/// compacted records still wait to be deleted (F4).
pub const LOG_GARBAGE_TABLE: TableDefinition<&[u8; 8], &[u8]> =
    TableDefinition::new(LOG_GARBAGE_TABLE_NAME);
/// Per group (keyed like `paxos_acceptor`): the configuration in effect after
/// a slot, as the last `Persist::membership` gave it. Absent for a group
/// that never stored one (it starts from its configured members). Created
/// on open, so data dirs written before it existed read as "none stored".
pub const MEMBERSHIP_TABLE: TableDefinition<&[u8; 8], &[u8]> =
    TableDefinition::new(MEMBERSHIP_TABLE_NAME);

/// Meta key of the format version record.
pub const META_FORMAT_KEY: &str = "format";
/// Meta key of the identity record.
pub const META_IDENTITY_KEY: &str = "identity";

/// The `paxos_acceptor` key of `group`.
pub fn acceptor_key(group: GroupId) -> [u8; 8] {
    group.0.to_be_bytes()
}

/// The group an `paxos_acceptor` key names.
pub fn acceptor_key_group(key: &[u8; 8]) -> GroupId {
    GroupId(u64::from_be_bytes(*key))
}

/// The `paxos_log` key of `slot` in `group`.
pub fn log_key(group: GroupId, slot: Slot) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&group.0.to_be_bytes());
    key[8..].copy_from_slice(&slot.0.to_be_bytes());
    key
}

/// The group and slot a `paxos_log` key names.
pub fn log_key_parts(key: &[u8; 16]) -> (GroupId, Slot) {
    let mut group = [0u8; 8];
    let mut slot = [0u8; 8];
    group.copy_from_slice(&key[..8]);
    slot.copy_from_slice(&key[8..]);
    (
        GroupId(u64::from_be_bytes(group)),
        Slot(u64::from_be_bytes(slot)),
    )
}

/// One group's row in `paxos_acceptor`: everything about the group that is
/// not a log record.
///
/// Invariant (F6): every field only grows; `Batch` asserts it before writing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AcceptorState {
    /// Highest ballot promised.
    pub promised: Ballot,
    /// Log records through this slot were compacted away.
    pub snapshot: Slot,
    /// Highest commit hint written (a hint: the replica re-derives its commit
    /// point from the records and clamps to what they prove).
    pub commit: Slot,
    /// Highest slot the state machine recorded as applied.
    pub applied: Slot,
}
