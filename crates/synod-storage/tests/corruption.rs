//! Damaged values are reported as `Corrupt`, naming the table and key, and
//! never load as wrong data or panic.

mod common;

use common::{accept, ballot, fresh, ID};
use synod_paxos::{Persist, Slot};
use synod_storage::format::{self, ACCEPTOR_TABLE, LOG_TABLE, META_IDENTITY_KEY, META_TABLE};
use synod_storage::{GroupId, Storage, StorageError};

const G7: GroupId = GroupId(7);
const G8: GroupId = GroupId(8);

/// Groups 7 and 8 with records in slots 1..=3.
fn seeded() -> (tempfile::TempDir, Storage) {
    let (dir, storage) = fresh();
    let mut batch = storage.batch().unwrap();
    batch.persist(G7, &accept(ballot(2, 1), 1..=3)).unwrap();
    batch.persist(G8, &accept(ballot(2, 1), 1..=3)).unwrap();
    batch.commit().unwrap();
    (dir, storage)
}

/// Rewrites the stored value of `key` in the log table through `change`.
fn rewrite_log_value(db: &redb::Database, key: [u8; 16], change: impl FnOnce(&mut Vec<u8>)) {
    let txn = db.begin_write().unwrap();
    {
        let mut log = txn.open_table(LOG_TABLE).unwrap();
        let mut value = redb::ReadableTable::get(&log, &key)
            .unwrap()
            .expect("value exists")
            .value()
            .to_vec();
        change(&mut value);
        log.insert(&key, value.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

fn expect_corrupt(
    result: Result<impl std::fmt::Debug, StorageError>,
    table: &str,
    key: &str,
) -> String {
    match result {
        Err(StorageError::Corrupt {
            table: t,
            key: k,
            reason,
            ..
        }) if t == table && k == key => reason,
        other => panic!("expected Corrupt in {table} at {key}, got {other:?}"),
    }
}

#[test]
fn a_flipped_byte_in_a_log_record_is_reported_with_table_and_key() {
    let (dir, storage) = seeded();
    drop(storage);
    {
        let db = redb::Database::open(dir.path().join(format::FILE_NAME)).unwrap();
        rewrite_log_value(&db, format::log_key(G7, Slot(2)), |v| {
            let middle = v.len() / 2;
            v[middle] ^= 0x40;
        });
    }
    let storage = Storage::open(dir.path(), ID).unwrap();
    let err = storage.load(G7).unwrap_err();
    assert!(
        err.to_string()
            .contains("table paxos_log, key group 7 slot 2: checksum mismatch"),
        "{err}"
    );
    expect_corrupt(storage.load(G7), "paxos_log", "group 7 slot 2");
    // The damage is confined to its group.
    assert_eq!(storage.load(G8).unwrap().records.len(), 3);
}

#[test]
fn a_truncated_log_record_is_corrupt() {
    let (_dir, storage) = seeded();
    rewrite_log_value(storage.database(), format::log_key(G7, Slot(3)), |v| {
        v.truncate(v.len() - 7)
    });
    let reason = expect_corrupt(storage.load(G7), "paxos_log", "group 7 slot 3");
    assert!(reason.contains("checksum"), "{reason}");
}

#[test]
fn an_intact_record_under_the_wrong_slot_is_corrupt() {
    let (_dir, storage) = seeded();
    let slot1 = format::log_key(G7, Slot(1));
    let mut copied = Vec::new();
    rewrite_log_value(storage.database(), slot1, |v| copied = v.clone());
    rewrite_log_value(storage.database(), format::log_key(G7, Slot(2)), |v| {
        *v = copied
    });
    let reason = expect_corrupt(storage.load(G7), "paxos_log", "group 7 slot 2");
    assert!(reason.contains("value is for slot 1"), "{reason}");
}

/// Records at or below the snapshot are garbage (F4): a compaction
/// leaves them to `collect_log_garbage`, bounded per round, and a load
/// never reads them, whatever they hold.
#[test]
fn records_at_or_below_the_snapshot_are_never_read_and_collected_in_bounded_rounds() {
    let (_dir, storage) = fresh();
    let mut batch = storage.batch().unwrap();
    batch.persist(G7, &accept(ballot(2, 1), 1..=1000)).unwrap();
    batch.persist(G8, &accept(ballot(2, 1), 1..=10)).unwrap();
    batch.commit().unwrap();
    let compact = |through| Persist {
        compact_through: Some(Slot(through)),
        ..Persist::default()
    };
    let mut batch = storage.batch().unwrap();
    batch.persist(G7, &compact(900)).unwrap();
    batch.persist(G8, &compact(10)).unwrap();
    batch.commit().unwrap();
    let count = |group| {
        let txn = storage.database().begin_read().unwrap();
        let log = txn.open_table(LOG_TABLE).unwrap();
        let (first, last) = (
            format::log_key(group, Slot(0)),
            format::log_key(group, Slot(u64::MAX)),
        );
        redb::ReadableTable::range::<&[u8; 16]>(&log, &first..=&last)
            .unwrap()
            .count()
    };
    assert_eq!(count(G7), 1000, "the compaction deleted nothing yet");
    // Damage a compacted record: it is never read.
    rewrite_log_value(storage.database(), format::log_key(G7, Slot(5)), |v| {
        v.truncate(3)
    });
    let d = storage.load(G7).unwrap();
    assert_eq!((d.snapshot, d.records.len()), (Slot(900), 100));
    let mut rounds = 0;
    loop {
        let mut batch = storage.batch().unwrap();
        let deleted = batch.collect_log_garbage(300).unwrap();
        batch.commit().unwrap();
        assert!(deleted <= 300);
        if deleted == 0 {
            break;
        }
        rounds += 1;
        assert_eq!(
            storage.load(G7).unwrap().records.len(),
            100,
            "round {rounds}"
        );
    }
    assert_eq!(rounds, 4, "910 records, 300 a round");
    assert_eq!((count(G7), count(G8)), (100, 0));
    let txn = storage.database().begin_read().unwrap();
    let garbage = txn.open_table(format::LOG_GARBAGE_TABLE).unwrap();
    assert_eq!(redb::ReadableTableMetadata::len(&garbage).unwrap(), 0);
}

#[test]
fn a_damaged_or_missing_acceptor_row_is_corrupt() {
    let (_dir, storage) = seeded();
    let key = format::acceptor_key(G7);
    let txn = storage.database().begin_write().unwrap();
    txn.open_table(ACCEPTOR_TABLE)
        .unwrap()
        .insert(&key, [1u8, b'A', 0, 0].as_slice())
        .unwrap();
    txn.commit().unwrap();
    expect_corrupt(storage.load(G7), "paxos_acceptor", "group 7");

    let txn = storage.database().begin_write().unwrap();
    txn.open_table(ACCEPTOR_TABLE)
        .unwrap()
        .remove(&key)
        .unwrap();
    txn.commit().unwrap();
    let reason = expect_corrupt(storage.load(G7), "paxos_acceptor", "group 7");
    assert!(reason.contains("3 log records exist"), "{reason}");
}

#[test]
fn a_damaged_identity_record_stops_the_open() {
    let (dir, storage) = seeded();
    let txn = storage.database().begin_write().unwrap();
    txn.open_table(META_TABLE)
        .unwrap()
        .insert(META_IDENTITY_KEY, [0u8; 22].as_slice())
        .unwrap();
    txn.commit().unwrap();
    drop(storage);
    expect_corrupt(Storage::open(dir.path(), ID), "synod_meta", "identity");
}
