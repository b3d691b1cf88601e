//! etcd's documented key-value semantics, one behaviour per test.

use bytes::Bytes;
use synod_kv::{outcome_error, validate, KvError, KvStore};
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::response_op::Response;
use synod_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use synod_proto::mvccpb::event::EventType;
use synod_proto::synodpb::{command::Op, outcome, Command, Outcome};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A store plus a client sequence counter.
struct Kv {
    store: KvStore,
    seq: u64,
}

impl Kv {
    fn new() -> Kv {
        Kv {
            store: KvStore::default(),
            seq: 0,
        }
    }

    fn apply(&mut self, op: Op) -> Outcome {
        self.seq += 1;
        let c = Command {
            client: 1,
            seq: self.seq,
            op: Some(op),
            ..Default::default()
        };
        let applied = self.store.apply(&c);
        self.store.check_invariants();
        applied.outcome
    }

    fn put(&mut self, k: &str, v: &str) -> i64 {
        match self.apply(Op::Put(PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        })) {
            Outcome {
                result: Some(outcome::Result::Put(p)),
            } => p.header.unwrap().revision,
            other => panic!("put failed: {other:?}"),
        }
    }

    fn get(&self, r: RangeRequest) -> Result<Vec<(String, String)>, KvError> {
        let resp = self.store.range(&r)?;
        Ok(resp
            .kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key.to_vec()).unwrap(),
                    String::from_utf8(kv.value.to_vec()).unwrap(),
                )
            })
            .collect())
    }
}

fn range(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..Default::default()
    }
}

fn err(o: &Outcome) -> KvError {
    match &o.result {
        Some(outcome::Result::Error(e)) => outcome_error(e),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn revisions_start_at_one_and_count_write_transactions() {
    let mut kv = Kv::new();
    assert_eq!(kv.store.revision(), 1);
    assert_eq!(kv.put("a", "1"), 2);
    assert_eq!(kv.put("a", "2"), 3);
    let r = kv.store.range(&range("a", "")).unwrap();
    let a = &r.kvs[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
    assert_eq!(r.header.unwrap().revision, 3);
}

#[test]
fn range_end_conventions() {
    let mut kv = Kv::new();
    for k in ["a", "foo", "foo/1", "foo/2", "fop", "z"] {
        kv.put(k, k);
    }
    let keys = |r| {
        kv.get(r)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(range("foo", "")), ["foo"]);
    assert_eq!(keys(range("foo", "fop")), ["foo", "foo/1", "foo/2"]);
    assert_eq!(
        keys(range("foo", "\0")),
        ["foo", "foo/1", "foo/2", "fop", "z"]
    );
    assert_eq!(keys(range("\0", "\0")).len(), 6);
    assert!(keys(range("z", "a")).is_empty(), "inverted range is empty");
}

#[test]
fn limit_sort_keys_only_count_only() {
    let mut kv = Kv::new();
    kv.put("c", "1");
    kv.put("a", "3");
    kv.put("b", "2");
    let mut r = range("\0", "\0");
    r.limit = 2;
    let resp = kv.store.range(&r).unwrap();
    assert_eq!(resp.kvs.len(), 2);
    assert!(resp.more);
    assert_eq!(resp.count, 3, "count ignores the limit");
    r.sort_order = SortOrder::Descend as i32;
    r.sort_target = SortTarget::Value as i32;
    let got = kv.get(r.clone()).unwrap();
    assert_eq!(got, [("a".into(), "3".into()), ("b".into(), "2".into())]);
    r.sort_order = SortOrder::None as i32;
    r.sort_target = SortTarget::Mod as i32; // a target alone sorts ascending
    r.limit = 0;
    let got: Vec<String> = kv.get(r).unwrap().into_iter().map(|x| x.0).collect();
    assert_eq!(got, ["c", "a", "b"]);
    let mut r = range("\0", "\0");
    r.keys_only = true;
    assert!(kv
        .store
        .range(&r)
        .unwrap()
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty()));
    r.count_only = true;
    let resp = kv.store.range(&r).unwrap();
    assert!(resp.kvs.is_empty());
    assert_eq!(resp.count, 3);
}

#[test]
fn revision_filters() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // rev 2
    kv.put("b", "1"); // rev 3
    kv.put("a", "2"); // rev 4
    let mut r = range("\0", "\0");
    r.min_mod_revision = 4;
    assert_eq!(kv.get(r.clone()).unwrap(), [("a".into(), "2".into())]);
    r.min_mod_revision = 0;
    r.max_create_revision = 2;
    assert_eq!(kv.get(r).unwrap(), [("a".into(), "2".into())]);
}

#[test]
fn reads_in_the_past_and_compaction() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("a", "2"); // 3
    kv.put("a", "3"); // 4
    let mut r = range("a", "");
    r.revision = 2;
    assert_eq!(kv.get(r.clone()).unwrap(), [("a".into(), "1".into())]);
    r.revision = 9;
    assert!(matches!(
        kv.get(r.clone()),
        Err(KvError::FutureRevision {
            requested: 9,
            current: 4
        })
    ));
    let o = kv.apply(Op::Compact(CompactionRequest {
        revision: 3,
        physical: false,
    }));
    assert!(matches!(o.result, Some(outcome::Result::Compact(_))));
    r.revision = 2;
    let e = kv.get(r.clone()).unwrap_err();
    assert_eq!(
        e.etcd_message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    r.revision = 3;
    assert_eq!(
        kv.get(r).unwrap(),
        [("a".into(), "2".into())],
        "the compaction revision itself is readable"
    );
    let again = kv.apply(Op::Compact(CompactionRequest {
        revision: 3,
        physical: false,
    }));
    assert!(matches!(err(&again), KvError::Compacted { .. }));
    let future = kv.apply(Op::Compact(CompactionRequest {
        revision: 99,
        physical: false,
    }));
    assert!(matches!(err(&future), KvError::FutureRevision { .. }));
}

#[test]
fn put_options() {
    let mut kv = Kv::new();
    let o = kv.apply(Op::Put(PutRequest {
        key: b("a"),
        ignore_value: true,
        ..Default::default()
    }));
    assert_eq!(err(&o), KvError::KeyNotFound);
    assert_eq!(kv.store.revision(), 1, "a refused put changes nothing");
    kv.put("a", "1");
    let o = kv.apply(Op::Put(PutRequest {
        key: b("a"),
        ignore_value: true,
        prev_kv: true,
        ..Default::default()
    }));
    let Some(outcome::Result::Put(p)) = o.result else {
        panic!()
    };
    assert_eq!(p.prev_kv.unwrap().value, b("1"));
    assert_eq!(kv.get(range("a", "")).unwrap(), [("a".into(), "1".into())]);
    let o = kv.apply(Op::Put(PutRequest {
        key: b("a"),
        value: b("x"),
        lease: 42,
        ..Default::default()
    }));
    assert_eq!(err(&o), KvError::LeaseNotFound(42));
}

#[test]
fn delete_range_counts_and_returns_previous_values() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("b", "2");
    kv.put("c", "3");
    let before = kv.store.revision();
    let o = kv.apply(Op::DeleteRange(DeleteRangeRequest {
        key: b("x"),
        ..Default::default()
    }));
    let Some(outcome::Result::DeleteRange(d)) = o.result else {
        panic!()
    };
    assert_eq!(d.deleted, 0);
    assert_eq!(
        kv.store.revision(),
        before,
        "deleting nothing does not bump the revision"
    );
    let o = kv.apply(Op::DeleteRange(DeleteRangeRequest {
        key: b("a"),
        range_end: b("c"),
        prev_kv: true,
    }));
    let Some(outcome::Result::DeleteRange(d)) = o.result else {
        panic!()
    };
    assert_eq!(d.deleted, 2);
    assert_eq!(d.prev_kvs.len(), 2);
    assert_eq!(
        kv.store.revision(),
        before + 1,
        "one revision for the whole delete"
    );
    assert_eq!(
        kv.get(range("\0", "\0")).unwrap(),
        [("c".into(), "3".into())]
    );
    kv.put("a", "new");
    let a = &kv.store.range(&range("a", "")).unwrap().kvs[0];
    assert_eq!(a.version, 1, "a recreated key starts a new generation");
}

fn cmp(key: &str, result: CompareResult, target: CompareTarget, value: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: b(key),
        target_union: Some(value),
        range_end: Bytes::new(),
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        })),
    }
}

fn get_op(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(range(k, ""))),
    }
}

#[test]
fn txn_compares_every_target() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // create 2, mod 2, version 1
    let cases = [
        (
            cmp(
                "a",
                CompareResult::Equal,
                CompareTarget::Value,
                TargetUnion::Value(b("1")),
            ),
            true,
        ),
        (
            cmp(
                "a",
                CompareResult::NotEqual,
                CompareTarget::Value,
                TargetUnion::Value(b("1")),
            ),
            false,
        ),
        (
            cmp(
                "a",
                CompareResult::Greater,
                CompareTarget::Version,
                TargetUnion::Version(0),
            ),
            true,
        ),
        (
            cmp(
                "a",
                CompareResult::Equal,
                CompareTarget::Create,
                TargetUnion::CreateRevision(2),
            ),
            true,
        ),
        (
            cmp(
                "a",
                CompareResult::Less,
                CompareTarget::Mod,
                TargetUnion::ModRevision(2),
            ),
            false,
        ),
        (
            cmp(
                "a",
                CompareResult::Equal,
                CompareTarget::Lease,
                TargetUnion::Lease(0),
            ),
            true,
        ),
        // A missing key has version 0 ...
        (
            cmp(
                "nope",
                CompareResult::Equal,
                CompareTarget::Version,
                TargetUnion::Version(0),
            ),
            true,
        ),
        (
            cmp(
                "nope",
                CompareResult::Equal,
                CompareTarget::Create,
                TargetUnion::CreateRevision(0),
            ),
            true,
        ),
        // ... but a value compare on it fails.
        (
            cmp(
                "nope",
                CompareResult::NotEqual,
                CompareTarget::Value,
                TargetUnion::Value(b("x")),
            ),
            false,
        ),
    ];
    for (c, expected) in cases {
        let o = kv.apply(Op::Txn(TxnRequest {
            compare: vec![c.clone()],
            success: vec![],
            failure: vec![],
        }));
        let Some(outcome::Result::Txn(t)) = o.result else {
            panic!()
        };
        assert_eq!(t.succeeded, expected, "{c:?}");
    }
    assert_eq!(
        kv.store.revision(),
        2,
        "txns without writes do not bump the revision"
    );
}

#[test]
fn txn_branches_share_one_revision_and_see_their_own_writes() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let o = kv.apply(Op::Txn(TxnRequest {
        compare: vec![cmp(
            "a",
            CompareResult::Equal,
            CompareTarget::Value,
            TargetUnion::Value(b("1")),
        )],
        success: vec![put_op("b", "2"), put_op("c", "3"), get_op("b")],
        failure: vec![put_op("x", "x")],
    }));
    let Some(outcome::Result::Txn(t)) = o.result else {
        panic!()
    };
    assert!(t.succeeded);
    assert_eq!(t.header.unwrap().revision, 3);
    let Some(Response::ResponseRange(r)) = &t.responses[2].response else {
        panic!()
    };
    assert_eq!(
        r.kvs[0].value,
        b("2"),
        "a read after a put in the same txn sees it"
    );
    let all = kv.store.range(&range("\0", "\0")).unwrap();
    assert!(all
        .kvs
        .iter()
        .filter(|k| k.key != b("a"))
        .all(|k| k.mod_revision == 3));
}

#[test]
fn nested_txn_and_failure_branch() {
    let mut kv = Kv::new();
    let inner = TxnRequest {
        compare: vec![cmp(
            "n",
            CompareResult::Equal,
            CompareTarget::Version,
            TargetUnion::Version(0),
        )],
        success: vec![put_op("n", "created")],
        failure: vec![],
    };
    let o = kv.apply(Op::Txn(TxnRequest {
        compare: vec![cmp(
            "a",
            CompareResult::Equal,
            CompareTarget::Value,
            TargetUnion::Value(b("missing")),
        )],
        success: vec![],
        failure: vec![RequestOp {
            request: Some(Request::RequestTxn(inner)),
        }],
    }));
    let Some(outcome::Result::Txn(t)) = o.result else {
        panic!()
    };
    assert!(!t.succeeded);
    let Some(Response::ResponseTxn(inner)) = &t.responses[0].response else {
        panic!()
    };
    assert!(inner.succeeded);
    assert_eq!(
        kv.get(range("n", "")).unwrap(),
        [("n".into(), "created".into())]
    );
}

#[test]
fn failed_txn_leaves_nothing_behind() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let before = kv.store.clone();
    let bad_put = RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: b("z"),
            ignore_value: true,
            ..Default::default()
        })),
    };
    let o = kv.apply(Op::Txn(TxnRequest {
        compare: vec![],
        success: vec![put_op("b", "2"), put_op("a", "9"), bad_put],
        failure: vec![],
    }));
    assert_eq!(err(&o), KvError::KeyNotFound);
    assert_eq!(
        kv.store.mvcc(),
        before.mvcc(),
        "every write of the failed txn was undone"
    );
}

#[test]
fn events_describe_every_change() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.seq += 1;
    let applied = kv.store.apply(&Command {
        stamp: 0,
        client: 1,
        seq: kv.seq,
        answered_below: 0,
        op: Some(Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                put_op("a", "2"),
                RequestOp {
                    request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                        key: b("x"),
                        ..Default::default()
                    })),
                },
            ],
            failure: vec![],
        })),
        caller: None,
        live_leases: Vec::new(),
        auth_fence: None,
    });
    assert_eq!(applied.events.len(), 1);
    let e = &applied.events[0];
    assert_eq!(e.r#type, EventType::Put as i32);
    assert_eq!(e.prev_kv.as_ref().unwrap().value, b("1"));
    assert_eq!(e.kv.as_ref().unwrap().mod_revision, 3);
}

#[test]
fn retried_commands_apply_once() {
    let mut store = KvStore::default();
    let c = Command {
        stamp: 0,
        client: 5,
        seq: 1,
        answered_below: 0,
        op: Some(Op::Put(PutRequest {
            key: b("k"),
            value: b("v"),
            ..Default::default()
        })),
        caller: None,
        live_leases: Vec::new(),
        auth_fence: None,
    };
    let first = store.apply(&c);
    let again = store.apply(&c);
    assert!(again.duplicate && again.events.is_empty());
    assert_eq!(
        first.outcome, again.outcome,
        "the retry gets the first answer"
    );
    assert_eq!(store.revision(), 2);
}

fn put_in_session(seq: u64, answered_below: u64, value: &str) -> Command {
    Command {
        stamp: 0,
        client: 9,
        seq,
        answered_below,
        op: Some(Op::Put(PutRequest {
            key: b("k"),
            value: b(value),
            ..Default::default()
        })),
        caller: None,
        live_leases: Vec::new(),
        auth_fence: None,
    }
}

/// A node's session has many writes in flight, and the log may order them
/// differently from their seqs (a write forwarded again after a leader
/// change): each applies once, whatever the order, until its node says it
/// was answered; then a late copy is refused, not applied.
#[test]
fn a_session_applies_each_seq_once_in_any_order_until_it_is_answered() {
    let mut store = KvStore::default();
    let three = store.apply(&put_in_session(3, 1, "3"));
    let one = store.apply(&put_in_session(1, 1, "1"));
    let two = store.apply(&put_in_session(2, 1, "2"));
    assert!(!three.duplicate && !one.duplicate && !two.duplicate);
    assert_eq!(store.revision(), 4);
    // Copies of each, still in the window, get their first answers.
    for (seq, first) in [(1, &one), (2, &two), (3, &three)] {
        let again = store.apply(&put_in_session(seq, 1, "x"));
        assert!(again.duplicate, "seq {seq} applied twice");
        assert_eq!(again.outcome, first.outcome);
    }
    assert_eq!(store.revision(), 4);
    // Seq 4 tells the store that 1..=3 were answered: their outcomes go,
    // and a late copy of one of them is refused without effect.
    store.apply(&put_in_session(4, 4, "4"));
    assert_eq!(store.session_outcome(9, 2), None);
    let late = store.apply(&put_in_session(2, 1, "late"));
    assert!(late.duplicate);
    assert!(matches!(
        late.outcome.result,
        Some(synod_proto::synodpb::outcome::Result::Error(_))
    ));
    assert_eq!(store.revision(), 5);
    // The window survives a snapshot.
    let restored = KvStore::restore(store.snapshot()).unwrap();
    assert_eq!(restored, store);
}

/// The leader expires a session it saw idle: the expiry names the
/// revision of the session's last command, so a session that applied
/// another command since is kept; an expired one is gone, rows included.
#[test]
fn an_idle_session_expires_through_the_log_unless_it_woke_up() {
    let mut store = KvStore::default();
    store.apply(&put_in_session(1, 1, "1"));
    let idle_at = store.sessions().find(|(c, _)| *c == 9).unwrap().1;
    let expire = |revision: i64| Command {
        stamp: 0,
        client: 77,
        seq: 1,
        answered_below: 1,
        op: Some(Op::SessionExpire(synod_proto::synodpb::SessionExpire {
            clients: vec![9],
            revisions: vec![revision],
        })),
        caller: None,
        live_leases: Vec::new(),
        auth_fence: None,
    };
    // It woke up: the expiry that saw it idle at `idle_at` keeps it.
    store.apply(&put_in_session(2, 1, "2"));
    let kept = store.apply(&expire(idle_at));
    match kept.outcome.result {
        Some(outcome::Result::SessionExpire(e)) => assert!(e.clients.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(store.session_outcome(9, 2).is_some());
    let now = store.sessions().find(|(c, _)| *c == 9).unwrap().1;
    let mut expiry = expire(now);
    expiry.seq = 2;
    let gone = store.apply(&expiry);
    match gone.outcome.result {
        Some(outcome::Result::SessionExpire(e)) => assert_eq!(e.clients, vec![9]),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.session_outcome(9, 2), None);
    assert!(store.sessions().all(|(c, _)| c != 9));
    let mut bad = expire(now);
    bad.seq = 3;
    if let Some(Op::SessionExpire(e)) = &mut bad.op {
        e.revisions.clear();
    }
    assert!(matches!(
        store.apply(&bad).outcome.result,
        Some(outcome::Result::Error(_))
    ));
    assert_eq!(KvStore::restore(store.snapshot()).unwrap(), store);
}

#[test]
fn snapshot_round_trip() {
    let mut kv = Kv::new();
    for i in 0..20 {
        kv.put(&format!("k{}", i % 7), &i.to_string());
    }
    kv.apply(Op::Compact(CompactionRequest {
        revision: 10,
        physical: false,
    }));
    let restored = KvStore::restore(kv.store.snapshot()).unwrap();
    assert_eq!(restored, kv.store);
}

/// A snapshot comes from a peer or a file: every broken invariant is a
/// refusal that names it, never a panic.
#[test]
fn a_snapshot_that_breaks_an_mvcc_invariant_is_refused_with_the_reason() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("a", "2");
    kv.put("b", "3");
    let good = kv.store.snapshot();
    type Breakage = fn(&mut synod_proto::synodpb::Snapshot);
    let breakages: [(&str, Breakage); 6] = [
        ("out of order", |s| s.keys[0].versions.reverse()),
        ("created at", |s| s.keys[0].versions[0].create_revision = 99),
        ("tombstone with a value", |s| {
            s.keys[0].versions[0].version = 0
        }),
        ("outside", |s| s.keys[1].versions[0].mod_revision = 1000),
        ("holds a version of", |s| {
            s.keys[1].versions[0].key = b("zz")
        }),
        ("appears twice", |s| {
            let again = s.keys[0].clone();
            s.keys.push(again)
        }),
    ];
    for (reason, breakage) in breakages {
        let mut bad = good.clone();
        breakage(&mut bad);
        let err = KvStore::restore(bad).unwrap_err();
        assert!(err.contains(reason), "expected {reason:?}, got {err:?}");
    }
    KvStore::restore(good).unwrap();
}

#[test]
fn validation_matches_etcd() {
    let empty = PutRequest::default();
    assert_eq!(
        validate::put(&empty).unwrap_err().etcd_message(),
        "etcdserver: key is not provided"
    );
    let dup = TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "1"), put_op("a", "2")],
        failure: vec![],
    };
    assert_eq!(
        validate::txn(&dup).unwrap_err().etcd_message(),
        "etcdserver: duplicate key given in txn request"
    );
    let put_in_deleted = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("b", "1"),
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: b("a"),
                    range_end: b("c"),
                    prev_kv: false,
                })),
            },
        ],
        failure: vec![],
    };
    assert!(validate::txn(&put_in_deleted).is_err());
    let ok = TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "1")],
        failure: vec![put_op("a", "2")],
    };
    validate::txn(&ok).unwrap();
}

/// A reservation for the timestamp oracle moves the revision and nothing
/// else; later writes go on above it, and counts outside 1..=2^20 are
/// refused without effect.
#[test]
fn reserving_revisions_moves_only_the_revision() {
    use synod_proto::synodpb::ReserveRevisions;
    let mut kv = Kv::new();
    let before = kv.put("a", "1");
    let reserved = kv.apply(Op::ReserveRevisions(ReserveRevisions { count: 100 }));
    match reserved.result {
        Some(outcome::Result::Reserved(r)) => {
            assert_eq!((r.first, r.last), (before + 1, before + 100));
        }
        other => panic!("not reserved: {other:?}"),
    }
    assert_eq!(kv.store.revision(), before + 100);
    assert_eq!(kv.store.mvcc().key_count(), 1, "a reservation wrote a key");
    assert_eq!(kv.put("b", "2"), before + 101);
    assert_eq!(
        kv.get(RangeRequest {
            key: b("a"),
            ..Default::default()
        })
        .unwrap(),
        vec![("a".to_string(), "1".to_string())]
    );
    for count in [0, synod_kv::RESERVE_REVISIONS_MAX + 1] {
        let refused = kv.apply(Op::ReserveRevisions(ReserveRevisions { count }));
        assert!(
            matches!(refused.result, Some(outcome::Result::Error(_))),
            "count {count} taken: {refused:?}"
        );
    }
    assert_eq!(kv.store.revision(), before + 101);
}
