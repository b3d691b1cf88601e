//! Crash consistency of the durability choice: a disk that keeps only what
//! was fsynced shows that a syncing batch survives a crash, that a lazy batch
//! (commit hints only) costs no fsync and is what a crash may lose, and that
//! the next syncing batch makes it durable too.

mod common;

use common::{accept, ballot, commit_hint, ID};
use synod_paxos::Slot;
use synod_storage::{GroupId, SimulatedFile, Storage};

fn open(file: SimulatedFile) -> Storage {
    file.open(ID).unwrap()
}

const G: GroupId = GroupId(1);

#[test]
fn a_crash_loses_only_lazy_commit_hints() {
    let backend = SimulatedFile::new();
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
    let after_crash = backend.durable_copy();
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
    let d = open(backend.durable_copy()).load(G).unwrap();
    assert_eq!(d.commit, Slot(3), "made durable by the next synced batch");
    assert_eq!(d.records.len(), 4);
    drop(storage);
}
