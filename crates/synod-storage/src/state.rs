//! The state machine's rows: one table for every group, keyed by a state
//! id and the row key the state machine chose (`synod_kv::state`
//! describes the rows). Written by [`Batch::write_state`] in the round's
//! batch, beside the Paxos log and the applied slot; read back through
//! [`StateRows`], which is the state machine's [`StateSource`].
//!
//! A group's rows live under its *live* state id: the group id itself
//! until a snapshot from a leader is installed, then the id of the stage
//! the snapshot was received into (`stream`). Switching ids is one row
//! write, so a snapshot of any size is installed atomically with its
//! compaction point; the old rows become garbage, deleted a bounded number
//! per round ([`Batch::collect_garbage`]).

use crate::batch::Batch;
use crate::error::StorageError;
use crate::types::GroupId;
use bytes::Bytes;
use redb::{Database, ReadOnlyTable, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::{Arc, Mutex};
use synod_kv::{KvStore, StateChanges, StateOp, StateSource};
use synod_paxos::{Configuration, MembershipRecord, Persist, Slot};

/// Name of the state table.
pub const STATE_TABLE_NAME: &str = "group_state";
/// Per group and row key: the state machine's rows.
pub const STATE_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new(STATE_TABLE_NAME);

/// Name of the table of state ids.
pub const STATE_IDS_TABLE_NAME: &str = "group_state_ids";
/// Per group: its live state id and the stage a snapshot is being
/// received into (see [`StateIds`]). A group without a row has its own id
/// as live id and no stage.
pub const STATE_IDS_TABLE: TableDefinition<&[u8; 8], &[u8]> =
    TableDefinition::new(STATE_IDS_TABLE_NAME);
/// Name of the garbage table.
pub const STATE_GARBAGE_TABLE_NAME: &str = "group_state_garbage";
/// State ids whose rows are no longer anyone's, deleted a few per round.
pub const STATE_GARBAGE_TABLE: TableDefinition<&[u8; 8], &[u8]> =
    TableDefinition::new(STATE_GARBAGE_TABLE_NAME);
/// The meta key of the next state id to hand to a stage.
pub(crate) const META_NEXT_STATE_ID: &str = "next_state_id";
/// Stage ids start here, above every group id, so a group's first live id
/// (its own) never meets a stage's.
pub const STAGE_ID_BASE: u64 = 1 << 63;

/// A snapshot being received into fresh rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The slot the snapshot covers.
    pub slot: Slot,
    /// Where its rows go.
    pub id: u64,
    /// The index of the next chunk expected.
    pub next: u64,
    /// Every chunk arrived: the stage waits to be installed or discarded.
    pub complete: bool,
}

/// A group's state ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateIds {
    /// The rows the group's state machine is.
    pub live: u64,
    /// A snapshot being received, if any.
    pub stage: Option<Stage>,
}

impl StateIds {
    fn initial(group: GroupId) -> StateIds {
        StateIds {
            live: group.0,
            stage: None,
        }
    }

    /// `live(8) flag(1) [slot(8) id(8) next(8) complete(1)]`, big-endian.
    fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(34);
        buf.extend_from_slice(&self.live.to_be_bytes());
        match self.stage {
            None => buf.push(0),
            Some(s) => {
                buf.push(1);
                buf.extend_from_slice(&s.slot.0.to_be_bytes());
                buf.extend_from_slice(&s.id.to_be_bytes());
                buf.extend_from_slice(&s.next.to_be_bytes());
                buf.push(u8::from(s.complete));
            }
        }
        buf
    }

    fn decode(value: &[u8]) -> Result<StateIds, String> {
        let num = |i: usize| {
            value
                .get(i..i + 8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        };
        let bad = || format!("state ids of {} bytes are malformed", value.len());
        let live = num(0).ok_or_else(bad)?;
        let stage = match (value.get(8), value.len()) {
            (Some(0), 9) => None,
            (Some(1), 34) => Some(Stage {
                slot: Slot(num(9).ok_or_else(bad)?),
                id: num(17).ok_or_else(bad)?,
                next: num(25).ok_or_else(bad)?,
                complete: value[33] == 1,
            }),
            _ => return Err(bad()),
        };
        Ok(StateIds { live, stage })
    }
}

/// Reads `group`'s state ids from `table` (a group never written has its
/// own id as live id).
pub(crate) fn read_ids(
    table: &impl ReadableTable<&'static [u8; 8], &'static [u8]>,
    file: &Path,
    group: GroupId,
) -> Result<StateIds, StorageError> {
    let key = group.0.to_be_bytes();
    match table.get(&key).map_err(|e| StorageError::redb(file, e))? {
        None => Ok(StateIds::initial(group)),
        Some(v) => StateIds::decode(v.value()).map_err(|reason| StorageError::Corrupt {
            file: file.to_path_buf(),
            table: STATE_IDS_TABLE_NAME,
            key: group.to_string(),
            reason,
        }),
    }
}

/// Writes `group`'s state ids.
pub(crate) fn write_ids(
    table: &mut redb::Table<&'static [u8; 8], &'static [u8]>,
    file: &Path,
    group: GroupId,
    ids: &StateIds,
) -> Result<(), StorageError> {
    let key = group.0.to_be_bytes();
    if *ids == StateIds::initial(group) {
        table
            .remove(&key)
            .map_err(|e| StorageError::redb(file, e))?;
    } else {
        table
            .insert(&key, ids.encode().as_slice())
            .map_err(|e| StorageError::redb(file, e))?;
    }
    Ok(())
}

/// The table key of row `row` under state id `id`: the id (8 bytes,
/// big-endian), then the row key.
pub(crate) fn table_key(id: u64, row: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + row.len());
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(row);
    key
}

/// The first table key after every row of state id `id`.
pub(crate) fn id_end(id: u64) -> Vec<u8> {
    match id.checked_add(1) {
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
            let ids = txn.open_table(STATE_IDS_TABLE).map_err(|e| err(e.into()))?;
            let id = read_ids(&ids, &file, group)?.live;
            drop(ids);
            let mut table = txn.open_table(STATE_TABLE).map_err(|e| err(e.into()))?;
            if changes.clear {
                let from = table_key(id, &[]);
                let to = id_end(id);
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
                        key.extend_from_slice(&id.to_be_bytes());
                        key.extend_from_slice(row);
                        table
                            .insert(key.as_slice(), value.as_ref())
                            .map_err(|e| err(e.into()))?;
                    }
                    StateOp::Delete { key: row } => {
                        key.clear();
                        key.extend_from_slice(&id.to_be_bytes());
                        key.extend_from_slice(row);
                        table.remove(key.as_slice()).map_err(|e| err(e.into()))?;
                    }
                    StateOp::DeleteRange { from, to } => {
                        let (from, to) = (table_key(id, from), table_key(id, to));
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
        let rows = self.state(group)?;
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
/// range read of many long values opens one transaction, not one each,
/// and reads finished on other threads share it ([`StateSource::pin`]).
pub struct StateRows {
    db: Arc<Database>,
    file: Arc<Path>,
    group: GroupId,
    /// The state id the rows are under.
    id: u64,
    view: Mutex<Option<Arc<PinnedRows>>>,
}

impl std::fmt::Debug for StateRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateRows")
            .field("file", &self.file)
            .field("group", &self.group)
            .field("id", &self.id)
            .finish()
    }
}

impl StateRows {
    pub(crate) fn new(db: Arc<Database>, file: Arc<Path>, group: GroupId, id: u64) -> StateRows {
        StateRows {
            db,
            file,
            group,
            id,
            view: Mutex::new(None),
        }
    }

    /// The rows as of the newest committed batch the cache knows of.
    fn view(&self) -> Arc<PinnedRows> {
        let mut cached = self.view.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(cached.get_or_insert_with(|| Arc::new(self.open())))
    }

    /// A view of the rows as committed now.
    fn open(&self) -> PinnedRows {
        let txn = self
            .db
            .begin_read()
            .unwrap_or_else(|e| fail(&self.file, self.group, e));
        let table = txn
            .open_table(STATE_TABLE)
            .unwrap_or_else(|e| fail(&self.file, self.group, e));
        PinnedRows {
            table,
            file: Arc::clone(&self.file),
            group: self.group,
            id: self.id,
        }
    }
}

/// A read of the local disk failed: the node stops (fail-stop) rather
/// than answer from a state with holes.
fn fail(file: &Path, group: GroupId, e: impl Into<redb::Error>) -> ! {
    panic!(
        "reading the state of {group} from {} failed, stopping the node: {}",
        file.display(),
        StorageError::redb(file, e)
    )
}

impl StateSource for StateRows {
    fn get(&self, row: &[u8]) -> Option<Bytes> {
        self.view().get(row)
    }

    fn refresh(&self) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn scan(&self, prefix: &[u8], each: &mut dyn FnMut(&[u8], &[u8])) {
        self.open().scan(prefix, each)
    }

    fn pin(&self) -> Option<Arc<dyn StateSource>> {
        Some(self.view())
    }
}

/// A group's rows as one committed batch left them: one redb read
/// transaction, which later batches do not change.
pub struct PinnedRows {
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
    file: Arc<Path>,
    group: GroupId,
    id: u64,
}

impl StateSource for PinnedRows {
    fn get(&self, row: &[u8]) -> Option<Bytes> {
        let key = table_key(self.id, row);
        let value = self
            .table
            .get(key.as_slice())
            .unwrap_or_else(|e| fail(&self.file, self.group, e))?;
        Some(Bytes::copy_from_slice(value.value()))
    }

    fn scan(&self, prefix: &[u8], each: &mut dyn FnMut(&[u8], &[u8])) {
        let from = table_key(self.id, prefix);
        let range = self
            .table
            .range(from.as_slice()..)
            .unwrap_or_else(|e| fail(&self.file, self.group, e));
        for entry in range {
            let (k, v) = entry.unwrap_or_else(|e| fail(&self.file, self.group, e));
            let k = k.value();
            if !k.starts_with(&from) {
                break;
            }
            each(&k[8..], v.value());
        }
    }
}
