//! Leases and alarms in the state machine: grant, attach, revoke and expire
//! (keys deleted at one revision), snapshots, and the NOSPACE alarm.

use bytes::Bytes;
use synod_kv::{outcome_error, KvError, KvStore, LEASE_TTL_MAX};
use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::{
    AlarmRequest, AlarmType, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RequestOp, TxnRequest,
};
use synod_proto::mvccpb::event::EventType;
use synod_proto::synodpb::{command::Op, outcome, Command, LeaseExpire};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

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

    fn apply(&mut self, op: Op) -> synod_kv::Applied {
        self.seq += 1;
        let applied = self.store.apply(&Command {
            client: 1,
            seq: self.seq,
            op: Some(op),
            ..Default::default()
        });
        self.store.check_invariants();
        applied
    }

    fn grant(&mut self, id: i64, ttl: i64) -> Result<i64, KvError> {
        match self
            .apply(Op::LeaseGrant(LeaseGrantRequest { id, ttl }))
            .outcome
            .result
        {
            Some(outcome::Result::LeaseGrant(r)) => Ok(r.ttl),
            Some(outcome::Result::Error(e)) => Err(outcome_error(&e)),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn put(&mut self, k: &str, lease: i64) -> Result<(), KvError> {
        match self
            .apply(Op::Put(PutRequest {
                key: b(k),
                value: b("v"),
                lease,
                ..Default::default()
            }))
            .outcome
            .result
        {
            Some(outcome::Result::Put(_)) => Ok(()),
            Some(outcome::Result::Error(e)) => Err(outcome_error(&e)),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn keys(&self, id: i64) -> Vec<Bytes> {
        self.store
            .leases()
            .get(id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[test]
fn grant_checks_id_and_ttl() {
    let mut kv = Kv::new();
    assert_eq!(kv.grant(7, 10), Ok(10));
    assert_eq!(kv.grant(7, 10), Err(KvError::LeaseExists));
    assert_eq!(
        kv.grant(8, LEASE_TTL_MAX + 1),
        Err(KvError::LeaseTtlTooLarge)
    );
    assert!(matches!(kv.grant(0, 10), Err(KvError::InvalidArgument(_))));
    assert_eq!(kv.store.revision(), 1, "granting writes no key revision");
}

#[test]
fn keys_follow_their_lease_through_puts_deletes_and_txns() {
    let mut kv = Kv::new();
    kv.grant(1, 10).unwrap();
    kv.grant(2, 10).unwrap();
    assert_eq!(kv.put("a", 9), Err(KvError::LeaseNotFound(9)));
    kv.put("a", 1).unwrap();
    kv.put("b", 1).unwrap();
    assert_eq!(kv.keys(1), vec![b("a"), b("b")]);
    kv.put("a", 2).unwrap();
    assert_eq!(kv.keys(1), vec![b("b")]);
    assert_eq!(kv.keys(2), vec![b("a")]);
    kv.put("b", 0).unwrap();
    assert!(kv.keys(1).is_empty());
    // A txn that attaches, detaches and deletes in one revision.
    let put = |k: &str, lease: i64| RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: b(k),
            lease,
            ..Default::default()
        })),
    };
    kv.apply(Op::Txn(TxnRequest {
        success: vec![
            put("c", 1),
            put("d", 2),
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: b("a"),
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    }));
    assert_eq!(kv.keys(1), vec![b("c")]);
    assert_eq!(kv.keys(2), vec![b("d")]);
    // A failed txn attaches nothing.
    kv.apply(Op::Txn(TxnRequest {
        success: vec![put("e", 1), put("f", 99)],
        ..Default::default()
    }));
    assert_eq!(kv.keys(1), vec![b("c")]);
}

#[test]
fn revoke_deletes_every_attached_key_at_one_revision() {
    let mut kv = Kv::new();
    kv.grant(1, 10).unwrap();
    kv.put("a", 1).unwrap();
    kv.put("b", 1).unwrap();
    kv.put("c", 0).unwrap();
    let before = kv.store.revision();
    let applied = kv.apply(Op::LeaseRevoke(LeaseRevokeRequest { id: 1 }));
    assert_eq!(applied.revision, before + 1);
    assert_eq!(applied.events.len(), 2);
    for e in &applied.events {
        assert_eq!(e.r#type, EventType::Delete as i32);
        assert_eq!(e.kv.as_ref().unwrap().mod_revision, before + 1);
    }
    assert!(!kv.store.leases().contains(1));
    let again = kv.apply(Op::LeaseRevoke(LeaseRevokeRequest { id: 1 }));
    match again.outcome.result {
        Some(outcome::Result::Error(e)) => {
            assert_eq!(outcome_error(&e), KvError::LeaseNotFound(1))
        }
        other => panic!("unexpected {other:?}"),
    }
    // A lease without keys is revoked without a new revision.
    kv.grant(2, 10).unwrap();
    let r = kv.store.revision();
    kv.apply(Op::LeaseRevoke(LeaseRevokeRequest { id: 2 }));
    assert_eq!(kv.store.revision(), r);
}

#[test]
fn expiry_revokes_each_listed_lease_that_still_exists() {
    let mut kv = Kv::new();
    for id in 1..=3 {
        kv.grant(id, 5).unwrap();
        kv.put(&format!("k{id}"), id).unwrap();
    }
    let r = kv.store.revision();
    let applied = kv.apply(Op::LeaseExpire(LeaseExpire {
        ids: vec![1, 3, 42],
    }));
    assert_eq!(applied.events.len(), 2);
    assert_eq!(kv.store.revision(), r + 2, "one revision per expired lease");
    assert!(kv.store.leases().contains(2));
    assert!(!kv.store.leases().contains(1) && !kv.store.leases().contains(3));
}

#[test]
fn snapshot_keeps_leases_and_rebuilds_attachments() {
    let mut kv = Kv::new();
    kv.grant(1, 10).unwrap();
    kv.grant(2, 20).unwrap();
    kv.put("a", 1).unwrap();
    kv.put("b", 2).unwrap();
    kv.put("a", 2).unwrap();
    let restored = KvStore::restore(kv.store.snapshot()).unwrap();
    restored.check_invariants();
    assert_eq!(restored, kv.store);
}

#[test]
fn nospace_alarm_refuses_writes_that_add_data_only() {
    let mut kv = Kv::new();
    kv.put("a", 0).unwrap();
    kv.apply(Op::Alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: 3,
        alarm: AlarmType::Nospace as i32,
    }));
    assert!(kv.store.out_of_space());
    assert_eq!(kv.put("b", 0), Err(KvError::NoSpace));
    assert_eq!(kv.grant(1, 10), Err(KvError::NoSpace));
    let del = kv.apply(Op::DeleteRange(DeleteRangeRequest {
        key: b("a"),
        ..Default::default()
    }));
    assert!(matches!(
        del.outcome.result,
        Some(outcome::Result::DeleteRange(_))
    ));
    let list = kv.apply(Op::Alarm(AlarmRequest::default()));
    match list.outcome.result {
        Some(outcome::Result::Alarm(r)) => assert_eq!(r.alarms.len(), 1),
        other => panic!("unexpected {other:?}"),
    }
    let restored = KvStore::restore(kv.store.snapshot()).unwrap();
    assert!(restored.out_of_space(), "alarms survive snapshots");
    kv.apply(Op::Alarm(AlarmRequest {
        action: AlarmAction::Deactivate as i32,
        member_id: 3,
        alarm: AlarmType::Nospace as i32,
    }));
    kv.put("b", 0).unwrap();
}

#[test]
fn hash_kv_is_a_function_of_the_applied_log() {
    let mut one = Kv::new();
    let mut two = Kv::new();
    for kv in [&mut one, &mut two] {
        kv.put("a", 0).unwrap();
        kv.put("b", 0).unwrap();
    }
    let (h1, rev, _) = one.store.hash_kv(0).unwrap();
    assert_eq!(two.store.hash_kv(0).unwrap().0, h1);
    two.put("c", 0).unwrap();
    assert_ne!(two.store.hash_kv(0).unwrap().0, h1);
    assert_eq!(
        two.store.hash_kv(rev).unwrap().0,
        h1,
        "hash at a past revision"
    );
    assert!(matches!(
        two.store.hash_kv(100),
        Err(KvError::FutureRevision { .. })
    ));
}
