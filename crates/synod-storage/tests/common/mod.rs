//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use bytes::Bytes;
use std::sync::Arc;
use synod_paxos::{Ballot, NodeId, Persist, Slot, SlotRecord, Value};
use synod_storage::conformance::Disk;
use synod_storage::{GroupId, Identity, Storage, StorageError};
use tempfile::TempDir;

/// The identity most tests open with.
pub const ID: Identity = Identity {
    cluster_id: 456,
    node_id: 1,
};

/// A fresh data dir and a storage opened on it.
pub fn fresh() -> (TempDir, Storage) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path(), ID).expect("open");
    (dir, storage)
}

/// The redb storage behind the conformance suite's `Disk` interface.
pub struct StorageDisk {
    dir: TempDir,
    storage: Option<Storage>,
}

impl StorageDisk {
    pub fn new() -> StorageDisk {
        let (dir, storage) = fresh();
        StorageDisk {
            dir,
            storage: Some(storage),
        }
    }

    fn storage(&self) -> &Storage {
        self.storage.as_ref().expect("open")
    }
}

impl Disk for StorageDisk {
    type Error = StorageError;

    fn write(&mut self, batch: &[(GroupId, Persist<Bytes>)]) -> Result<(), StorageError> {
        let mut b = self.storage().batch()?;
        for (group, persist) in batch {
            b.persist(*group, persist)?;
        }
        b.commit()
    }

    fn load(&mut self, group: GroupId) -> Result<synod_paxos::Durable<Bytes>, StorageError> {
        self.storage().load(group)
    }

    fn reopen(&mut self) -> Result<(), StorageError> {
        // Close first: the file lock allows one open at a time.
        self.storage = None;
        self.storage = Some(Storage::open(self.dir.path(), ID)?);
        Ok(())
    }
}

pub fn ballot(round: u64, node: u64) -> Ballot {
    Ballot {
        round,
        node: NodeId(node),
    }
}

pub fn record(slot: u64, command: &str, chosen: bool) -> SlotRecord<Bytes> {
    SlotRecord {
        slot: Slot(slot),
        ballot: ballot(1, 1),
        value: Value::Batch(Arc::from(vec![Bytes::copy_from_slice(command.as_bytes())])),
        chosen,
    }
}

/// A persist that must sync: a promise and records.
pub fn accept(promised: Ballot, slots: std::ops::RangeInclusive<u64>) -> Persist<Bytes> {
    Persist {
        promised: Some(promised),
        records: slots.map(|s| record(s, &format!("v{s}"), false)).collect(),
        ..Persist::default()
    }
}

/// A persist that may be written lazily: only a commit hint.
pub fn commit_hint(slot: u64) -> Persist<Bytes> {
    Persist {
        commit: Some(Slot(slot)),
        ..Persist::default()
    }
}
