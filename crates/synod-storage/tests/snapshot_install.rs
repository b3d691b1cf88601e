//! A snapshot and the end of the log it replaces are one atomic write (F8).
//!
//! The bug this guards against: a node installed a snapshot received from
//! the leader (state machine and applied slot in one transaction) but left
//! the log compaction to its next batch. Killed in between, it restarted
//! with the new applied slot over the old log, and `Replica::restore` took
//! every stored record up to the applied slot as chosen, including values
//! it had accepted under a ballot that was deposed before they were chosen.

mod common;

use common::{accept, ballot, fresh};
use synod_paxos::{Config, NodeId, Replica, Slot, Time};
use synod_storage::snapshot::{encode, key, SNAPSHOT_TABLE};
use synod_storage::GroupId;

const G: GroupId = GroupId(1);

#[test]
fn a_stored_snapshot_compacts_the_log_it_covers_in_its_own_transaction() {
    let (_dir, storage) = fresh();
    // Accepted under ballot (1, 1), never chosen: the leader that sent them
    // was deposed and the slots were chosen with other values elsewhere.
    let mut batch = storage.batch().unwrap();
    batch.persist(G, &accept(ballot(1, 1), 1..=5)).unwrap();
    batch.commit().unwrap();

    // The snapshot from the new leader covers slots 1..=8. Nothing else is
    // written: a crash here must already leave a consistent file.
    let mut batch = storage.batch().unwrap();
    batch.put_snapshot(G, Slot(8), b"state at 8", None).unwrap();
    batch.commit().unwrap();

    let d = storage.load(G).unwrap();
    assert_eq!((d.snapshot, d.applied), (Slot(8), Slot(8)));
    assert!(
        d.records.is_empty(),
        "records under the snapshot survived: {:?}",
        d.records.iter().map(|r| r.slot).collect::<Vec<_>>()
    );

    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let replica: Replica<bytes::Bytes> =
        Replica::restore(Config::majority(NodeId(1), &ids), d, Time(0)).unwrap();
    assert_eq!(replica.log().snapshot(), Slot(8));
}

#[test]
fn a_snapshot_above_the_compaction_point_hides_the_records_it_covers() {
    // A file written before the rule above: the snapshot (and its applied
    // slot) committed, the compaction not.
    let (_dir, storage) = fresh();
    let mut batch = storage.batch().unwrap();
    batch.persist(G, &accept(ballot(1, 1), 1..=9)).unwrap();
    batch.commit().unwrap();
    let mut batch = storage.batch().unwrap();
    {
        let mut table = batch.transaction().open_table(SNAPSHOT_TABLE).unwrap();
        let mut value = Vec::new();
        encode(Slot(6), b"state at 6", &mut value);
        table.insert(&key(G), value.as_slice()).unwrap();
    }
    batch.set_applied(G, Slot(6)).unwrap();
    batch.require_sync();
    batch.commit().unwrap();

    let d = storage.load(G).unwrap();
    assert_eq!((d.snapshot, d.applied), (Slot(6), Slot(6)));
    let slots: Vec<u64> = d.records.iter().map(|r| r.slot.0).collect();
    assert_eq!(slots, vec![7, 8, 9], "only the log after the snapshot");
}

/// F9: the snapshot carries the configuration at its slot (the log that
/// chose it is compacted away), and an older record written after it in
/// the same batch does not take its place.
#[test]
fn a_snapshot_keeps_the_configuration_at_its_slot() {
    use synod_paxos::{Configuration, Membership, MembershipRecord, Persist};
    let three = Configuration::Stable(Membership::new(&[NodeId(1), NodeId(2), NodeId(3)], &[]));
    let four = Configuration::Stable(Membership::new(
        &[NodeId(1), NodeId(2), NodeId(3), NodeId(4)],
        &[],
    ));
    let (_dir, storage) = fresh();
    let mut batch = storage.batch().unwrap();
    batch.persist(G, &accept(ballot(1, 1), 1..=9)).unwrap();
    batch
        .put_snapshot(G, Slot(8), b"state at 8", Some(&four))
        .unwrap();
    let older = Persist {
        membership: Some(MembershipRecord {
            slot: Slot(5),
            configuration: three,
        }),
        ..Persist::default()
    };
    batch.persist(G, &older).unwrap();
    batch.commit().unwrap();
    let d = storage.load(G).unwrap();
    let record = d.membership.expect("a membership record");
    assert_eq!((record.slot, record.configuration), (Slot(8), four));
    assert_eq!(d.records.len(), 1, "only slot 9 is left of the log");
}
