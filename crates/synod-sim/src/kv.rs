//! The simulator's replicated state machine is synod's own (`synod-kv`), so
//! the simulator's history checks cover it too. Simulated clients speak a
//! register model (put / get / compare-and-set on integer keys and values)
//! that the linearizability checker understands; this module translates it
//! to etcd requests and back.

use crate::linearizability::{KvInput, KvOutput};
use bytes::Bytes;
use std::fmt;
use synod_kv::KvStore;
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::{
    Compare, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use synod_proto::synodpb::{command, outcome, LeaseExpire};

/// A client's command as it travels through the log.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    /// Who sent it.
    pub client: u64,
    /// The client's sequence number: one command per number, retried as is.
    pub seq: u64,
    /// What to do.
    pub op: Op,
}

/// A command's operation: a register operation of a checked client, or a
/// lease operation (of the lease agent, or the leader's expiry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Checked for linearizability.
    Kv(KvInput),
    /// Grant lease `id` for `ttl` seconds and attach key `lk<id>` to it.
    Grant {
        /// Lease id.
        id: i64,
        /// Seconds.
        ttl: i64,
    },
    /// The leader's clock says these leases ran out.
    Expire(Vec<i64>),
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::Kv(input) => write!(f, "c{}#{}:{:?}", self.client, self.seq, input),
            op => write!(f, "c{}#{}:{:?}", self.client, self.seq, op),
        }
    }
}

/// The key the lease agent attaches to lease `id`.
pub fn lease_key(id: i64) -> Bytes {
    Bytes::from(format!("lk{id}"))
}

fn key(k: u64) -> Bytes {
    Bytes::from(format!("k{k}"))
}

fn value(v: u64) -> Bytes {
    Bytes::copy_from_slice(&v.to_be_bytes())
}

fn decode_value(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("simulator values are 8 bytes"))
}

fn put(k: u64, v: u64) -> PutRequest {
    PutRequest {
        key: key(k),
        value: value(v),
        ..Default::default()
    }
}

/// The state machine of one simulated replica.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Kv {
    store: KvStore,
}

impl Kv {
    /// Applies one command; a retry of a command already applied returns
    /// its first output without taking effect again. A copy older than the
    /// client's latest command (a retry that was chosen late) returns `None`:
    /// the client already has its answer.
    pub fn apply(&mut self, c: &Command) -> Option<KvOutput> {
        let op = match &c.op {
            Op::Kv(KvInput::Put { key: k, value: v }) => command::Op::Put(put(*k, *v)),
            Op::Kv(KvInput::Cas {
                key: k,
                expect,
                new,
            }) => command::Op::Txn(cas(*k, *expect, *new)),
            Op::Kv(KvInput::Get { .. }) => unreachable!("reads are not replicated"),
            Op::Grant { id, ttl } => {
                // Grant and attach in one command: a transaction cannot
                // grant, so the grant goes first and the put follows.
                self.store.apply(&synod_proto::synodpb::Command {
                    client: c.client,
                    seq: c.seq * 2 - 1,
                    answered_below: c.seq * 2 - 1,
                    op: Some(command::Op::LeaseGrant(LeaseGrantRequest {
                        id: *id,
                        ttl: *ttl,
                    })),
                });
                command::Op::Put(PutRequest {
                    key: lease_key(*id),
                    value: value(1),
                    lease: *id,
                    ..Default::default()
                })
            }
            Op::Expire(ids) => command::Op::LeaseExpire(LeaseExpire { ids: ids.clone() }),
        };
        let seq = match c.op {
            Op::Grant { .. } => c.seq * 2,
            _ => c.seq,
        };
        // A simulated client has one command in flight: every earlier one
        // was answered, so the state machine keeps only this one's outcome.
        let applied = self.store.apply(&synod_proto::synodpb::Command {
            client: c.client,
            seq,
            answered_below: seq,
            op: Some(op),
        });
        match applied.outcome.result {
            Some(outcome::Result::Put(_)) if matches!(c.op, Op::Grant { .. }) => None,
            Some(outcome::Result::Put(_)) => Some(KvOutput::Put),
            Some(outcome::Result::Txn(t)) => Some(KvOutput::Cas(t.succeeded)),
            Some(outcome::Result::LeaseRevoke(_)) => None,
            // Only a stale retry is refused: its client has its answer. (A
            // grant retried after its lease expired refuses its put: the
            // lease is gone, and so must its key stay.)
            Some(outcome::Result::Error(_)) => None,
            other => panic!("unexpected outcome {other:?} for {c:?}"),
        }
    }

    /// The state machine itself (leases, for the lessor).
    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// A read served outside the log (after a lease or read-index check).
    pub fn get(&self, k: u64) -> Option<u64> {
        let r = self
            .store
            .range(&RangeRequest {
                key: key(k),
                ..Default::default()
            })
            .expect("current reads never fail");
        r.kvs.first().map(|kv| decode_value(&kv.value))
    }
}

/// Compare-and-set as an etcd transaction: `expect = None` means "absent"
/// (version 0).
fn cas(k: u64, expect: Option<u64>, new: u64) -> TxnRequest {
    let compare = match expect {
        Some(v) => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: key(k),
            target_union: Some(TargetUnion::Value(value(v))),
            range_end: Bytes::new(),
        },
        None => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: key(k),
            target_union: Some(TargetUnion::Version(0)),
            range_end: Bytes::new(),
        },
    };
    TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(put(k, new))),
        }],
        failure: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retried_command_applies_once() {
        let mut kv = Kv::default();
        let cas = Command {
            client: 1,
            seq: 1,
            op: Op::Kv(KvInput::Cas {
                key: 1,
                expect: None,
                new: 5,
            }),
        };
        assert_eq!(kv.apply(&cas), Some(KvOutput::Cas(true)));
        assert_eq!(kv.apply(&cas), Some(KvOutput::Cas(true)));
        assert_eq!(kv.get(1), Some(5));
        let put = Command {
            client: 2,
            seq: 1,
            op: Op::Kv(KvInput::Put { key: 1, value: 7 }),
        };
        kv.apply(&put);
        let stale = Command {
            seq: 0,
            ..cas.clone()
        };
        assert_eq!(kv.apply(&stale), None);
        // The replayed CAS must not run again (it would now fail).
        assert_eq!(kv.apply(&cas), Some(KvOutput::Cas(true)));
        assert_eq!(kv.get(1), Some(7));
        let cas2 = Command {
            client: 1,
            seq: 2,
            op: Op::Kv(KvInput::Cas {
                key: 1,
                expect: Some(7),
                new: 8,
            }),
        };
        assert_eq!(kv.apply(&cas2), Some(KvOutput::Cas(true)));
        assert_eq!(kv.get(1), Some(8));
    }
}
