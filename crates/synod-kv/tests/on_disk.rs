//! The store on disk: whatever commands ran, the rows its journal wrote
//! rebuild the same store (S1–S3 in `state`), reads of long values come
//! back from the rows, and a store replaced by a snapshot rewrites them.

mod common;

use bytes::Bytes;
use common::value;
use proptest::prelude::*;
use std::sync::Arc;
use synod_kv::{KvStore, MemoryRows};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use synod_proto::synodpb::{command::Op, Command};

#[derive(Clone, Debug)]
enum Step {
    /// Key, long value?, value byte, lease slot (0 = none).
    Put(u8, bool, u8, u8),
    Delete(u8, u8),
    /// A transaction that writes a key and then fails (missing lease).
    FailingTxn(u8),
    Grant(u8),
    Revoke(u8),
    Compact(u8),
    /// Client, how many seqs to mark answered.
    Answer(u8, u8),
    /// Write the journal, as the runtime does after a round.
    Flush,
    /// Write the journal and rebuild a store from the rows.
    Reload,
    /// Replace the store by one restored from its own snapshot.
    Replace,
}

fn key(k: u8) -> Bytes {
    Bytes::from(vec![b'a', k % 5])
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<u8>(), any::<bool>(), any::<u8>(), 0u8..3).prop_map(|(k, l, v, s)| Step::Put(k, l, v, s)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Step::Delete(a, b)),
        1 => any::<u8>().prop_map(Step::FailingTxn),
        1 => (1u8..3).prop_map(Step::Grant),
        1 => (1u8..3).prop_map(Step::Revoke),
        1 => any::<u8>().prop_map(Step::Compact),
        1 => (0u8..3, any::<u8>()).prop_map(|(c, n)| Step::Answer(c, n)),
        3 => Just(Step::Flush),
        1 => Just(Step::Reload),
        1 => Just(Step::Replace),
    ]
}

fn flush(store: &mut KvStore, rows: &MemoryRows) {
    let changes = store.take_changes();
    rows.apply(&changes);
    store.changes_written();
}

fn everything(store: &KvStore) -> Vec<(Bytes, Bytes, i64)> {
    let all = RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        ..Default::default()
    };
    let resp = store.range(&all).expect("current read");
    resp.kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.lease))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    #[test]
    fn rows_rebuild_the_store_after_any_commands(steps in prop::collection::vec(step(), 1..80)) {
        let rows = Arc::new(MemoryRows::default());
        let mut store = KvStore::default();
        store.attach(rows.clone(), true);
        // A shadow store never on disk: same commands, same answers.
        let mut shadow = KvStore::default();
        let mut seqs = [0u64; 3];
        let mut answered = [1u64; 3];
        for (i, s) in steps.iter().enumerate() {
            let client = (i % 3) as u64;
            let op = match s {
                Step::Put(k, long, v, lease) => Op::Put(PutRequest {
                    key: key(*k),
                    value: value(*long, *v),
                    lease: *lease as i64,
                    prev_kv: true,
                    ..Default::default()
                }),
                Step::Delete(a, b) => Op::DeleteRange(DeleteRangeRequest {
                    key: key(*a.min(b)),
                    range_end: key(a.max(b).saturating_add(1)),
                    prev_kv: true,
                }),
                Step::FailingTxn(k) => Op::Txn(TxnRequest {
                    success: vec![
                        RequestOp { request: Some(Request::RequestPut(PutRequest { key: key(*k), value: value(true, *k), ..Default::default() })) },
                        RequestOp { request: Some(Request::RequestPut(PutRequest { key: key(k.wrapping_add(1)), lease: 99, ..Default::default() })) },
                    ],
                    ..Default::default()
                }),
                Step::Grant(id) => Op::LeaseGrant(LeaseGrantRequest { ttl: 10, id: *id as i64 }),
                Step::Revoke(id) => Op::LeaseRevoke(LeaseRevokeRequest { id: *id as i64 }),
                Step::Compact(r) => Op::Compact(CompactionRequest {
                    revision: 1 + *r as i64 % store.revision(),
                    physical: false,
                }),
                Step::Answer(c, n) => {
                    let c = *c as usize;
                    answered[c] = (answered[c] + *n as u64 % 4).min(seqs[c] + 1);
                    continue;
                }
                Step::Flush => {
                    flush(&mut store, &rows);
                    continue;
                }
                Step::Reload => {
                    flush(&mut store, &rows);
                    let loaded = KvStore::load(rows.clone()).expect("rows load").expect("a store");
                    prop_assert_eq!(&loaded, &store);
                    loaded.check_invariants();
                    store = loaded;
                    continue;
                }
                Step::Replace => {
                    let copy = KvStore::restore(store.snapshot()).expect("own snapshot restores");
                    store.replace(copy);
                    continue;
                }
            };
            let c = client as usize;
            seqs[c] += 1;
            let command = Command { stamp: 0, client, seq: seqs[c], answered_below: answered[c], op: Some(op), caller: None, live_leases: Vec::new(), auth_fence: None };
            let a = store.apply(&command);
            let b = shadow.apply(&command);
            prop_assert_eq!(&a, &b);
            store.check_invariants();
        }
        prop_assert_eq!(everything(&store), everything(&shadow));
        prop_assert_eq!(&store, &shadow);
        flush(&mut store, &rows);
        let loaded = KvStore::load(rows.clone()).expect("rows load").expect("a store");
        prop_assert_eq!(&loaded, &shadow);
        prop_assert_eq!(everything(&loaded), everything(&shadow));
        prop_assert_eq!(loaded.hash_kv(0).unwrap(), shadow.hash_kv(0).unwrap());
    }
}

#[test]
fn an_empty_disk_loads_as_no_store_and_damaged_rows_are_refused() {
    let rows = Arc::new(MemoryRows::default());
    assert!(KvStore::load(rows.clone()).unwrap().is_none());
    let mut store = KvStore::default();
    store.attach(rows.clone(), true);
    let put = Command {
        stamp: 0,
        client: 1,
        seq: 1,
        answered_below: 1,
        op: Some(Op::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![1u8; 1000]),
            ..Default::default()
        })),
        caller: None,
        live_leases: Vec::new(),
        auth_fence: None,
    };
    store.apply(&put);
    flush(&mut store, &rows);
    // Damage the version row: its kind byte says "on disk" with a bad length.
    let (row, _) = rows
        .rows()
        .into_iter()
        .find(|(k, _)| k[0] == b'k')
        .expect("a version row");
    let mut damaged = synod_kv::StateChanges::default();
    damaged.ops.push(synod_kv::StateOp::Put {
        key: row,
        value: Bytes::from_static(b"short"),
    });
    rows.apply(&damaged);
    let err = KvStore::load(rows).unwrap_err();
    assert!(err.contains("malformed"), "{err}");
}
