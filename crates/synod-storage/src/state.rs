//! The state machine's rows: one table for every group, keyed by group id
//! and the row key the state machine chose (`synod_kv::state` describes
//! the rows). Written by [`Batch::write_state`] in the round's batch,
//! beside the Paxos log and the applied slot; read back through
//! [`StateRows`], which is the state machine's [`StateSource`].

use crate::batch::Batch;
use crate::error::StorageError;
use crate::types::GroupId;
use bytes::Bytes;
use redb::{Database, ReadOnlyTable, TableDefinition};
use std::path::Path;
use std::sync::{Arc, Mutex};
use synod_kv::{KvStore, StateChanges, StateOp, StateSource};
use synod_paxos::{Configuration, MembershipRecord, Persist, Slot};

/// Name of the state table.
pub const STATE_TABLE_NAME: &str = "group_state";
/// Per group and row key: the state machine's rows.
pub const STATE_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new(STATE_TABLE_NAME);

/// The table key of row `row` of `group`: group id (8 bytes, big-endian),
/// then the row key.
fn table_key(group: GroupId, row: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + row.len());
    key.extend_from_slice(&group.0.to_be_bytes());
    key.extend_from_slice(row);
    key
}

/// The first table key after every row of `group`.
fn group_end(group: GroupId) -> Vec<u8> {
    match group.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 9],
    }
}

impl Batch {
    /// Writes one round's state-machine rows of `group`, in order. With
    /// `changes.clear`, every row of the group goes first, and so does a
    /// snapshot blob an older version stored (the rows replace it).
    ///
    /// Call [`set_applied`](Batch::set_applied) with the slot the rows
    /// hold in the same batch (S3).
    pub fn write_state(
        &mut self,
        group: GroupId,
        changes: &StateChanges,
    ) -> Result<(), StorageError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.guard(|batch| {
            let file = batch.file_path();
            let err = |e: redb::Error| StorageError::redb(&file, e);
            let txn = batch.transaction();
            let mut table = txn.open_table(STATE_TABLE).map_err(|e| err(e.into()))?;
            if changes.clear {
                let from = table_key(group, &[]);
                let to = group_end(group);
                table
                    .retain_in(from.as_slice()..to.as_slice(), |_, _| false)
                    .map_err(|e| err(e.into()))?;
                let mut blobs = txn
                    .open_table(crate::snapshot::SNAPSHOT_TABLE)
                    .map_err(|e| err(e.into()))?;
                blobs
                    .remove(&crate::snapshot::key(group))
                    .map_err(|e| err(e.into()))?;
            }
            let mut key = Vec::new();
            for op in &changes.ops {
                match op {
                    StateOp::Put { key: row, value } => {
                        key.clear();
                        key.extend_from_slice(&group.0.to_be_bytes());
                        key.extend_from_slice(row);
                        table
                            .insert(key.as_slice(), value.as_ref())
                            .map_err(|e| err(e.into()))?;
                    }
                    StateOp::Delete { key: row } => {
                        key.clear();
                        key.extend_from_slice(&group.0.to_be_bytes());
                        key.extend_from_slice(row);
                        table.remove(key.as_slice()).map_err(|e| err(e.into()))?;
                    }
                    StateOp::DeleteRange { from, to } => {
                        let (from, to) = (table_key(group, from), table_key(group, to));
                        if from < to {
                            table
                                .retain_in(from.as_slice()..to.as_slice(), |_, _| false)
                                .map_err(|e| err(e.into()))?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Compacts `group`'s log through `slot` and stores `membership` as the
    /// configuration in effect there (F8, F9). The state rows written in
    /// this batch (or before), and the applied slot written with them,
    /// must cover every slot through `slot`; [`Storage::load`] reports an
    /// applied slot at least `slot` either way.
    ///
    /// [`Storage::load`]: crate::Storage::load
    pub fn compact_to(
        &mut self,
        group: GroupId,
        slot: Slot,
        membership: Option<&Configuration>,
    ) -> Result<(), StorageError> {
        let compact = Persist {
            compact_through: Some(slot),
            membership: membership.map(|c| MembershipRecord {
                slot,
                configuration: c.clone(),
            }),
            ..Persist::default()
        };
        self.persist(group, &compact)
    }
}

impl crate::Storage {
    /// `group`'s state machine as committed, on disk from now on: loaded
    /// from its rows; or, in a data dir an older version wrote, from its
    /// snapshot blob (the first batch then writes it as rows); or empty for
    /// a group never written. It holds the log through the group's durable
    /// applied slot ([`load`](crate::Storage::load)`.applied`).
    pub fn load_store(&self, group: GroupId) -> Result<KvStore, StorageError> {
        let rows = self.state(group);
        let corrupt = |reason: String| StorageError::Corrupt {
            file: self.file().to_path_buf(),
            table: STATE_TABLE_NAME,
            key: group.to_string(),
            reason,
        };
        if let Some(kv) = KvStore::load(rows.clone()).map_err(corrupt)? {
            return Ok(kv);
        }
        let mut kv = match self.load_snapshot(group)? {
            Some((slot, data)) => KvStore::decode_snapshot(data)
                .map_err(|e| corrupt(format!("snapshot blob at slot {slot}: {e}")))?,
            None => KvStore::default(),
        };
        kv.attach(rows, true);
        Ok(kv)
    }
}

/// One group's committed rows, as the state machine reads them: long
/// values and, at restart, the whole index.
///
/// Reads go through one redb read transaction, kept until the state
/// machine says a newer batch is committed ([`StateSource::refresh`]): a
/// range read of many long values opens one transaction, not one each.
pub struct StateRows {
    db: Arc<Database>,
    file: Arc<Path>,
    group: GroupId,
    table: Mutex<Option<ReadOnlyTable<&'static [u8], &'static [u8]>>>,
}

impl std::fmt::Debug for StateRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateRows")
            .field("file", &self.file)
            .field("group", &self.group)
            .finish()
    }
}

impl StateRows {
    pub(crate) fn new(db: Arc<Database>, file: Arc<Path>, group: GroupId) -> StateRows {
        StateRows {
            db,
            file,
            group,
            table: Mutex::new(None),
        }
    }

    /// The table as of the newest committed batch the cache knows of.
    fn open(&self) -> ReadOnlyTable<&'static [u8], &'static [u8]> {
        let txn = self.db.begin_read().unwrap_or_else(|e| self.fail(e));
        txn.open_table(STATE_TABLE).unwrap_or_else(|e| self.fail(e))
    }

    /// A read of the local disk failed: the node stops (fail-stop) rather
    /// than answer from a state with holes.
    fn fail(&self, e: impl Into<redb::Error>) -> ! {
        panic!(
            "reading the state of {} from {} failed, stopping the node: {}",
            self.group,
            self.file.display(),
            StorageError::redb(&self.file, e)
        )
    }
}

impl StateSource for StateRows {
    fn get(&self, row: &[u8]) -> Option<Bytes> {
        let mut cached = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let table = cached.get_or_insert_with(|| self.open());
        let key = table_key(self.group, row);
        let value = table.get(key.as_slice()).unwrap_or_else(|e| self.fail(e))?;
        Some(Bytes::copy_from_slice(value.value()))
    }

    fn refresh(&self) {
        *self.table.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn scan(&self, prefix: &[u8], each: &mut dyn FnMut(&[u8], &[u8])) {
        let table = self.open();
        let from = table_key(self.group, prefix);
        let range = table
            .range(from.as_slice()..)
            .unwrap_or_else(|e| self.fail(e));
        for entry in range {
            let (k, v) = entry.unwrap_or_else(|e| self.fail(e));
            let k = k.value();
            if !k.starts_with(&from) {
                break;
            }
            each(&k[8..], v.value());
        }
    }
}
