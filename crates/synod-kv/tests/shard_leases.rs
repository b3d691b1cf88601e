//! Keys with leases in a sharded cluster (design 0017), as the state
//! machines see it: a shard attaches a key only to a lease the oracle
//! found live when it stamped the write, keeps stubs that follow its
//! keys (through splits, restarts and snapshots), and deletes a revoked
//! lease's keys with a stamped detach; the meta group records the
//! revocation until the detached ranges cover the key space, and refuses
//! to grant the id again before.

use bytes::Bytes;
use std::sync::Arc;
use synod_kv::{KvError, KvStore, MemoryRows, Shard};
use synod_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest};
use synod_proto::synodpb::{
    command::Op, outcome, Command, LeaseDetach, LeaseDetached, Outcome, SplitShard,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn refusal(o: &Outcome) -> Option<KvError> {
    match &o.result {
        Some(outcome::Result::Error(e)) => Some(synod_kv::outcome_error(e)),
        _ => None,
    }
}

#[derive(Default)]
struct Client {
    seq: u64,
}

impl Client {
    fn command(&mut self, op: Op, stamp: i64, live: &[i64]) -> Command {
        self.seq += 1;
        Command {
            client: 9,
            seq: self.seq,
            op: Some(op),
            stamp,
            live_leases: live.to_vec(),
            ..Default::default()
        }
    }
}

fn put(key: &str, lease: i64) -> Op {
    Op::Put(PutRequest {
        key: b(key),
        value: b("v"),
        lease,
        ..Default::default()
    })
}

fn keys(store: &KvStore) -> Vec<(String, i64)> {
    let r = store
        .range(&RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            ..Default::default()
        })
        .unwrap();
    r.kvs
        .iter()
        .map(|kv| (String::from_utf8(kv.key.to_vec()).unwrap(), kv.lease))
        .collect()
}

fn shard(start: &str, end: Option<&str>) -> KvStore {
    let mut s = KvStore::default();
    s.set_shard_if_unset(Shard::new(b(start), end.map(b)));
    s
}

#[test]
fn a_shard_attaches_only_to_leases_found_live_and_detaches_revoked_ones() {
    let mut s = shard("", None);
    let mut c = Client::default();
    let o = s.apply(&c.command(put("a", 7), 10, &[7])).outcome;
    assert_eq!(refusal(&o), None);
    let o = s.apply(&c.command(put("b", 8), 11, &[7])).outcome;
    assert!(
        matches!(refusal(&o), Some(KvError::LeaseNotFound(8))),
        "{o:?}"
    );
    let o = s.apply(&c.command(put("c", 7), 12, &[7])).outcome;
    assert_eq!(refusal(&o), None);
    assert_eq!(s.leases().get(7).unwrap().keys.len(), 2);
    s.check_invariants();
    // A put that keeps the key's lease needs no word from the oracle.
    let keep = Op::Put(PutRequest {
        key: b("a"),
        value: b("w"),
        ignore_lease: true,
        ..Default::default()
    });
    assert_eq!(refusal(&s.apply(&c.command(keep, 13, &[])).outcome), None);
    assert_eq!(s.leases().get(7).unwrap().keys.len(), 2, "still attached");
    // Overwriting without the lease leaves the stub one key.
    s.apply(&c.command(put("c", 0), 14, &[]));
    assert_eq!(s.leases().get(7).unwrap().keys.len(), 1);
    // Leases themselves are the meta group's.
    let grant = Op::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 5 });
    assert!(refusal(&s.apply(&c.command(grant, 0, &[])).outcome).is_some());
    // The detach deletes at its stamp and answers with the shard's range.
    let applied = s.apply(&c.command(Op::LeaseDetach(LeaseDetach { ids: vec![7] }), 20, &[]));
    assert!(
        matches!(&applied.outcome.result, Some(outcome::Result::Detached(r)) if r.open),
        "{:?}",
        applied.outcome
    );
    assert_eq!(applied.events.len(), 1);
    assert_eq!(applied.revision, 20);
    assert!(s.leases().is_empty(), "the stub left with its last key");
    assert_eq!(keys(&s), vec![("c".to_string(), 0)]);
    // A put checked before the revocation but stamped below the detach
    // can no longer apply: refused as stale, unremembered.
    let late = c.command(put("d", 7), 15, &[7]);
    assert!(matches!(
        refusal(&s.apply(&late).outcome),
        Some(KvError::StaleStamp { .. })
    ));
    s.check_invariants();
}

#[test]
fn stubs_follow_keys_through_a_split_a_restart_and_a_snapshot() {
    let rows = Arc::new(MemoryRows::default());
    let mut s = shard("", None);
    s.attach(rows.clone(), true);
    let mut c = Client::default();
    let mut stamp = 10;
    for (key, lease) in [("a", 1), ("b", 2), ("m", 1), ("x", 2), ("y", 3)] {
        stamp += 1;
        let o = s
            .apply(&c.command(put(key, lease), stamp, &[1, 2, 3]))
            .outcome;
        assert_eq!(refusal(&o), None);
    }
    let split = Op::Split(SplitShard {
        at: b("k"),
        child: 77,
    });
    let o = s.apply(&c.command(split, 0, &[])).outcome;
    assert_eq!(refusal(&o), None, "a shard with leased keys splits");
    let (_, child) = s.take_split().unwrap();
    s.check_invariants();
    child.check_invariants();
    let ids = |k: &KvStore| k.leases().iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(ids(&s), vec![1, 2]);
    assert_eq!(ids(&child), vec![1, 2, 3]);
    // Rows: stubs are not written, they are rebuilt from the keys.
    let changes = s.take_changes();
    rows.apply(&changes);
    s.changes_written();
    let loaded = KvStore::load(rows).unwrap().unwrap();
    assert_eq!(loaded, s);
    let restored = KvStore::restore(child.snapshot()).unwrap();
    assert_eq!(restored, child);
}

#[test]
fn the_meta_group_keeps_a_revocation_until_every_range_detached() {
    let rows = Arc::new(MemoryRows::default());
    let mut m = KvStore::default();
    m.attach(rows.clone(), true);
    m.set_lease_keys_in_shards();
    let mut c = Client::default();
    let grant = || Op::LeaseGrant(LeaseGrantRequest { id: 5, ttl: 10 });
    assert_eq!(refusal(&m.apply(&c.command(grant(), 0, &[])).outcome), None);
    assert_eq!(m.live_leases(&[5, 6]), vec![5]);
    let revoke = Op::LeaseRevoke(LeaseRevokeRequest { id: 5 });
    assert_eq!(refusal(&m.apply(&c.command(revoke, 0, &[])).outcome), None);
    assert!(m.is_revoking(5));
    assert!(m.live_leases(&[5]).is_empty());
    assert!(matches!(
        refusal(&m.apply(&c.command(grant(), 0, &[])).outcome),
        Some(KvError::LeaseExists)
    ));
    let detached = |start: &str, end: Option<&str>| {
        Op::LeaseDetached(LeaseDetached {
            ids: vec![5],
            range: Some(Shard::new(b(start), end.map(b)).to_proto()),
        })
    };
    m.apply(&c.command(detached("m", None), 0, &[]));
    assert!(m.is_revoking(5));
    // Kept across a restart and a snapshot.
    let changes = m.take_changes();
    rows.apply(&changes);
    m.changes_written();
    assert_eq!(KvStore::load(rows.clone()).unwrap().unwrap(), m);
    assert_eq!(KvStore::restore(m.snapshot()).unwrap(), m);
    m.apply(&c.command(detached("", Some("m")), 0, &[]));
    assert!(!m.is_revoking(5), "covered: the revocation is complete");
    let changes = m.take_changes();
    rows.apply(&changes);
    m.changes_written();
    assert_eq!(KvStore::load(rows).unwrap().unwrap(), m);
    assert_eq!(refusal(&m.apply(&c.command(grant(), 0, &[])).outcome), None);
    // A group that is no sharded cluster's meta group records nothing.
    let mut plain = KvStore::default();
    let o = plain.apply(&c.command(detached("", None), 0, &[])).outcome;
    assert!(refusal(&o).is_some());
}
