//! Commands stamped by the timestamp oracle (design 0011): a shard's
//! writes take their revision from the stamp, a stamp at or below the
//! shard's revision never writes, and a read-only command stamped in the
//! past reads at its stamp.

use bytes::Bytes;
use synod_kv::{outcome_error, KvError, KvStore};
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::response_op::Response;
use synod_proto::etcdserverpb::{
    CompactionRequest, Compare, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use synod_proto::synodpb::{command::Op, outcome, Command, Outcome};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(k: &str, v: &str) -> Op {
    Op::Put(PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    })
}

/// A txn that reads `k` and writes nothing.
fn read(k: &str) -> Op {
    Op::Txn(TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: b(k),
                ..Default::default()
            })),
        }],
        ..Default::default()
    })
}

struct Shard {
    store: KvStore,
    seq: u64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            store: KvStore::default(),
            seq: 0,
        }
    }

    /// Applies `op` stamped `stamp` (0: unstamped) as the next command.
    fn apply(&mut self, op: Op, stamp: i64) -> Outcome {
        self.seq += 1;
        self.apply_as(self.seq, op, stamp)
    }

    fn apply_as(&mut self, seq: u64, op: Op, stamp: i64) -> Outcome {
        let c = Command {
            client: 1,
            seq,
            op: Some(op),
            stamp,
            ..Default::default()
        };
        let applied = self.store.apply(&c);
        self.store.check_invariants();
        applied.outcome
    }

    fn value(&self, k: &str) -> Option<(Bytes, i64)> {
        let r = self
            .store
            .range(&RangeRequest {
                key: b(k),
                ..Default::default()
            })
            .unwrap();
        r.kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision))
    }
}

fn error(o: &Outcome) -> Option<KvError> {
    match &o.result {
        Some(outcome::Result::Error(e)) => Some(outcome_error(e)),
        _ => None,
    }
}

fn revision_of(o: &Outcome) -> i64 {
    match &o.result {
        Some(outcome::Result::Put(p)) => p.header.as_ref().unwrap().revision,
        Some(outcome::Result::Txn(t)) => t.header.as_ref().unwrap().revision,
        other => panic!("no header in {other:?}"),
    }
}

/// The values a read-only txn's first range returned.
fn read_values(o: &Outcome) -> Vec<Bytes> {
    match &o.result {
        Some(outcome::Result::Txn(t)) => match &t.responses[0].response {
            Some(Response::ResponseRange(r)) => r.kvs.iter().map(|kv| kv.value.clone()).collect(),
            other => panic!("not a range: {other:?}"),
        },
        other => panic!("not a txn: {other:?}"),
    }
}

#[test]
fn a_stamped_write_takes_its_stamp_as_revision() {
    let mut s = Shard::new();
    let o = s.apply(put("a", "1"), 40);
    assert_eq!(revision_of(&o), 40);
    assert_eq!(s.store.revision(), 40);
    assert_eq!(s.value("a"), Some((b("1"), 40)));
    // Gaps between stamps are fine; the next stamp is above.
    let o = s.apply(put("a", "2"), 97);
    assert_eq!(revision_of(&o), 97);
    assert_eq!(s.value("a"), Some((b("2"), 97)));
}

#[test]
fn a_stale_stamp_writes_nothing_and_can_be_stamped_again() {
    let mut s = Shard::new();
    s.apply(put("a", "1"), 50);
    // A deposed leader's proposal, stamped from an older range.
    let o = s.apply_as(7, put("a", "old"), 45);
    assert_eq!(
        error(&o),
        Some(KvError::StaleStamp {
            stamp: 45,
            revision: 50
        })
    );
    assert_eq!(s.value("a"), Some((b("1"), 50)));
    assert_eq!(s.store.revision(), 50);
    // Not remembered: the same (client, seq) stamped again applies.
    let o = s.apply_as(7, put("a", "new"), 60);
    assert_eq!(revision_of(&o), 60);
    assert_eq!(s.value("a"), Some((b("new"), 60)));
    // And now it is remembered: a late copy with its old stamp is the
    // retry of an applied command, answered with that command's outcome.
    let again = s.apply_as(7, put("a", "old"), 45);
    assert_eq!(again, o);
    assert_eq!(s.value("a"), Some((b("new"), 60)));
}

#[test]
fn a_stamp_fences_even_when_nothing_changes() {
    let mut s = Shard::new();
    s.apply(put("a", "1"), 10);
    // A txn whose compare fails writes nothing, yet takes its stamp.
    let failing = Op::Txn(TxnRequest {
        compare: vec![Compare {
            key: b("a"),
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            target_union: Some(TargetUnion::Value(b("other"))),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: b("a"),
                value: b("2"),
                ..Default::default()
            })),
        }],
        ..Default::default()
    });
    let o = s.apply(failing, 30);
    assert_eq!(revision_of(&o), 30);
    assert_eq!(s.store.revision(), 30);
    // So a write stamped between them may no longer apply.
    assert!(matches!(
        error(&s.apply(put("b", "x"), 20)),
        Some(KvError::StaleStamp { .. })
    ));
}

#[test]
fn a_read_stamped_in_the_past_reads_at_its_stamp() {
    let mut s = Shard::new();
    s.apply(put("a", "1"), 10);
    s.apply(put("a", "2"), 20);
    s.apply(put("a", "3"), 30);
    let o = s.apply(read("a"), 25);
    assert_eq!(read_values(&o), vec![b("2")]);
    assert_eq!(revision_of(&o), 25);
    // Nothing moved.
    assert_eq!(s.store.revision(), 30);
    // Above the revision it reads the present and fences.
    let o = s.apply(read("a"), 35);
    assert_eq!(read_values(&o), vec![b("3")]);
    assert_eq!(s.store.revision(), 35);
}

#[test]
fn a_read_stamped_below_the_compaction_is_refused() {
    let mut s = Shard::new();
    s.apply(put("a", "1"), 10);
    s.apply(put("a", "2"), 20);
    let c = s.apply(
        Op::Compact(CompactionRequest {
            revision: 20,
            ..Default::default()
        }),
        21,
    );
    assert_eq!(error(&c), None, "{c:?}");
    assert!(matches!(
        error(&s.apply(read("a"), 15)),
        Some(KvError::Compacted { .. })
    ));
}

#[test]
fn a_stamped_compaction_may_name_any_revision_up_to_its_stamp() {
    let mut s = Shard::new();
    s.apply(put("a", "1"), 10);
    // Revision 40 was handed out to another shard: this one never saw it.
    let c = s.apply(
        Op::Compact(CompactionRequest {
            revision: 40,
            ..Default::default()
        }),
        41,
    );
    assert_eq!(error(&c), None, "{c:?}");
    assert_eq!(s.value("a"), Some((b("1"), 10)));
}

#[test]
fn only_key_value_writes_are_stamped() {
    let mut s = Shard::new();
    let o = s.apply(Op::LeaseGrant(LeaseGrantRequest { id: 5, ttl: 10 }), 10);
    assert!(matches!(error(&o), Some(KvError::InvalidArgument(_))));
    // An unstamped write after stamped ones takes the next revision.
    assert_eq!(revision_of(&s.apply(put("a", "1"), 12)), 12);
    assert_eq!(revision_of(&s.apply(put("a", "2"), 0)), 13);
}
