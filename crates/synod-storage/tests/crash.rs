//! Crash consistency of the durability choice: a disk that keeps only what
//! was fsynced shows that a syncing batch survives a crash, that a lazy batch
//! (commit hints only) costs no fsync and is what a crash may lose, and that
//! the next syncing batch makes it durable too.

mod common;

use common::{accept, ballot, commit_hint, ID};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use synod_paxos::Slot;
use synod_storage::{GroupId, Storage};

/// A file whose durable image is the live bytes as of the last fsync.
#[derive(Debug, Default)]
struct Disk {
    live: Vec<u8>,
    durable: Vec<u8>,
    syncs: u64,
}

#[derive(Debug, Clone, Default)]
struct CrashBackend(Arc<Mutex<Disk>>);

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "access past the end")
}

impl redb::StorageBackend for CrashBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().live.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let disk = self.0.lock().unwrap();
        let start = offset as usize;
        let bytes = disk.live.get(start..start + len).ok_or_else(out_of_range)?;
        Ok(bytes.to_vec())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.lock().unwrap().live.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        let mut disk = self.0.lock().unwrap();
        disk.durable = disk.live.clone();
        disk.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut disk = self.0.lock().unwrap();
        let start = offset as usize;
        let target = disk
            .live
            .get_mut(start..start + data.len())
            .ok_or_else(out_of_range)?;
        target.copy_from_slice(data);
        Ok(())
    }
}

fn open(backend: CrashBackend) -> Storage {
    let db = redb::Builder::new().create_with_backend(backend).unwrap();
    Storage::from_database(db, PathBuf::from("crash-test.redb"), ID).unwrap()
}

impl CrashBackend {
    fn syncs(&self) -> u64 {
        self.0.lock().unwrap().syncs
    }

    /// The process dies: only the fsynced image is left, on a new "file".
    fn crash(&self) -> CrashBackend {
        let image = self.0.lock().unwrap().durable.clone();
        CrashBackend(Arc::new(Mutex::new(Disk {
            live: image.clone(),
            durable: image,
            syncs: 0,
        })))
    }
}

const G: GroupId = GroupId(1);

#[test]
fn a_crash_loses_only_lazy_commit_hints() {
    let backend = CrashBackend::default();
    let storage = open(backend.clone());

    let synced = backend.syncs();
    let mut batch = storage.batch().unwrap();
    let mut persist = accept(ballot(2, 1), 1..=3);
    persist.commit = Some(Slot(1));
    batch.persist(G, &persist).unwrap();
    batch.commit().unwrap();
    assert!(backend.syncs() > synced, "a syncing batch fsyncs");

    let synced = backend.syncs();
    let mut batch = storage.batch().unwrap();
    batch.persist(G, &commit_hint(3)).unwrap();
    batch.commit().unwrap();
    assert_eq!(backend.syncs(), synced, "a lazy batch does not fsync");
    assert_eq!(storage.load(G).unwrap().commit, Slot(3), "but is visible");

    // Crash now: the promise and the records survive, the lazy hint is lost.
    let after_crash = backend.crash();
    let d = open(after_crash).load(G).unwrap();
    assert_eq!(d.promised, ballot(2, 1));
    assert_eq!(d.records, persist.records);
    assert_eq!(
        d.commit,
        Slot(1),
        "the lazy hint was lost, the synced one kept"
    );

    // The next syncing batch carries the lazy one with it.
    let mut batch = storage.batch().unwrap();
    batch.persist(G, &accept(ballot(2, 1), 4..=4)).unwrap();
    batch.commit().unwrap();
    let d = open(backend.crash()).load(G).unwrap();
    assert_eq!(d.commit, Slot(3), "made durable by the next synced batch");
    assert_eq!(d.records.len(), 4);
    drop(storage);
}
