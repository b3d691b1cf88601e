//! The node's database handle: opening (with the identity and format checks)
//! and reading a group's durable state back.

use crate::batch::Batch;
use crate::codec::{self, DecodeError};
use crate::error::StorageError;
use crate::format::{
    self, AcceptorState, ACCEPTOR_TABLE, ACCEPTOR_TABLE_NAME, FORMAT_VERSION, LOG_TABLE,
    LOG_TABLE_NAME, MEMBERSHIP_TABLE, MEMBERSHIP_TABLE_NAME, META_FORMAT_KEY, META_IDENTITY_KEY,
    META_TABLE, META_TABLE_NAME,
};
use crate::types::{GroupId, Identity};
use bytes::Bytes;
use redb::{Database, ReadableTable, TableHandle};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use synod_paxos::{Durable, Slot};

/// redb's page cache per node. The state machine's long values are read
/// through it; its size is most of a node's memory beyond the index, so it
/// is bounded well below redb's default (1 GiB).
pub const CACHE_BYTES: usize = 256 << 20;

/// One node's durable store: every Paxos group's acceptor state and log in
/// one redb database, so one fsync commits a batch of writes across groups.
///
/// Reads ([`load`](Storage::load), [`groups`](Storage::groups)) may run while
/// a batch is open; they see only committed batches. Only one [`Batch`] is
/// open at a time: [`batch`](Storage::batch) blocks until the previous one is
/// committed or dropped (that is redb's single-writer rule). Clones share
/// the one database, so threads off the core (snapshot streams) read and
/// stage rows beside it.
#[derive(Clone, Debug)]
pub struct Storage {
    db: Arc<Database>,
    file: Arc<Path>,
    identity: Identity,
    quick_repair: bool,
}

impl Storage {
    /// Opens the data dir `dir` for the node `identity`, creating the dir and
    /// the database if they do not exist.
    ///
    /// A new database records `identity` and the format version; an existing
    /// one must carry the same identity and a format this build reads, so a
    /// node never starts on another node's promises or on a file it would
    /// misread.
    pub fn open(dir: &Path, identity: Identity) -> Result<Storage, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join(format::FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&file)
            .map_err(|e| StorageError::redb(&file, e))?;
        Storage::from_database(db, file, identity)
    }

    /// Wraps a database the caller opened itself (an in-memory backend for a
    /// simulation, a fault-injecting backend for crash tests, a tuned cache
    /// size), with the same identity and format checks as [`open`](Storage::open).
    /// `file` only names the database in error messages.
    pub fn from_database(
        db: Database,
        file: PathBuf,
        identity: Identity,
    ) -> Result<Storage, StorageError> {
        let storage = Storage {
            db: Arc::new(db),
            quick_repair: false,
            file: Arc::from(file),
            identity,
        };
        storage.init()?;
        Ok(storage)
    }

    /// Checks (or, for a new database, records) the format version and the
    /// identity, and creates the tables so that readers never meet a missing
    /// one.
    fn init(&self) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(|e| self.redb(e))?;
        let others: Vec<String> = txn
            .list_tables()
            .map_err(|e| self.redb(e))?
            .map(|t| t.name().to_string())
            .filter(|name| name != META_TABLE_NAME)
            .collect();
        {
            let mut meta = txn.open_table(META_TABLE).map_err(|e| self.redb(e))?;
            let found = match meta.get(META_FORMAT_KEY).map_err(|e| self.redb(e))? {
                Some(value) => Some(
                    codec::decode_format(value.value())
                        .map_err(|e| self.corrupt(META_TABLE_NAME, META_FORMAT_KEY, e))?,
                ),
                None => None,
            };
            match found {
                Some(found) => self.check_existing(&meta, found)?,
                None if others.is_empty() => self.initialise(&mut meta)?,
                None => {
                    return Err(StorageError::Corrupt {
                        file: self.file.to_path_buf(),
                        table: META_TABLE_NAME,
                        key: META_FORMAT_KEY.to_string(),
                        reason: format!(
                            "missing, although the database holds tables {others:?}: \
                             not a synod data dir, or its meta table was lost"
                        ),
                    });
                }
            }
        }
        txn.open_table(ACCEPTOR_TABLE).map_err(|e| self.redb(e))?;
        txn.open_table(LOG_TABLE).map_err(|e| self.redb(e))?;
        txn.open_table(MEMBERSHIP_TABLE).map_err(|e| self.redb(e))?;
        txn.open_table(crate::format::LOG_GARBAGE_TABLE)
            .map_err(|e| self.redb(e))?;
        txn.open_table(crate::state::STATE_TABLE)
            .map_err(|e| self.redb(e))?;
        txn.open_table(crate::state::STATE_IDS_TABLE)
            .map_err(|e| self.redb(e))?;
        txn.open_table(crate::state::STATE_GARBAGE_TABLE)
            .map_err(|e| self.redb(e))?;
        txn.open_table(crate::snapshot::SNAPSHOT_TABLE)
            .map_err(|e| self.redb(e))?;
        txn.commit().map_err(|e| self.redb(e))
    }

    fn check_existing(
        &self,
        meta: &redb::Table<&str, &[u8]>,
        found: u32,
    ) -> Result<(), StorageError> {
        if found != FORMAT_VERSION {
            return Err(StorageError::UnsupportedFormat {
                file: self.file.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        let Some(value) = meta.get(META_IDENTITY_KEY).map_err(|e| self.redb(e))? else {
            return Err(StorageError::Corrupt {
                file: self.file.to_path_buf(),
                table: META_TABLE_NAME,
                key: META_IDENTITY_KEY.to_string(),
                reason: "missing, although the format record exists".to_string(),
            });
        };
        let stored = codec::decode_identity(value.value())
            .map_err(|e| self.corrupt(META_TABLE_NAME, META_IDENTITY_KEY, e))?;
        let which = match (
            stored.cluster_id == self.identity.cluster_id,
            stored.node_id == self.identity.node_id,
        ) {
            (true, true) => return Ok(()),
            (false, true) => "cluster id",
            (true, false) => "node id",
            (false, false) => "cluster id and node id",
        };
        Err(StorageError::IdentityMismatch {
            dir: self.dir(),
            stored,
            requested: self.identity,
            which,
        })
    }

    fn initialise(&self, meta: &mut redb::Table<&str, &[u8]>) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        codec::encode_format(&mut buf, FORMAT_VERSION);
        meta.insert(META_FORMAT_KEY, buf.as_slice())
            .map_err(|e| self.redb(e))?;
        codec::encode_identity(&mut buf, self.identity);
        meta.insert(META_IDENTITY_KEY, buf.as_slice())
            .map_err(|e| self.redb(e))?;
        Ok(())
    }

    /// With `on`, every durable batch also saves the allocator state
    /// (redb's quick repair, a two-phase commit), so reopening after a
    /// crash does not walk the whole file to rebuild it (seconds per GB).
    /// It costs write throughput on large files, so it is off unless the
    /// operator asks for it.
    pub fn set_quick_repair(&mut self, on: bool) {
        self.quick_repair = on;
    }

    /// Starts a batch of writes: one redb write transaction that
    /// [`Batch::commit`] makes durable with one fsync. Blocks while another
    /// batch is open.
    pub fn batch(&self) -> Result<Batch, StorageError> {
        let mut txn = self.db.begin_write().map_err(|e| self.redb(e))?;
        txn.set_quick_repair(self.quick_repair);
        Ok(Batch::new(txn, Arc::clone(&self.file)))
    }

    /// Reads back what the committed batches wrote for `group`: exactly what
    /// a restarting replica needs for `Replica::restore`.
    ///
    /// `records` come in slot order, all above `snapshot`. `applied` is the
    /// higher of the slot last given to [`Batch::set_applied`] and the
    /// snapshot slot: compacted slots are applied by definition, because the
    /// snapshot that replaced them holds their effects. A group never written
    /// loads as `Durable::empty()`.
    pub fn load(&self, group: GroupId) -> Result<Durable<Bytes>, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.redb(e))?;
        let acceptor = txn.open_table(ACCEPTOR_TABLE).map_err(|e| self.redb(e))?;
        let state = match acceptor
            .get(&format::acceptor_key(group))
            .map_err(|e| self.redb(e))?
        {
            Some(value) => Some(
                codec::decode_acceptor(value.value())
                    .map_err(|e| self.corrupt(ACCEPTOR_TABLE_NAME, &group.to_string(), e))?,
            ),
            None => None,
        };
        let log = txn.open_table(LOG_TABLE).map_err(|e| self.redb(e))?;
        let mut records = self.load_records(&log, group, state.unwrap_or_default())?;
        // F8: a snapshot covers the log through its slot. Files written
        // before put_snapshot compacted in its own transaction can hold a
        // snapshot above the acceptor's compaction point; the records it
        // covers are not log any more (they may be stale acceptances), so
        // they are left out, as the next compaction would delete them.
        let state = match (state, self.snapshot_slot(&txn, group)?) {
            (Some(mut state), Some(covered)) if covered > state.snapshot => {
                records.retain(|r| r.slot > covered);
                state.snapshot = covered;
                state.applied = state.applied.max(covered);
                state.commit = state.commit.max(covered);
                Some(state)
            }
            (state, _) => state,
        };
        let table = txn.open_table(MEMBERSHIP_TABLE).map_err(|e| self.redb(e))?;
        let membership = match table
            .get(&format::acceptor_key(group))
            .map_err(|e| self.redb(e))?
        {
            Some(value) => Some(
                codec::decode_membership(value.value())
                    .map_err(|e| self.corrupt(MEMBERSHIP_TABLE_NAME, &group.to_string(), e))?,
            ),
            None => None,
        };
        let Some(state) = state else {
            if records.is_empty() {
                return Ok(Durable {
                    membership,
                    ..Durable::empty()
                });
            }
            // F3: a group's records never exist without its acceptor row.
            return Err(StorageError::Corrupt {
                file: self.file.to_path_buf(),
                table: ACCEPTOR_TABLE_NAME,
                key: group.to_string(),
                reason: format!("missing, although {} log records exist", records.len()),
            });
        };
        Ok(Durable {
            promised: state.promised,
            snapshot: state.snapshot,
            records,
            commit: state.commit,
            applied: state.applied.max(state.snapshot),
            membership,
        })
    }

    /// The slot of `group`'s stored state-machine snapshot, if any.
    fn snapshot_slot(
        &self,
        txn: &redb::ReadTransaction,
        group: GroupId,
    ) -> Result<Option<Slot>, StorageError> {
        self.read_snapshot(txn, group, crate::snapshot::decode_slot)
    }

    /// Reads `group`'s snapshot value and decodes it with `decode`; a value
    /// that does not decode is corruption, reported with the reason.
    fn read_snapshot<T>(
        &self,
        txn: &redb::ReadTransaction,
        group: GroupId,
        decode: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, StorageError> {
        let table = match txn.open_table(crate::snapshot::SNAPSHOT_TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.redb(e)),
        };
        let Some(value) = table
            .get(&crate::snapshot::key(group))
            .map_err(|e| self.redb(e))?
        else {
            return Ok(None);
        };
        decode(value.value())
            .map(Some)
            .map_err(|reason| StorageError::Corrupt {
                file: self.file.to_path_buf(),
                table: crate::snapshot::SNAPSHOT_TABLE_NAME,
                key: group.to_string(),
                reason,
            })
    }

    /// Reads one group's log above its snapshot (below lies garbage not
    /// collected yet, F4), checking F5 on every record.
    fn load_records(
        &self,
        log: &redb::ReadOnlyTable<&[u8; 16], &[u8]>,
        group: GroupId,
        state: AcceptorState,
    ) -> Result<Vec<synod_paxos::SlotRecord<Bytes>>, StorageError> {
        let from = if state.snapshot == Slot(0) {
            Slot(0)
        } else {
            Slot(state.snapshot.0.saturating_add(1))
        };
        let first = format::log_key(group, from);
        let last = format::log_key(group, Slot(u64::MAX));
        let mut records = Vec::new();
        for entry in log
            .range::<&[u8; 16]>(&first..=&last)
            .map_err(|e| self.redb(e))?
        {
            let (key, value) = entry.map_err(|e| self.redb(e))?;
            let (_, slot) = format::log_key_parts(key.value());
            let describe = || format!("{group} slot {slot}");
            let record = codec::decode_record(value.value())
                .map_err(|e| self.corrupt(LOG_TABLE_NAME, &describe(), e))?;
            if record.slot != slot {
                return Err(StorageError::Corrupt {
                    file: self.file.to_path_buf(),
                    table: LOG_TABLE_NAME,
                    key: describe(),
                    reason: format!("value is for slot {}", record.slot),
                });
            }
            records.push(record);
        }
        Ok(records)
    }

    /// Every group with state on disk, in id order: what a restarting node
    /// must restore.
    pub fn groups(&self) -> Result<Vec<GroupId>, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.redb(e))?;
        let acceptor = txn.open_table(ACCEPTOR_TABLE).map_err(|e| self.redb(e))?;
        let mut groups = Vec::new();
        for entry in acceptor.iter().map_err(|e| self.redb(e))? {
            let (key, _) = entry.map_err(|e| self.redb(e))?;
            groups.push(format::acceptor_key_group(key.value()));
        }
        Ok(groups)
    }

    /// The identity this data dir belongs to (checked at open).
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The database file, for messages and metrics.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The underlying database, so that later layers (the state machine) can
    /// read their own tables. Writes go through a [`Batch`], never around it.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn dir(&self) -> PathBuf {
        self.file
            .parent()
            .map_or_else(|| self.file.to_path_buf(), Path::to_path_buf)
    }

    /// `group`'s state-machine rows as committed: what the state machine
    /// loads at restart and reads long values from.
    pub fn state(&self, group: GroupId) -> Result<Arc<crate::state::StateRows>, StorageError> {
        let id = self.state_ids(group)?.live;
        Ok(self.rows(group, id))
    }

    /// The rows under state id `id`, as `group`'s.
    pub(crate) fn rows(&self, group: GroupId, id: u64) -> Arc<crate::state::StateRows> {
        Arc::new(crate::state::StateRows::new(
            Arc::clone(&self.db),
            Arc::clone(&self.file),
            group,
            id,
        ))
    }

    /// `group`'s state ids as committed: its live rows and the stage a
    /// snapshot is being received into.
    pub fn state_ids(&self, group: GroupId) -> Result<crate::state::StateIds, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.redb(e))?;
        let table = txn
            .open_table(crate::state::STATE_IDS_TABLE)
            .map_err(|e| self.redb(e))?;
        crate::state::read_ids(&table, &self.file, group)
    }

    /// The database handle, shared with readers on other threads.
    pub(crate) fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// The database file, shared with readers on other threads.
    pub(crate) fn file_arc(&self) -> &Arc<Path> {
        &self.file
    }

    /// The snapshot blob of `group` an older version stored, and the slot
    /// it covers (a store written since then keeps rows instead).
    pub fn load_snapshot(&self, group: GroupId) -> Result<Option<(Slot, Bytes)>, StorageError> {
        let txn = self.db.begin_read().map_err(|e| self.redb(e))?;
        self.read_snapshot(&txn, group, crate::snapshot::decode)
    }

    fn redb(&self, error: impl Into<redb::Error>) -> StorageError {
        StorageError::redb(&self.file, error)
    }

    fn corrupt(&self, table: &'static str, key: &str, error: DecodeError) -> StorageError {
        StorageError::Corrupt {
            file: self.file.to_path_buf(),
            table,
            key: key.to_string(),
            reason: error.to_string(),
        }
    }
}
