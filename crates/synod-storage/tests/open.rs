//! Opening a data dir: reopen keeps everything, and the wrong node, cluster,
//! format or a second opener is refused with an error that says why.

mod common;

use common::{accept, ballot, commit_hint, fresh, ID};
use synod_paxos::{Persist, Slot};
use synod_storage::format::{self, FORMAT_VERSION, META_FORMAT_KEY, META_TABLE};
use synod_storage::{GroupId, Identity, Storage, StorageError};

#[test]
fn everything_committed_is_there_after_reopen() {
    let (dir, storage) = fresh();
    let mut batch = storage.batch().unwrap();
    batch
        .persist(GroupId(1), &accept(ballot(3, 2), 1..=4))
        .unwrap();
    batch
        .persist(GroupId(9), &accept(ballot(1, 1), 1..=1))
        .unwrap();
    batch.set_applied(GroupId(1), Slot(2)).unwrap();
    batch.commit().unwrap();
    let mut lazy = storage.batch().unwrap();
    lazy.persist(GroupId(1), &commit_hint(3)).unwrap();
    lazy.commit().unwrap();
    let before = storage.load(GroupId(1)).unwrap();
    drop(storage);

    let storage = Storage::open(dir.path(), ID).unwrap();
    assert_eq!(storage.identity(), ID);
    assert_eq!(storage.groups().unwrap(), vec![GroupId(1), GroupId(9)]);
    let after = storage.load(GroupId(1)).unwrap();
    synod_storage::conformance::assert_same(&after, &before, "group 1 after reopen");
    assert_eq!(
        after.commit,
        Slot(3),
        "a clean close keeps even a lazy commit"
    );
    assert_eq!(after.applied, Slot(2));
    assert_eq!(after.records.len(), 4);
}

#[test]
fn applied_is_the_higher_of_set_applied_and_the_snapshot() {
    let (_dir, storage) = fresh();
    let mut batch = storage.batch().unwrap();
    batch
        .persist(GroupId(1), &accept(ballot(1, 1), 1..=6))
        .unwrap();
    batch.set_applied(GroupId(1), Slot(5)).unwrap();
    batch.commit().unwrap();
    assert_eq!(storage.load(GroupId(1)).unwrap().applied, Slot(5));

    let compact = Persist {
        compact_through: Some(Slot(6)),
        ..Persist::default()
    };
    let mut batch = storage.batch().unwrap();
    batch.persist(GroupId(1), &compact).unwrap();
    batch.commit().unwrap();
    let d = storage.load(GroupId(1)).unwrap();
    assert_eq!((d.snapshot, d.applied), (Slot(6), Slot(6)));
}

fn open_as(dir: &std::path::Path, cluster_id: u64, node_id: u64) -> StorageError {
    Storage::open(
        dir,
        Identity {
            cluster_id,
            node_id,
        },
    )
    .expect_err("identity mismatch must be refused")
}

#[test]
fn another_nodes_data_dir_is_refused_saying_whose_it_is() {
    let (dir, storage) = fresh();
    drop(storage);
    let err = open_as(dir.path(), 123, 2);
    let StorageError::IdentityMismatch {
        stored,
        requested,
        which,
        ..
    } = &err
    else {
        panic!("expected IdentityMismatch, got {err:?}");
    };
    assert_eq!(*stored, ID);
    assert_eq!(
        *requested,
        Identity {
            cluster_id: 123,
            node_id: 2
        }
    );
    assert_eq!(*which, "cluster id and node id");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "data dir {} belongs to node 1 of cluster 456, not node 2 of cluster 123",
            dir.path().display()
        )),
        "{message}"
    );

    let err = open_as(dir.path(), 456, 2);
    assert!(
        matches!(
            err,
            StorageError::IdentityMismatch {
                which: "node id",
                ..
            }
        ),
        "{err:?}"
    );
    let err = open_as(dir.path(), 123, 1);
    assert!(
        matches!(
            err,
            StorageError::IdentityMismatch {
                which: "cluster id",
                ..
            }
        ),
        "{err:?}"
    );
    // The refusals changed nothing: the owner still opens it.
    Storage::open(dir.path(), ID).expect("owner reopens");
}

#[test]
fn an_unknown_format_version_is_refused() {
    let (dir, storage) = fresh();
    drop(storage);
    let file = dir.path().join(format::FILE_NAME);
    {
        let db = redb::Database::open(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            // The frozen format record layout (F1), with version 99.
            let mut value = vec![1, b'F'];
            value.extend_from_slice(&99u32.to_le_bytes());
            let crc = crc32fast::hash(&value);
            value.extend_from_slice(&crc.to_le_bytes());
            let mut meta = txn.open_table(META_TABLE).unwrap();
            meta.insert(META_FORMAT_KEY, value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Storage::open(dir.path(), ID).expect_err("format 99 must be refused");
    assert!(
        matches!(
            err,
            StorageError::UnsupportedFormat {
                found: 99,
                supported: FORMAT_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("format version 99"), "{err}");
}

#[test]
fn a_second_opener_is_told_another_synod_uses_the_dir() {
    let (dir, _storage) = fresh();
    let err = Storage::open(dir.path(), ID).expect_err("locked");
    assert!(matches!(err, StorageError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("is another synod using this data dir?"),
        "{err}"
    );
}

#[test]
fn a_foreign_redb_file_is_not_taken_for_a_synod_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(dir.path().join(format::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let other: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("someone_else");
        txn.open_table(other).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let err = Storage::open(dir.path(), ID).expect_err("foreign file");
    assert!(
        matches!(
            err,
            StorageError::Corrupt {
                table: "synod_meta",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_unusable_data_dir_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let err = Storage::open(&blocker.join("data"), ID).expect_err("parent is a file");
    assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}
