//! The MVCC store against a model that keeps a full copy of the key space at
//! every revision: any read at any retained revision must agree.

use bytes::Bytes;
use proptest::prelude::*;
use std::collections::BTreeMap;
use synod_kv::KvStore;
use synod_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
use synod_proto::synodpb::{command::Op, Command};

#[derive(Clone, Debug)]
enum Step {
    Put(u8, u8),
    Delete(u8, u8),
    Compact(u8),
}

fn key(k: u8) -> Bytes {
    Bytes::from(vec![b'a' + (k % 6)])
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Step::Delete(a, b)),
        1 => any::<u8>().prop_map(Step::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn reads_at_every_retained_revision_match_the_model(steps in prop::collection::vec(step(), 1..60)) {
        let mut store = KvStore::default();
        // model[rev] = the key space at that revision.
        let mut model: BTreeMap<i64, BTreeMap<Bytes, Bytes>> = BTreeMap::new();
        model.insert(1, BTreeMap::new());
        for (seq, s) in steps.iter().enumerate() {
            let rev = store.revision();
            let mut next = model[&rev].clone();
            let op = match s {
                Step::Put(k, v) => {
                    next.insert(key(*k), Bytes::from(vec![*v]));
                    Op::Put(PutRequest { key: key(*k), value: Bytes::from(vec![*v]), ..Default::default() })
                }
                Step::Delete(a, b) => {
                    let (lo, hi) = (key(*a.min(b)), key(*a.max(b)));
                    next.retain(|k, _| !(k >= &lo && k < &hi));
                    Op::DeleteRange(DeleteRangeRequest { key: lo, range_end: hi, prev_kv: false })
                }
                Step::Compact(r) => Op::Compact(CompactionRequest { revision: 1 + *r as i64 % rev.max(1), physical: false }),
            };
            store.apply(&Command { client: 1, seq: seq as u64 + 1, op: Some(op), ..Default::default() });
            store.mvcc().check_invariants();
            if store.revision() != rev {
                model.insert(store.revision(), next);
            }
        }
        for (rev, expected) in &model {
            let r = RangeRequest { key: Bytes::from_static(b"\0"), range_end: Bytes::from_static(b"\0"), revision: *rev, ..Default::default() };
            match store.range(&r) {
                Ok(resp) => {
                    let got: BTreeMap<Bytes, Bytes> = resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
                    prop_assert_eq!(&got, expected, "revision {}", rev);
                }
                Err(_) => prop_assert!(*rev < store.compact_revision(), "read at {} refused above compaction {}", rev, store.compact_revision()),
            }
        }
    }
}
