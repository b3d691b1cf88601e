//! A store's rows cut at revision T (`synod_kv::cut`) rebuild the store
//! as it was at T: every read at or below T answers as the original
//! store answered it, and the rebuilt store stands at T. This is what a
//! backup of a sharded cluster relies on (design 0020).

mod common;

use bytes::Bytes;
use common::{read_at, value};
use proptest::prelude::*;
use std::sync::Arc;
use synod_kv::cut::{cut_row, CutRow};
use synod_kv::{KvStore, MemoryRows, StateChanges, StateOp};
use synod_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest};
use synod_proto::synodpb::{command::Op, Command};

#[derive(Clone, Debug)]
enum Step {
    /// Key, long value?, value byte.
    Put(u8, bool, u8),
    Delete(u8, u8),
    /// Compact at this share (of 256) of the revision.
    Compact(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(k, l, v)| Step::Put(k, l, v)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Step::Delete(a, b)),
        1 => any::<u8>().prop_map(Step::Compact),
    ]
}

fn key(k: u8) -> Bytes {
    Bytes::from(vec![b'a', k % 6])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn rows_cut_at_a_revision_rebuild_the_store_as_it_was_then(
        steps in prop::collection::vec(step(), 1..60),
        share in any::<u8>(),
    ) {
        let rows = Arc::new(MemoryRows::default());
        let mut store = KvStore::default();
        store.attach(rows.clone(), true);
        for (i, s) in steps.iter().enumerate() {
            let op = match s {
                Step::Put(k, long, v) => Op::Put(PutRequest {
                    key: key(*k),
                    value: value(*long, *v),
                    ..Default::default()
                }),
                Step::Delete(a, b) => Op::DeleteRange(DeleteRangeRequest {
                    key: key(*a.min(b)),
                    range_end: key(a.max(b).saturating_add(1)),
                    ..Default::default()
                }),
                Step::Compact(at) => Op::Compact(CompactionRequest {
                    revision: (store.revision() * i64::from(*at) / 256).max(1),
                    ..Default::default()
                }),
            };
            store.apply(&Command {
                client: 1,
                seq: i as u64 + 1,
                answered_below: i as u64 + 1,
                op: Some(op),
                ..Default::default()
            });
            rows.apply(&store.take_changes());
            store.changes_written();
        }
        let floor = store.compact_revision().max(1);
        let at = floor + (store.revision() - floor) * i64::from(share) / 255;
        let mut kept = Vec::new();
        for (row, value) in rows.rows() {
            match cut_row(&row, &value, at).expect("a store at or past the cut") {
                CutRow::Keep => kept.push(StateOp::Put { key: row, value }),
                CutRow::Drop => {}
                CutRow::Replace(v) => kept.push(StateOp::Put { key: row, value: Bytes::from(v) }),
            }
        }
        let cut_rows = Arc::new(MemoryRows::default());
        cut_rows.apply(&StateChanges { clear: false, ops: kept });
        let cut = KvStore::load(cut_rows).expect("cut rows are a valid store").expect("a meta row");
        prop_assert_eq!(cut.revision(), at);
        prop_assert_eq!(cut.compact_revision(), store.compact_revision());
        prop_assert_eq!(read_at(&cut, b"\0", None, 0), read_at(&store, b"\0", None, at));
        for r in store.compact_revision().max(1)..=at {
            prop_assert_eq!(read_at(&cut, b"\0", None, r), read_at(&store, b"\0", None, r), "read at {}", r);
        }
        // A long value of the cut store still reads back from its rows.
        for (k, v, ..) in read_at(&cut, b"\0", None, 0) {
            prop_assert!(!v.is_empty(), "{:?} has its value", k);
        }
    }
}
