//! A watcher that starts in the past must see exactly the events a watcher
//! connected all along saw: the history rebuilt from retained versions is
//! checked against the live event stream of the same commands.

use bytes::Bytes;
use synod_kv::{KeyRange, KvError, KvStore};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
};
use synod_proto::mvccpb::Event;
use synod_proto::synodpb::{command::Op, Command};

fn key(i: u64) -> Bytes {
    Bytes::from(format!("k{}", i % 6))
}

/// A small deterministic generator (SplitMix64).
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_op(rng: &mut u64) -> Op {
    let r = next(rng);
    match r % 4 {
        0 | 1 => Op::Put(PutRequest {
            key: key(r >> 8),
            value: Bytes::from((r >> 16).to_string()),
            ..Default::default()
        }),
        2 => Op::DeleteRange(DeleteRangeRequest {
            key: key(r >> 8),
            range_end: if r & 0x80 != 0 {
                Bytes::from_static(b"k4")
            } else {
                Bytes::new()
            },
            ..Default::default()
        }),
        _ => Op::Txn(TxnRequest {
            success: vec![
                RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: Bytes::from_static(b"t1"),
                        value: Bytes::from((r >> 8).to_string()),
                        ..Default::default()
                    })),
                },
                RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: Bytes::from_static(b"t0"),
                        value: Bytes::from((r >> 9).to_string()),
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        }),
    }
}

fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by(|a, b| {
        let (a, b) = (a.kv.as_ref().unwrap(), b.kv.as_ref().unwrap());
        (a.mod_revision, &a.key).cmp(&(b.mod_revision, &b.key))
    });
    events
}

#[test]
fn history_matches_the_live_stream_from_every_start() {
    for seed in 0..40u64 {
        let mut rng = seed;
        let mut store = KvStore::default();
        let mut live: Vec<Event> = Vec::new();
        for seq in 1..=60 {
            let applied = store.apply(&Command {
                client: 1,
                seq,
                op: Some(random_op(&mut rng)),
                ..Default::default()
            });
            live.extend(applied.events);
        }
        let all = KeyRange::all();
        for from in 1..=store.revision() + 1 {
            let expected: Vec<Event> = live
                .iter()
                .filter(|e| e.kv.as_ref().unwrap().mod_revision >= from)
                .cloned()
                .collect();
            let got = store.history(&all, from).unwrap();
            assert_eq!(sorted(got), sorted(expected), "seed {seed} from {from}");
        }
        // After compaction, history from the compaction point on is intact
        // and older starts are refused.
        let compact = store.revision() / 2;
        store.apply(&Command {
            client: 1,
            seq: 1000,
            op: Some(Op::Compact(CompactionRequest {
                revision: compact,
                physical: false,
            })),
            ..Default::default()
        });
        let expected: Vec<Event> = live
            .iter()
            .filter(|e| e.kv.as_ref().unwrap().mod_revision > compact)
            .cloned()
            .collect();
        let got = store.history(&all, compact + 1).unwrap();
        assert_eq!(
            sorted(got),
            sorted(expected),
            "seed {seed} after compaction"
        );
        assert!(matches!(
            store.history(&all, compact - 1),
            Err(KvError::Compacted { .. })
        ));
    }
}
