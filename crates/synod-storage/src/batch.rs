//! The write path: a batch of `Persist`es from many groups, plus whatever
//! later layers add to the same transaction, committed with one fsync.
//!
//! ```text
//!  storage.batch() ──► Batch { redb WriteTransaction, encode buffer, must_sync }
//!        │
//!        ├─ persist(g1, &ready.persist)   ┐  decoded, checked and written into
//!        ├─ persist(g2, &ready.persist)   │  the one transaction; nothing is
//!        ├─ set_applied(g1, slot)         │  visible to readers yet
//!        ├─ transaction() ─► other tables ┘
//!        ▼
//!  commit() ──► one redb commit: fsync when any persist must_sync, else lazy
//!        │
//!        ▼
//!  replica.on_persisted(token) for every Ready in the batch
//! ```

use crate::codec;
use crate::error::StorageError;
use crate::format::{
    self, AcceptorState, ACCEPTOR_TABLE, ACCEPTOR_TABLE_NAME, LOG_GARBAGE_TABLE, LOG_TABLE,
    MEMBERSHIP_TABLE,
};
use crate::types::GroupId;
use bytes::Bytes;
use redb::{Durability, ReadableTable, WriteTransaction};
use std::path::Path;
use std::sync::Arc;
use synod_paxos::{Configuration, Persist, Slot};

/// One atomic, durable write across any number of groups (group commit).
///
/// Everything written through a batch becomes visible and durable together at
/// [`commit`](Batch::commit), or not at all: dropping the batch, calling
/// [`abort`](Batch::abort), or any failed call rolls every write back
/// (invariant F7 in [`format`](mod@crate::format)).
///
/// A batch is fail-stop: after any call on it fails, every later call and
/// `commit` return [`StorageError::BatchFailed`], so a half-applied `Persist`
/// can never be committed.
#[must_use = "a batch is rolled back unless it is committed"]
pub struct Batch {
    txn: WriteTransaction,
    file: Arc<Path>,
    /// Reused for every value this batch encodes.
    buf: Vec<u8>,
    /// Some write in this batch must be on disk before `commit` returns.
    must_sync: bool,
    failed: bool,
}

impl Batch {
    pub(crate) fn new(txn: WriteTransaction, file: Arc<Path>) -> Batch {
        Batch {
            txn,
            file,
            buf: Vec::new(),
            must_sync: false,
            failed: false,
        }
    }

    /// Adds one `Ready::persist` of `group` to the batch, with the semantics
    /// of one atomic write, applied in this order:
    ///
    /// 1. `promised` replaces the stored ballot (it never decreases);
    /// 2. each record is stored under its slot, a later one replacing an
    ///    earlier one; records at or below the group's snapshot are ignored,
    ///    since a snapshot already covers them;
    /// 3. `commit` raises the commit hint (a lower hint is ignored);
    /// 4. `compact_through` deletes the group's records through that slot and
    ///    raises the snapshot slot to it;
    /// 5. `membership` replaces the group's stored membership, unless the
    ///    stored one is for a later slot (F9: it never goes back).
    ///
    /// Several persists of one group in a batch apply in call order.
    ///
    /// Panics if `promised` is below the stored promise: the core never
    /// lowers a promise, so that is a bug in the caller, not a disk error.
    pub fn persist(
        &mut self,
        group: GroupId,
        persist: &Persist<Bytes>,
    ) -> Result<(), StorageError> {
        self.guard(|batch| batch.persist_inner(group, persist))
    }

    /// Stores a snapshot of `group`'s state machine covering slots through
    /// `slot`, deletes the log records it covers, raises the group's
    /// snapshot slot and records `slot` as applied, all in this batch's
    /// transaction.
    ///
    /// The compaction must not wait for a later batch: a restart with the
    /// new applied slot over the old log would take every stored record up
    /// to `slot` as chosen (`Replica::restore` does, because applied slots
    /// are chosen), including values a replica accepted under a ballot that
    /// was deposed before they were chosen. A snapshot received from a
    /// leader covers exactly such slots. So the snapshot, the end of the log
    /// it replaces and the applied slot move together (F8), or not at all.
    ///
    /// `membership` is the configuration in effect at `slot`: the log
    /// entries that chose it may be among those deleted, so it is stored
    /// here too (`None` only where the configuration is the initial one,
    /// as in a restore).
    pub fn put_snapshot(
        &mut self,
        group: GroupId,
        slot: Slot,
        data: &[u8],
        membership: Option<&Configuration>,
    ) -> Result<(), StorageError> {
        self.guard(|batch| {
            let file = &batch.file;
            let mut buf = std::mem::take(&mut batch.buf);
            crate::snapshot::encode(slot, data, &mut buf);
            let result = match batch.txn.open_table(crate::snapshot::SNAPSHOT_TABLE) {
                Ok(mut t) => t
                    .insert(&crate::snapshot::key(group), buf.as_slice())
                    .map(|_| ())
                    .map_err(|e| redb(file, e)),
                Err(e) => Err(redb(file, e)),
            };
            batch.buf = buf;
            batch.must_sync = true;
            result
        })?;
        self.compact_to(group, slot, membership)?;
        self.set_applied(group, slot)
    }

    /// Records that the state machine has applied `group`'s slots through
    /// `applied`; [`Storage::load`](crate::Storage::load) returns it as
    /// `Durable::applied`. The state machine writes its own tables through
    /// [`transaction`](Batch::transaction) in the same batch, so its state
    /// and its applied slot can never disagree after a crash: no slot is
    /// applied twice, none is skipped.
    ///
    /// Panics if `applied` is below the stored applied slot (a caller bug).
    pub fn set_applied(&mut self, group: GroupId, applied: Slot) -> Result<(), StorageError> {
        self.guard(|batch| {
            let file = &batch.file;
            let mut acceptor = batch
                .txn
                .open_table(ACCEPTOR_TABLE)
                .map_err(|e| redb(file, e))?;
            let mut state = read_state(&acceptor, file, group)?.unwrap_or_default();
            assert!(
                applied >= state.applied,
                "{group}: applied slot regressed {} -> {applied}",
                state.applied
            );
            state.applied = applied;
            write_state(&mut acceptor, &mut batch.buf, file, group, &state)
        })
    }

    /// The batch's redb write transaction, so that later layers write their
    /// own tables atomically with the acceptor state and the applied slot.
    ///
    /// Do not open this crate's tables through it, and do not create
    /// persistent savepoints (redb then forbids the lazy durability a
    /// commit-hint-only batch uses). Writes made here are durable at commit
    /// only if some persist in the batch syncs or
    /// [`require_sync`](Batch::require_sync) was called.
    pub fn transaction(&self) -> &WriteTransaction {
        &self.txn
    }

    /// Makes `commit` fsync even if no persist in the batch requires it, for
    /// writes added through [`transaction`](Batch::transaction) that must
    /// survive a crash before the caller acts on them.
    pub fn require_sync(&mut self) {
        self.must_sync = true;
    }

    /// True when `commit` will fsync: some persist in the batch had
    /// `must_sync()`, or [`require_sync`](Batch::require_sync) was called.
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }

    /// Commits every write of the batch in one redb transaction.
    ///
    /// When the batch must sync, the commit is `Durability::Immediate`: on
    /// return everything is on disk and the replicas may be told
    /// (`on_persisted`). Otherwise the batch holds only commit hints (which
    /// are safe to lose) and perhaps state-machine writes that are consistent
    /// with their applied slot either way, so it is committed with
    /// `Durability::None`: visible at once, made durable by the next synced
    /// batch, lost in a crash before that. (redb's `Eventual` would not save
    /// the fsync on Linux, where it calls `fdatasync` like `Immediate`.)
    pub fn commit(self) -> Result<(), StorageError> {
        let Batch {
            mut txn,
            file,
            must_sync,
            failed,
            ..
        } = self;
        if failed {
            // Dropping the transaction rolls it back.
            drop(txn);
            return Err(StorageError::BatchFailed {
                file: file.to_path_buf(),
            });
        }
        if !must_sync {
            txn.set_durability(Durability::None);
        }
        txn.commit().map_err(|e| StorageError::redb(&file, e))
    }

    /// Rolls every write of the batch back. Dropping the batch does the same;
    /// this names the intent and reports a failure to roll back.
    pub fn abort(self) -> Result<(), StorageError> {
        self.txn
            .abort()
            .map_err(|e| StorageError::redb(&self.file, e))
    }

    /// The database file, for error messages.
    pub(crate) fn file_path(&self) -> Arc<Path> {
        Arc::clone(&self.file)
    }

    /// Deletes up to `records_max` log records that compactions left
    /// behind (F4), oldest group entry first; returns how many it deleted.
    /// Call it once per round, like
    /// [`collect_garbage`](Batch::collect_garbage).
    pub fn collect_log_garbage(&mut self, records_max: usize) -> Result<usize, StorageError> {
        let mut deleted = 0;
        self.guard(|batch| {
            let file = batch.file_path();
            let txn = batch.transaction();
            let mut garbage = txn
                .open_table(LOG_GARBAGE_TABLE)
                .map_err(|e| redb(&file, e))?;
            let mut log = txn.open_table(LOG_TABLE).map_err(|e| redb(&file, e))?;
            while deleted < records_max {
                let Some((key, through)) = garbage
                    .first()
                    .map_err(|e| redb(&file, e))?
                    .map(|(k, v)| (*k.value(), <[u8; 8]>::try_from(v.value())))
                else {
                    break;
                };
                let group = format::acceptor_key_group(&key);
                let Ok(through) = through else {
                    return Err(StorageError::Corrupt {
                        file: file.to_path_buf(),
                        table: format::LOG_GARBAGE_TABLE_NAME,
                        key: group.to_string(),
                        reason: "the slot is not 8 bytes".into(),
                    });
                };
                let through = Slot(u64::from_be_bytes(through));
                let (n, left) = delete_log(&mut log, &file, group, through, records_max - deleted)?;
                deleted += n;
                if left {
                    break;
                }
                garbage.remove(&key).map_err(|e| redb(&file, e))?;
            }
            Ok(())
        })?;
        Ok(deleted)
    }

    /// Runs one call on the batch; a failure poisons the batch.
    pub(crate) fn guard(
        &mut self,
        call: impl FnOnce(&mut Batch) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::BatchFailed {
                file: self.file.to_path_buf(),
            });
        }
        let result = call(self);
        self.failed = result.is_err();
        result
    }

    /// Each table is opened at most once per persist; the tables borrow the
    /// transaction while the encode buffer is borrowed beside them.
    fn persist_inner(
        &mut self,
        group: GroupId,
        persist: &Persist<Bytes>,
    ) -> Result<(), StorageError> {
        if persist.is_empty() {
            return Ok(());
        }
        self.must_sync |= persist.must_sync();
        let file = &self.file;
        let mut acceptor = self
            .txn
            .open_table(ACCEPTOR_TABLE)
            .map_err(|e| redb(file, e))?;
        let before = read_state(&acceptor, file, group)?;
        let mut state = before.unwrap_or_default();
        if let Some(promised) = persist.promised {
            assert!(
                promised >= state.promised,
                "{group}: promise regressed {} -> {promised}",
                state.promised
            );
            state.promised = promised;
        }
        let compact_through = persist
            .compact_through
            .filter(|&through| through > state.snapshot);
        if !persist.records.is_empty() || compact_through.is_some() {
            let mut log = self.txn.open_table(LOG_TABLE).map_err(|e| redb(file, e))?;
            // Records first, then compaction: it covers records of its own
            // persist too (an installed snapshot replaces what lies below it).
            for record in persist.records.iter().filter(|r| r.slot > state.snapshot) {
                codec::encode_record(&mut self.buf, record);
                log.insert(&format::log_key(group, record.slot), self.buf.as_slice())
                    .map_err(|e| redb(file, e))?;
            }
            if let Some(through) = compact_through {
                // F4: the snapshot rises now; the records it covers are
                // deleted a bounded number per round by
                // `collect_log_garbage`.
                let mut garbage = self
                    .txn
                    .open_table(LOG_GARBAGE_TABLE)
                    .map_err(|e| redb(file, e))?;
                garbage
                    .insert(&format::acceptor_key(group), &through.0.to_be_bytes()[..])
                    .map_err(|e| redb(file, e))?;
                state.snapshot = through;
            }
        }
        if let Some(commit) = persist.commit {
            state.commit = state.commit.max(commit);
        }
        if let Some(record) = &persist.membership {
            let mut table = self
                .txn
                .open_table(MEMBERSHIP_TABLE)
                .map_err(|e| redb(file, e))?;
            let key = format::acceptor_key(group);
            let stored = match table.get(&key).map_err(|e| redb(file, e))? {
                Some(v) => Some(codec::decode_membership(v.value()).map_err(|e| {
                    StorageError::Corrupt {
                        file: file.to_path_buf(),
                        table: crate::format::MEMBERSHIP_TABLE_NAME,
                        key: group.to_string(),
                        reason: e.to_string(),
                    }
                })?),
                None => None,
            };
            // F9: a record for an earlier slot (a compaction written after
            // a later snapshot in the same batch) does not replace it.
            if stored.is_none_or(|stored| stored.slot <= record.slot) {
                codec::encode_membership(&mut self.buf, record);
                table
                    .insert(&key, self.buf.as_slice())
                    .map_err(|e| redb(file, e))?;
            }
        }
        // A record-only persist of a new group still writes the row (F3);
        // an unchanged row is not rewritten, which keeps a follower's
        // record-only persist to its record inserts.
        if before == Some(state) {
            return Ok(());
        }
        write_state(&mut acceptor, &mut self.buf, file, group, &state)
    }
}

/// The group's acceptor row as the transaction sees it (including this
/// batch's earlier writes); `None` for a group never written.
fn read_state(
    acceptor: &AcceptorTable<'_>,
    file: &Path,
    group: GroupId,
) -> Result<Option<AcceptorState>, StorageError> {
    let value = acceptor
        .get(&format::acceptor_key(group))
        .map_err(|e| redb(file, e))?;
    let Some(value) = value else {
        return Ok(None);
    };
    codec::decode_acceptor(value.value())
        .map(Some)
        .map_err(|e| StorageError::Corrupt {
            file: file.to_path_buf(),
            table: ACCEPTOR_TABLE_NAME,
            key: group.to_string(),
            reason: e.to_string(),
        })
}

fn write_state(
    acceptor: &mut AcceptorTable<'_>,
    buf: &mut Vec<u8>,
    file: &Path,
    group: GroupId,
    state: &AcceptorState,
) -> Result<(), StorageError> {
    codec::encode_acceptor(buf, state);
    acceptor
        .insert(&format::acceptor_key(group), buf.as_slice())
        .map_err(|e| redb(file, e))?;
    Ok(())
}

type AcceptorTable<'txn> = redb::Table<'txn, &'static [u8; 8], &'static [u8]>;
type LogTable<'txn> = redb::Table<'txn, &'static [u8; 16], &'static [u8]>;

/// Deletes up to `max` of `group`'s records at or below `through`, oldest
/// first: how many, and whether some remain.
fn delete_log(
    log: &mut LogTable<'_>,
    file: &Path,
    group: GroupId,
    through: Slot,
    max: usize,
) -> Result<(usize, bool), StorageError> {
    let first = format::log_key(group, Slot(0));
    let last = format::log_key(group, through);
    let mut doomed: Vec<[u8; 16]> = Vec::with_capacity(max.min(1024) + 1);
    for entry in log
        .range::<&[u8; 16]>(&first..=&last)
        .map_err(|e| redb(file, e))?
        .take(max + 1)
    {
        doomed.push(*entry.map_err(|e| redb(file, e))?.0.value());
    }
    let left = doomed.len() > max;
    doomed.truncate(max);
    for key in &doomed {
        log.remove(key).map_err(|e| redb(file, e))?;
    }
    Ok((doomed.len(), left))
}

fn redb(file: &Path, error: impl Into<redb::Error>) -> StorageError {
    StorageError::redb(file, error)
}
