//! The write path: a batch is all-or-nothing, fails stop, fsyncs only when a
//! persist needs it, and carries other layers' tables in its transaction.

mod common;

use common::{accept, ballot, commit_hint, fresh, record};
use synod_paxos::{Persist, Slot};
use synod_storage::conformance::assert_same;
use synod_storage::format::{self, ACCEPTOR_TABLE};
use synod_storage::{GroupId, Storage, StorageError};

const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);

/// Commits a first state for G1 and G2, so rollbacks have something to keep.
fn seeded() -> (tempfile::TempDir, Storage) {
    let (dir, storage) = fresh();
    let mut batch = storage.batch().unwrap();
    batch.persist(G1, &accept(ballot(1, 1), 1..=3)).unwrap();
    batch.persist(G2, &accept(ballot(1, 1), 1..=2)).unwrap();
    batch.commit().unwrap();
    (dir, storage)
}

/// Writes to both groups: a promise, records, a commit hint and a compaction.
fn busy_batch(storage: &Storage) -> synod_storage::Batch {
    let mut batch = storage.batch().unwrap();
    let persist = Persist {
        commit: Some(Slot(3)),
        compact_through: Some(Slot(2)),
        ..accept(ballot(5, 2), 3..=9)
    };
    batch.persist(G1, &persist).unwrap();
    batch.persist(G2, &accept(ballot(6, 3), 1..=1)).unwrap();
    batch.set_applied(G1, Slot(2)).unwrap();
    batch
}

#[test]
fn an_aborted_batch_leaves_every_group_unchanged() {
    let (_dir, storage) = seeded();
    let before = (storage.load(G1).unwrap(), storage.load(G2).unwrap());
    busy_batch(&storage).abort().unwrap();
    assert_same(&storage.load(G1).unwrap(), &before.0, "g1 after abort");
    assert_same(&storage.load(G2).unwrap(), &before.1, "g2 after abort");
    drop(busy_batch(&storage));
    assert_same(&storage.load(G1).unwrap(), &before.0, "g1 after drop");
    assert_same(&storage.load(G2).unwrap(), &before.1, "g2 after drop");
}

#[test]
fn uncommitted_writes_are_invisible_to_readers() {
    let (_dir, storage) = seeded();
    let before = storage.load(G1).unwrap();
    let batch = busy_batch(&storage);
    assert_same(
        &storage.load(G1).unwrap(),
        &before,
        "while the batch is open",
    );
    batch.commit().unwrap();
    assert_eq!(storage.load(G1).unwrap().promised, ballot(5, 2));
}

/// Overwrites G2's acceptor row with garbage, bypassing the codec.
fn corrupt_g2_row(storage: &Storage) {
    let txn = storage.database().begin_write().unwrap();
    txn.open_table(ACCEPTOR_TABLE)
        .unwrap()
        .insert(&format::acceptor_key(G2), b"garbage".as_slice())
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_failed_persist_rolls_back_the_whole_batch_and_poisons_it() {
    let (_dir, storage) = seeded();
    corrupt_g2_row(&storage);
    let before = storage.load(G1).unwrap();
    let mut batch = storage.batch().unwrap();
    batch.persist(G1, &accept(ballot(7, 1), 4..=5)).unwrap();
    let err = batch.persist(G2, &accept(ballot(7, 1), 3..=3)).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Corrupt {
                table: "paxos_acceptor",
                ..
            }
        ),
        "{err:?}"
    );
    // Every later call, and the commit, refuse: nothing half-done lands.
    let later = batch.persist(G1, &commit_hint(5)).unwrap_err();
    assert!(
        matches!(later, StorageError::BatchFailed { .. }),
        "{later:?}"
    );
    let commit = batch.commit().unwrap_err();
    assert!(
        matches!(commit, StorageError::BatchFailed { .. }),
        "{commit:?}"
    );
    assert_same(&storage.load(G1).unwrap(), &before, "g1 after failed batch");
}

#[test]
fn only_commit_hints_make_a_lazy_batch() {
    let (_dir, storage) = seeded();
    let mut batch = storage.batch().unwrap();
    batch.persist(G1, &commit_hint(2)).unwrap();
    batch.persist(G2, &Persist::default()).unwrap();
    batch.set_applied(G1, Slot(1)).unwrap();
    assert!(
        !batch.must_sync(),
        "hints, empties and applied slots are lazy"
    );
    batch.persist(G2, &accept(ballot(2, 1), 3..=3)).unwrap();
    assert!(
        batch.must_sync(),
        "one syncing persist makes the batch sync"
    );
    batch.abort().unwrap();

    let mut batch = storage.batch().unwrap();
    batch.persist(G1, &commit_hint(3)).unwrap();
    batch.require_sync();
    assert!(batch.must_sync(), "require_sync forces an fsync");
    batch.abort().unwrap();

    for persist in [
        Persist {
            promised: Some(ballot(9, 9)),
            ..Persist::default()
        },
        Persist {
            records: vec![record(4, "x", false)],
            ..Persist::default()
        },
        Persist {
            compact_through: Some(Slot(1)),
            ..Persist::default()
        },
    ] {
        let mut batch = storage.batch().unwrap();
        batch.persist(G1, &persist).unwrap();
        assert!(batch.must_sync(), "{persist:?} must sync");
        batch.abort().unwrap();
    }
}

#[test]
fn a_lazy_batch_is_visible_at_once() {
    let (_dir, storage) = seeded();
    let mut batch = storage.batch().unwrap();
    batch.persist(G1, &commit_hint(3)).unwrap();
    batch.commit().unwrap();
    assert_eq!(storage.load(G1).unwrap().commit, Slot(3));
}

const KV: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("kv_test");

#[test]
fn other_tables_commit_and_roll_back_with_the_batch() {
    let (_dir, storage) = seeded();
    let read_kv = |storage: &Storage| -> Option<u64> {
        let txn = storage.database().begin_read().unwrap();
        let table = match txn.open_table(KV) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return None,
            Err(e) => panic!("{e}"),
        };
        redb::ReadableTable::get(&table, "x")
            .unwrap()
            .map(|v| v.value())
    };

    let mut batch = storage.batch().unwrap();
    batch
        .transaction()
        .open_table(KV)
        .unwrap()
        .insert("x", 1)
        .unwrap();
    batch.set_applied(G1, Slot(3)).unwrap();
    batch.abort().unwrap();
    assert_eq!(read_kv(&storage), None, "state rolled back");
    assert_eq!(
        storage.load(G1).unwrap().applied,
        Slot(0),
        "applied rolled back"
    );

    let mut batch = storage.batch().unwrap();
    batch
        .transaction()
        .open_table(KV)
        .unwrap()
        .insert("x", 1)
        .unwrap();
    batch.set_applied(G1, Slot(3)).unwrap();
    batch.commit().unwrap();
    assert_eq!(read_kv(&storage), Some(1), "state committed");
    assert_eq!(
        storage.load(G1).unwrap().applied,
        Slot(3),
        "with its applied slot"
    );
}

#[test]
#[should_panic(expected = "group 1: promise regressed 1.1 -> 0.5")]
fn a_regressing_promise_is_a_caller_bug() {
    let (_dir, storage) = seeded();
    let mut batch = storage.batch().unwrap();
    let _ = batch.persist(G1, &accept(ballot(0, 5), 1..=1));
}

#[test]
#[should_panic(expected = "group 1: applied slot regressed 3 -> 2")]
fn a_regressing_applied_slot_is_a_caller_bug() {
    let (_dir, storage) = seeded();
    let mut batch = storage.batch().unwrap();
    batch.set_applied(G1, Slot(3)).unwrap();
    let _ = batch.set_applied(G1, Slot(2));
}
