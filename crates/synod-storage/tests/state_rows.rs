//! The state machine's rows on disk behave like the reference rows in
//! memory (`synod_kv::MemoryRows`) for any sequence of changes, per group,
//! across a reopen; and a whole store written as rows loads back equal.

use bytes::Bytes;
use proptest::prelude::*;
use std::sync::Arc;
use synod_kv::{KvStore, MemoryRows, StateChanges, StateOp, StateSource};
use synod_paxos::Slot;
use synod_proto::etcdserverpb::PutRequest;
use synod_proto::synodpb::{command::Op, Command};
use synod_storage::{GroupId, Identity, Storage};

const ID: Identity = Identity {
    cluster_id: 9,
    node_id: 1,
};

fn row(k: u8) -> Vec<u8> {
    vec![b'k', k % 7, k / 7 % 3]
}

fn op() -> impl Strategy<Value = StateOp> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| StateOp::Put { key: row(k), value: Bytes::from(vec![v; 1 + v as usize % 300]) }),
        2 => any::<u8>().prop_map(|k| StateOp::Delete { key: row(k) }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| StateOp::DeleteRange { from: row(a.min(b)), to: row(a.max(b)) }),
    ]
}

fn changes() -> impl Strategy<Value = (u64, StateChanges)> {
    (
        1u64..3,
        prop::bool::weighted(0.1),
        prop::collection::vec(op(), 0..12),
    )
        .prop_map(|(g, clear, ops)| (g, StateChanges { clear, ops }))
}

fn all(source: &dyn StateSource) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rows = Vec::new();
    source.scan(&[], &mut |k, v| rows.push((k.to_vec(), v.to_vec())));
    rows
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn rows_on_disk_match_the_reference(rounds in prop::collection::vec(changes(), 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let models = [MemoryRows::default(), MemoryRows::default()];
        {
            let storage = Storage::open(dir.path(), ID).unwrap();
            for (g, c) in &rounds {
                let mut batch = storage.batch().unwrap();
                batch.write_state(GroupId(*g), c).unwrap();
                batch.commit().unwrap();
                models[*g as usize - 1].apply(c);
            }
        }
        let storage = Storage::open(dir.path(), ID).unwrap();
        for g in 1..=2u64 {
            let rows = storage.state(GroupId(g)).unwrap();
            let model = &models[g as usize - 1];
            prop_assert_eq!(all(rows.as_ref()), all(model));
            for k in 0..21u8 {
                prop_assert_eq!(rows.get(&row(k)), model.get(&row(k)));
            }
        }
    }
}

#[test]
fn a_store_written_as_rows_loads_back_with_long_values_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let group = GroupId(1);
    let long = Bytes::from(vec![5u8; 4096]);
    let expected = {
        let storage = Storage::open(dir.path(), ID).unwrap();
        let mut kv = storage.load_store(group).unwrap();
        for seq in 1..=50u64 {
            let put = Command {
                stamp: 0,
                client: 3,
                seq,
                answered_below: seq.saturating_sub(4).max(1),
                op: Some(Op::Put(PutRequest {
                    key: Bytes::from(format!("key/{}", seq % 20)),
                    value: if seq % 2 == 0 {
                        long.clone()
                    } else {
                        Bytes::from_static(b"short")
                    },
                    ..Default::default()
                })),
                caller: None,
                live_leases: Vec::new(),
                auth_fence: None,
            };
            kv.apply(&put);
            let mut batch = storage.batch().unwrap();
            batch.write_state(group, &kv.take_changes()).unwrap();
            batch.set_applied(group, Slot(seq)).unwrap();
            batch.commit().unwrap();
            kv.changes_written();
        }
        // A copy in memory: the store itself keeps the database open.
        KvStore::restore(kv.snapshot()).unwrap()
    };
    let storage = Storage::open(dir.path(), ID).unwrap();
    assert_eq!(storage.load(group).unwrap().applied, Slot(50));
    let loaded = storage.load_store(group).unwrap();
    assert_eq!(loaded, expected);
    assert_eq!(loaded.hash_kv(0).unwrap(), expected.hash_kv(0).unwrap());
    let source: Arc<dyn StateSource> = storage.state(group).unwrap();
    let value_rows = all(source.as_ref())
        .iter()
        .filter(|(k, v)| k[0] == b'd' && v.len() == 4096)
        .count();
    assert_eq!(value_rows, 25, "every long version has a value row");
}

/// A read finished on another thread uses a view pinned when it was
/// served: a batch committed meanwhile (a compaction deleting the row)
/// does not pull the value from under it.
#[test]
fn a_pinned_view_keeps_the_rows_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), ID).unwrap();
    let group = GroupId(1);
    let write = |op: StateOp| {
        let mut batch = storage.batch().unwrap();
        let changes = StateChanges {
            clear: false,
            ops: vec![op],
        };
        batch.write_state(group, &changes).unwrap();
        batch.commit().unwrap();
    };
    let value = Bytes::from(vec![5u8; 500]);
    write(StateOp::Put {
        key: row(1),
        value: value.clone(),
    });
    let rows = storage.state(group).unwrap();
    let pinned = rows.pin().expect("redb rows pin a view");
    write(StateOp::Delete { key: row(1) });
    rows.refresh();
    assert_eq!(rows.get(&row(1)), None);
    assert_eq!(pinned.get(&row(1)), Some(value));
}
