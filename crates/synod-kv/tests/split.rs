//! A shard's split (design 0016): whatever the store held, the two halves
//! together answer every read at every retained revision as the whole
//! did, each holds only its own keys (K1), each one's rows rebuild it, and
//! commands that name the other half's keys are refused unremembered.

mod common;

use bytes::Bytes;
use common::{read_at, value};
use proptest::prelude::*;
use std::sync::Arc;
use synod_kv::{KvError, KvStore, MemoryRows, Shard};
use synod_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
use synod_proto::synodpb::{command::Op, outcome, Command, SplitShard};

fn key(k: u8) -> Bytes {
    Bytes::from(vec![b'k', b'a' + k % 20])
}

#[derive(Clone, Debug)]
enum Step {
    Put(u8, bool, u8),
    Delete(u8),
    Compact(u8),
    Flush,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(k, l, v)| Step::Put(k, l, v)),
        2 => any::<u8>().prop_map(Step::Delete),
        1 => any::<u8>().prop_map(Step::Compact),
        2 => Just(Step::Flush),
    ]
}

fn flush(store: &mut KvStore, rows: &MemoryRows) {
    let changes = store.take_changes();
    rows.apply(&changes);
    store.changes_written();
}

/// The refusal an outcome records, if it is one.
fn refusal(o: &synod_proto::synodpb::Outcome) -> Option<KvError> {
    match &o.result {
        Some(outcome::Result::Error(e)) => Some(synod_kv::outcome_error(e)),
        _ => None,
    }
}

struct Client {
    seq: u64,
}

impl Client {
    fn command(&mut self, op: Op) -> Command {
        self.seq += 1;
        Command {
            client: 7,
            seq: self.seq,
            answered_below: self.seq,
            op: Some(op),
            ..Default::default()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]
    #[test]
    fn the_halves_of_a_split_answer_as_the_whole_did(
        steps in prop::collection::vec(step(), 1..60),
        at in 1u8..20,
    ) {
        let rows = Arc::new(MemoryRows::default());
        let mut store = KvStore::default();
        store.attach(rows.clone(), true);
        store.set_shard_if_unset(Shard::new(Bytes::from_static(b"k"), Some(Bytes::from_static(b"l"))));
        let mut client = Client { seq: 0 };
        for s in &steps {
            let op = match s {
                Step::Put(k, long, v) => Op::Put(PutRequest { key: key(*k), value: value(*long, *v), ..Default::default() }),
                Step::Delete(k) => Op::DeleteRange(DeleteRangeRequest { key: key(*k), ..Default::default() }),
                Step::Compact(r) => Op::Compact(CompactionRequest { revision: 1 + *r as i64 % store.revision(), physical: false }),
                Step::Flush => {
                    flush(&mut store, &rows);
                    continue;
                }
            };
            store.apply(&client.command(op));
        }
        let whole = store.clone();
        let at = key(at);
        let applied = store.apply(&client.command(Op::Split(SplitShard { at: at.clone(), child: 9 })));
        let Some(outcome::Result::Split(left)) = applied.outcome.result else {
            panic!("split refused: {:?}", applied.outcome);
        };
        prop_assert_eq!(&left.end, &at);
        prop_assert_eq!(left.right, 9);
        let (id, mut child) = store.take_split().expect("a new store");
        prop_assert_eq!(id, 9);
        store.check_invariants();
        child.check_invariants();
        prop_assert_eq!(child.revision(), whole.revision());
        prop_assert_eq!(child.compact_revision(), whole.compact_revision());
        prop_assert_eq!(child.shard().unwrap().start.clone(), at.clone());
        // Every retained revision reads the same from the two halves.
        for rev in whole.compact_revision().max(1)..=whole.revision() {
            let mut both = read_at(&store, b"k", Some(&at), rev);
            both.extend(read_at(&child, &at, Some(b"l"), rev));
            prop_assert_eq!(both, read_at(&whole, b"k", Some(b"l"), rev), "at revision {}", rev);
        }
        // Each half's rows rebuild it.
        flush(&mut store, &rows);
        let loaded = KvStore::load(rows.clone()).expect("rows load").expect("a store");
        prop_assert_eq!(&loaded, &store);
        let child_rows = Arc::new(MemoryRows::default());
        child.attach(child_rows.clone(), true);
        flush(&mut child, &child_rows);
        let loaded = KvStore::load(child_rows).expect("rows load").expect("a store");
        prop_assert_eq!(&loaded, &child);
        // The parent refuses the moved keys, unremembered; the child
        // takes them; reads across the point are refused.
        let put = |k: &Bytes| Op::Put(PutRequest { key: k.clone(), value: Bytes::from_static(b"v"), ..Default::default() });
        let command = client.command(put(&at));
        let refused = store.apply(&command);
        prop_assert!(refused.duplicate, "a refusal is not remembered");
        prop_assert_eq!(store.session_outcome(7, command.seq), None);
        prop_assert_eq!(refusal(&refused.outcome), Some(KvError::WrongShard));
        let taken = child.apply(&command);
        prop_assert!(matches!(taken.outcome.result, Some(outcome::Result::Put(_))));
        let across = RangeRequest { key: Bytes::from_static(b"k"), range_end: Bytes::from_static(b"l"), ..Default::default() };
        prop_assert_eq!(store.range(&across).err(), Some(KvError::WrongShard));
        prop_assert_eq!(child.range(&across).err(), Some(KvError::WrongShard));
        // A split point outside the shard, or at its start, is refused.
        for bad in [at.clone(), Bytes::from_static(b"z"), Bytes::from_static(b"k")] {
            let applied = store.apply(&client.command(Op::Split(SplitShard { at: bad, child: 10 })));
            prop_assert!(store.take_split().is_none());
            prop_assert!(matches!(applied.outcome.result, Some(outcome::Result::Error(_))));
        }
    }
}

#[test]
fn a_store_that_is_not_a_shard_does_not_split() {
    let mut store = KvStore::default();
    let applied = store.apply(&Command {
        client: 1,
        seq: 1,
        op: Some(Op::Split(SplitShard {
            at: Bytes::from_static(b"m"),
            child: 9,
        })),
        ..Default::default()
    });
    assert_eq!(
        refusal(&applied.outcome),
        Some(KvError::InvalidArgument(
            synod_kv::validate::SPLIT_NOT_SHARD
        ))
    );
    assert!(store.take_split().is_none());
}

/// A store holding `keys`, each with a value of `size` bytes.
fn holding(keys: &[&str], size: usize) -> KvStore {
    let mut store = KvStore::default();
    let mut c = Client { seq: 0 };
    for k in keys {
        let put = Op::Put(PutRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::from(vec![b'v'; size]),
            ..Default::default()
        });
        assert_eq!(refusal(&store.apply(&c.command(put)).outcome), None);
    }
    store
}

#[test]
fn a_shard_splits_between_key_directories_near_its_middle() {
    // Three locks of five contenders each: the middle key lies inside
    // lock b's keys, the split keeps them together at b's directory.
    let keys: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|l| (0..5).map(move |i| format!("locks/{l}/{i:x}")))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let store = holding(&keys, 100);
    let middle = store.mvcc().split_key().unwrap();
    assert!(middle == "locks/b/" || middle == "locks/c/", "{middle:?}");
    // Keys without directories split at the middle key.
    let flat: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let flat: Vec<&str> = flat.iter().map(String::as_str).collect();
    assert_eq!(holding(&flat, 100).mvcc().split_key().unwrap(), "k5");
    // One directory holding nearly everything: no boundary in the
    // middle half, so the middle key (inside the directory) is used.
    let mut one: Vec<String> = (0..20).map(|i| format!("big/{i:02}")).collect();
    one.push("small/x".into());
    let one: Vec<&str> = one.iter().map(String::as_str).collect();
    assert_eq!(holding(&one, 100).mvcc().split_key().unwrap(), "big/11");
    // Under two keys there is nothing to split.
    assert_eq!(holding(&["only/one"], 10).mvcc().split_key(), None);
}
