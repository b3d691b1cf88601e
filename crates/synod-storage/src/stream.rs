//! Snapshots as streams of rows: a group's committed rows read from one
//! redb read transaction in chunks (on any thread, while the node goes on
//! writing), and received chunk by chunk into a *stage*, fresh rows under
//! a new state id, switched live in one row write with the compaction
//! point (F8) once every chunk is in.
//!
//! ```text
//!  sender                                   receiver
//!  snapshot_reader(g)  ─ read txn at the    receive_chunk(g, slot, chunk)
//!    next_chunk() ──────► chunk 0..n ─────►   rows ─► stage id (not live)
//!    (rows in key order, never split)         last chunk: stage complete
//!                                           load_staged(g, stage) ─► KvStore
//!                                           batch: install_staged(g, stage)
//!                                                  + applied + compact_to
//!                                           old rows: collect_garbage, per round
//! ```
//!
//! A chunk's data is rows, each `key length (u32 LE) key value length
//! (u32 LE) value`; a row is never split over two chunks, so each chunk is
//! checked and written on its own. Chunks must arrive in order (a stream
//! is one connection); a gap or a chunk of another snapshot refuses the
//! stream, and the sender starts over.
//!
//! Invariants:
//! - **T1** a stage is live only once complete: `install_staged` refuses
//!   any other;
//! - **T2** a complete stage is never replaced by a new stream: it waits
//!   until the runtime installs or discards it, so what the runtime loaded
//!   is what it installs;
//! - **T3** stage writes are not durable by themselves; the durable batch
//!   that installs the stage makes every earlier write durable with it.

use crate::batch::Batch;
use crate::error::StorageError;
use crate::state::{
    id_end, read_ids, table_key, write_ids, Stage, StateIds, META_NEXT_STATE_ID, STAGE_ID_BASE,
    STATE_GARBAGE_TABLE, STATE_IDS_TABLE, STATE_TABLE, STATE_TABLE_NAME,
};
use crate::types::GroupId;
use crate::Storage;
use bytes::Bytes;
use redb::{Durability, ReadOnlyTable, ReadableTable};
use std::path::Path;
use std::sync::Arc;
use synod_kv::{KeyRange, KvStore, StateSource};
use synod_paxos::Slot;

/// The longest row key a chunk may carry (an etcd key is at most 1.5 MiB
/// with the request; the row adds a tag and a revision).
pub const ROW_KEY_BYTES_MAX: usize = 2 << 20;
/// The longest row value a chunk may carry.
pub const ROW_VALUE_BYTES_MAX: usize = 64 << 20;
/// The largest chunk accepted: one row at most, or many small ones.
pub const CHUNK_BYTES_MAX: usize = 8 + ROW_KEY_BYTES_MAX + ROW_VALUE_BYTES_MAX;

/// One piece of a snapshot stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamChunk {
    /// Position in the stream, from 0.
    pub index: u64,
    /// No chunk follows.
    pub last: bool,
    /// Whole rows (see the module doc).
    pub data: Bytes,
}

/// Reads one group's rows as of one committed batch, in chunks. It holds
/// a redb read transaction, so the rows do not change under it while the
/// node writes on; pages it reads stay allocated until it is dropped.
pub struct SnapshotReader {
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
    file: Arc<Path>,
    id: u64,
    slot: Slot,
    /// The next table key to read; `None` once the last chunk went out.
    cursor: Option<Vec<u8>>,
    index: u64,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("id", &self.id)
            .field("slot", &self.slot)
            .field("index", &self.index)
            .finish()
    }
}

impl Storage {
    /// A reader of `group`'s rows as committed now, and of the applied slot
    /// they hold (S3: the same transaction wrote both).
    pub fn snapshot_reader(&self, group: GroupId) -> Result<SnapshotReader, StorageError> {
        let redb = |e: redb::Error| StorageError::redb(self.file(), e);
        let txn = self.db().begin_read().map_err(|e| redb(e.into()))?;
        let ids = txn
            .open_table(STATE_IDS_TABLE)
            .map_err(|e| redb(e.into()))?;
        let id = read_ids(&ids, self.file(), group)?.live;
        let slot = self.applied_in(&txn, group)?;
        let table = txn.open_table(STATE_TABLE).map_err(|e| redb(e.into()))?;
        Ok(SnapshotReader {
            table,
            file: Arc::clone(self.file_arc()),
            id,
            slot,
            cursor: Some(table_key(id, &[])),
            index: 0,
        })
    }

    /// Writes one chunk of a snapshot of `group` through `slot` into its
    /// stage: chunk 0 starts a new stage (an unfinished one becomes
    /// garbage), a later chunk must be the next of the same snapshot. A
    /// chunk that breaks the stream or does not parse is refused with the
    /// reason, and nothing is written.
    ///
    /// The write is not durable by itself (T3).
    pub fn receive_chunk(
        &self,
        group: GroupId,
        slot: Slot,
        chunk: &StreamChunk,
    ) -> Result<Received, StorageError> {
        if let Err(why) = check_rows(&chunk.data) {
            return Ok(Received::Refused(why));
        }
        let file = self.file();
        let redb = |e: redb::Error| StorageError::redb(file, e);
        let mut txn = self.db().begin_write().map_err(|e| redb(e.into()))?;
        txn.set_durability(Durability::None);
        let received = {
            let mut ids_table = txn
                .open_table(STATE_IDS_TABLE)
                .map_err(|e| redb(e.into()))?;
            let mut ids = read_ids(&ids_table, file, group)?;
            let stage = match (ids.stage, chunk.index) {
                (Some(s), _) if s.complete => {
                    return Ok(Received::Refused(format!(
                        "a complete snapshot through {} waits to be installed",
                        s.slot
                    )));
                }
                (old, 0) => {
                    if let Some(old) = old {
                        garbage(&txn, file, old.id)?;
                    }
                    Stage {
                        slot,
                        id: next_state_id(&txn, file)?,
                        next: 0,
                        complete: false,
                    }
                }
                (Some(s), i) if s.slot == slot && s.next == i => s,
                (s, i) => {
                    return Ok(Received::Refused(format!(
                        "chunk {i} of the snapshot through {slot} does not follow {:?}",
                        s.map(|s| (s.slot, s.next))
                    )));
                }
            };
            let mut table = txn.open_table(STATE_TABLE).map_err(|e| redb(e.into()))?;
            let mut key = Vec::new();
            let mut failed = None;
            for_each_row(&chunk.data, |row, value| {
                if failed.is_some() {
                    return;
                }
                key.clear();
                key.extend_from_slice(&stage.id.to_be_bytes());
                key.extend_from_slice(row);
                if let Err(e) = table.insert(key.as_slice(), value) {
                    failed = Some(e);
                }
            })
            .expect("checked above");
            if let Some(e) = failed {
                return Err(redb(e.into()));
            }
            ids.stage = Some(Stage {
                next: stage.next + 1,
                complete: chunk.last,
                ..stage
            });
            write_ids(&mut ids_table, file, group, &ids)?;
            if chunk.last {
                Received::Complete { stage: stage.id }
            } else {
                Received::Partial
            }
        };
        txn.commit().map_err(|e| redb(e.into()))?;
        Ok(received)
    }

    /// The state machine in `group`'s complete stage `stage`, loaded and
    /// checked like a store at restart, reading long values from the stage
    /// (live once installed).
    pub fn load_staged(&self, group: GroupId, stage: u64) -> Result<KvStore, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt {
            file: self.file().to_path_buf(),
            table: STATE_TABLE_NAME,
            key: format!("{group} stage {stage}"),
            reason,
        };
        match self.state_ids(group)?.stage {
            Some(s) if s.id == stage && s.complete => {}
            other => return Err(corrupt(format!("no complete stage {stage}: {other:?}"))),
        }
        let rows = self.rows(group, stage);
        let kv = match KvStore::load(Arc::clone(&rows) as _) {
            Ok(Some(kv)) => kv,
            Ok(None) => return Err(corrupt("the snapshot has no meta row".to_string())),
            Err(e) => return Err(corrupt(e)),
        };
        // The rows came from a peer or a file: every value the index keeps
        // on disk must be there with its length (S2), or the first read of
        // it would stop the node. (A restart trusts its own rows; this
        // reads each long value of the snapshot once.)
        let mvcc = kv.mvcc();
        for (key, versions) in mvcc.versions(&KeyRange::all()) {
            for v in versions {
                let Err(value) = mvcc.value_or_row(key, v) else {
                    continue;
                };
                match rows.get(&value.row) {
                    Some(b) if b.len() == value.len as usize => {}
                    found => {
                        return Err(corrupt(format!(
                            "key {key:?} at revision {}: value row of {:?} bytes, {} expected",
                            v.mod_revision,
                            found.map(|b| b.len()),
                            value.len
                        )))
                    }
                }
            }
        }
        Ok(kv)
    }

    /// Drops every group's stage (at start: a stream does not survive the
    /// process that received it).
    pub fn discard_stages(&self) -> Result<(), StorageError> {
        let mut batch = self.batch()?;
        for (group, stage) in self.stages()? {
            batch.discard_stage(group, stage)?;
        }
        batch.commit()
    }

    /// Every group with a stage, and the stage's id.
    fn stages(&self) -> Result<Vec<(GroupId, u64)>, StorageError> {
        let redb = |e: redb::Error| StorageError::redb(self.file(), e);
        let txn = self.db().begin_read().map_err(|e| redb(e.into()))?;
        let table = txn
            .open_table(STATE_IDS_TABLE)
            .map_err(|e| redb(e.into()))?;
        let mut groups = Vec::new();
        for entry in table.iter().map_err(|e| redb(e.into()))? {
            let (k, _) = entry.map_err(|e| redb(e.into()))?;
            let group = GroupId(u64::from_be_bytes(*k.value()));
            if let Some(stage) = read_ids(&table, self.file(), group)?.stage {
                groups.push((group, stage.id));
            }
        }
        Ok(groups)
    }

    /// The applied slot in a read transaction (as [`load`](Storage::load)
    /// reports it: at least the compaction point).
    fn applied_in(
        &self,
        txn: &redb::ReadTransaction,
        group: GroupId,
    ) -> Result<Slot, StorageError> {
        let table = txn
            .open_table(crate::format::ACCEPTOR_TABLE)
            .map_err(|e| StorageError::redb(self.file(), e))?;
        let value = table
            .get(&crate::format::acceptor_key(group))
            .map_err(|e| StorageError::redb(self.file(), e))?;
        let Some(value) = value else {
            return Ok(Slot(0));
        };
        let state =
            crate::codec::decode_acceptor(value.value()).map_err(|e| StorageError::Corrupt {
                file: self.file().to_path_buf(),
                table: crate::format::ACCEPTOR_TABLE_NAME,
                key: group.to_string(),
                reason: e.to_string(),
            })?;
        Ok(state.applied.max(state.snapshot))
    }
}

/// What became of a received chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Not written: the stream is broken or the chunk malformed.
    Refused(String),
    /// Written; more chunks are due.
    Partial,
    /// Written, and it was the last: stage `stage` is complete.
    Complete {
        /// The stage to load and install.
        stage: u64,
    },
}

impl SnapshotReader {
    /// The slot the rows hold.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The next chunk of about `max_bytes` (one row at least), or `None`
    /// after the last. There is always one chunk at least.
    pub fn next_chunk(&mut self, max_bytes: usize) -> Result<Option<StreamChunk>, StorageError> {
        let Some(from) = self.cursor.take() else {
            return Ok(None);
        };
        let redb = |e: redb::Error| StorageError::redb(&self.file, e);
        let end = id_end(self.id);
        let mut range = self
            .table
            .range(from.as_slice()..end.as_slice())
            .map_err(|e| redb(e.into()))?;
        let mut data = Vec::with_capacity(max_bytes.min(1 << 20));
        let mut last = true;
        for entry in range.by_ref() {
            let (k, v) = entry.map_err(|e| redb(e.into()))?;
            let (row, value) = (&k.value()[8..], v.value());
            if !data.is_empty() && data.len() + 8 + row.len() + value.len() > max_bytes {
                self.cursor = Some(k.value().to_vec());
                last = false;
                break;
            }
            push_row(&mut data, row, value);
        }
        let chunk = StreamChunk {
            index: self.index,
            last,
            data: Bytes::from(data),
        };
        self.index += 1;
        Ok(Some(chunk))
    }
}

impl Batch {
    /// Makes `group`'s complete stage `stage` its live rows (T1); the old
    /// rows become garbage. Write the applied slot (the stage's) and the
    /// compaction through it in the same batch (F8), after this call and
    /// before any [`write_state`](Batch::write_state) of the new store.
    pub fn install_staged(&mut self, group: GroupId, stage: u64) -> Result<(), StorageError> {
        self.change_ids(group, |ids, file| match ids.stage {
            Some(s) if s.id == stage && s.complete => {
                let old = ids.live;
                ids.live = stage;
                ids.stage = None;
                Ok(Some(old))
            }
            other => Err(StorageError::Corrupt {
                file: file.to_path_buf(),
                table: crate::state::STATE_IDS_TABLE_NAME,
                key: group.to_string(),
                reason: format!("installing stage {stage}, found {other:?}"),
            }),
        })
    }

    /// Drops `group`'s stage `stage`, if it is still there: its rows
    /// become garbage.
    pub fn discard_stage(&mut self, group: GroupId, stage: u64) -> Result<(), StorageError> {
        self.change_ids(group, |ids, _| {
            if ids.stage.is_some_and(|s| s.id == stage) {
                ids.stage = None;
                return Ok(Some(stage));
            }
            Ok(None)
        })
    }

    /// Reads `group`'s state ids, lets `change` edit them and name the
    /// state id whose rows it made garbage, and writes them back.
    fn change_ids(
        &mut self,
        group: GroupId,
        change: impl FnOnce(&mut StateIds, &Path) -> Result<Option<u64>, StorageError>,
    ) -> Result<(), StorageError> {
        self.guard(|batch| {
            let file = batch.file_path();
            let txn = batch.transaction();
            let mut table = txn
                .open_table(STATE_IDS_TABLE)
                .map_err(|e| StorageError::redb(&file, e))?;
            let mut ids = read_ids(&table, &file, group)?;
            if let Some(dropped) = change(&mut ids, &file)? {
                garbage(txn, &file, dropped)?;
                write_ids(&mut table, &file, group, &ids)?;
            }
            Ok(())
        })
    }

    /// Deletes up to `rows_max` rows of state ids nobody uses any more;
    /// returns how many it deleted. Call it once per round: a replaced
    /// store of any size goes away without a long transaction.
    pub fn collect_garbage(&mut self, rows_max: usize) -> Result<usize, StorageError> {
        let mut deleted = 0;
        self.guard(|batch| {
            let file = batch.file_path();
            let redb = |e: redb::Error| StorageError::redb(&file, e);
            let txn = batch.transaction();
            let mut garbage = txn
                .open_table(STATE_GARBAGE_TABLE)
                .map_err(|e| redb(e.into()))?;
            let Some(first) = garbage.first().map_err(|e| redb(e.into()))? else {
                return Ok(());
            };
            let id = u64::from_be_bytes(*first.0.value());
            drop(first);
            let mut table = txn.open_table(STATE_TABLE).map_err(|e| redb(e.into()))?;
            let (from, to) = (table_key(id, &[]), id_end(id));
            let mut doomed = Vec::new();
            for entry in table
                .range(from.as_slice()..to.as_slice())
                .map_err(|e| redb(e.into()))?
                .take(rows_max + 1)
            {
                doomed.push(entry.map_err(|e| redb(e.into()))?.0.value().to_vec());
            }
            let done = doomed.len() <= rows_max;
            doomed.truncate(rows_max);
            for key in &doomed {
                table.remove(key.as_slice()).map_err(|e| redb(e.into()))?;
            }
            deleted = doomed.len();
            if done {
                garbage
                    .remove(&id.to_be_bytes())
                    .map_err(|e| redb(e.into()))?;
            }
            Ok(())
        })?;
        Ok(deleted)
    }
}

/// Marks state id `id`'s rows as garbage.
fn garbage(txn: &redb::WriteTransaction, file: &Path, id: u64) -> Result<(), StorageError> {
    let mut table = txn
        .open_table(STATE_GARBAGE_TABLE)
        .map_err(|e| StorageError::redb(file, e))?;
    table
        .insert(&id.to_be_bytes(), [].as_slice())
        .map_err(|e| StorageError::redb(file, e))?;
    Ok(())
}

/// Hands out a state id for a new stage.
fn next_state_id(txn: &redb::WriteTransaction, file: &Path) -> Result<u64, StorageError> {
    let mut meta = txn
        .open_table(crate::format::META_TABLE)
        .map_err(|e| StorageError::redb(file, e))?;
    let next = match meta
        .get(META_NEXT_STATE_ID)
        .map_err(|e| StorageError::redb(file, e))?
    {
        Some(v) => <[u8; 8]>::try_from(v.value())
            .map(u64::from_be_bytes)
            .map_err(|_| StorageError::Corrupt {
                file: file.to_path_buf(),
                table: crate::format::META_TABLE_NAME,
                key: META_NEXT_STATE_ID.to_string(),
                reason: format!("{} bytes, not 8", v.value().len()),
            })?,
        None => STAGE_ID_BASE,
    };
    let after = next.checked_add(1).ok_or_else(|| StorageError::Corrupt {
        file: file.to_path_buf(),
        table: crate::format::META_TABLE_NAME,
        key: META_NEXT_STATE_ID.to_string(),
        reason: "state ids ran out".to_string(),
    })?;
    meta.insert(META_NEXT_STATE_ID, after.to_be_bytes().as_slice())
        .map_err(|e| StorageError::redb(file, e))?;
    Ok(next)
}

/// Appends one row to a chunk.
pub fn push_row(data: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    data.extend_from_slice(&(key.len() as u32).to_le_bytes());
    data.extend_from_slice(key);
    data.extend_from_slice(&(value.len() as u32).to_le_bytes());
    data.extend_from_slice(value);
}

/// Checks a chunk's framing and sizes before anything is written.
pub fn check_rows(data: &[u8]) -> Result<usize, String> {
    if data.len() > CHUNK_BYTES_MAX {
        return Err(format!(
            "a chunk of {} bytes, more than {CHUNK_BYTES_MAX}",
            data.len()
        ));
    }
    for_each_row(data, |_, _| {})
}

/// Calls `each` with every row of a chunk; returns how many, or why the
/// chunk does not parse.
pub fn for_each_row(data: &[u8], mut each: impl FnMut(&[u8], &[u8])) -> Result<usize, String> {
    let mut rest = data;
    let mut rows = 0;
    let take = |rest: &mut &[u8], rows: usize, max: usize, what: &str| -> Result<usize, String> {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("row {rows}: {what} length cut short"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > max || len > tail.len() {
            return Err(format!(
                "row {rows}: {what} of {len} bytes (at most {max}, {} left)",
                tail.len()
            ));
        }
        *rest = tail;
        Ok(len)
    };
    while !rest.is_empty() {
        let klen = take(&mut rest, rows, ROW_KEY_BYTES_MAX, "key")?;
        let (key, tail) = rest.split_at(klen);
        rest = tail;
        if key.is_empty() {
            return Err(format!("row {rows}: empty key"));
        }
        let vlen = take(&mut rest, rows, ROW_VALUE_BYTES_MAX, "value")?;
        let (value, tail) = rest.split_at(vlen);
        rest = tail;
        each(key, value);
        rows += 1;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_bad_framing_is_refused() {
        let mut data = Vec::new();
        push_row(&mut data, b"k1", b"v1");
        push_row(&mut data, b"m", b"");
        let mut seen = Vec::new();
        assert_eq!(
            for_each_row(&data, |k, v| seen.push((k.to_vec(), v.to_vec()))),
            Ok(2)
        );
        assert_eq!(seen[0], (b"k1".to_vec(), b"v1".to_vec()));
        assert!(check_rows(&data[..data.len() - 1]).is_err());
        assert!(check_rows(&[1, 0, 0]).is_err());
        assert!(check_rows(&[0, 0, 0, 0, 0, 0, 0, 0])
            .unwrap_err()
            .contains("empty key"));
        assert!(check_rows(&[0xff, 0xff, 0xff, 0xff, 1]).is_err());
        assert_eq!(check_rows(&[]), Ok(0));
    }
}
