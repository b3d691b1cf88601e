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
use synod_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use synod_proto::synodpb::{command, outcome};

/// A client's command as it travels through the log.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    /// Who sent it.
    pub client: u64,
    /// The client's sequence number: one command per number, retried as is.
    pub seq: u64,
    /// What to do.
    pub input: KvInput,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}#{}:{:?}", self.client, self.seq, self.input)
    }
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
        let op = match c.input {
            KvInput::Put { key: k, value: v } => command::Op::Put(put(k, v)),
            KvInput::Cas {
                key: k,
                expect,
                new,
            } => command::Op::Txn(cas(k, expect, new)),
            KvInput::Get { .. } => unreachable!("reads are not replicated"),
        };
        let applied = self.store.apply(&synod_proto::synodpb::Command {
            client: c.client,
            seq: c.seq,
            op: Some(op),
        });
        match applied.outcome.result {
            Some(outcome::Result::Put(_)) => Some(KvOutput::Put),
            Some(outcome::Result::Txn(t)) => Some(KvOutput::Cas(t.succeeded)),
            // Only a stale retry is refused: its client has its answer.
            Some(outcome::Result::Error(_)) => None,
            other => panic!("unexpected outcome {other:?} for {c:?}"),
        }
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
            input: KvInput::Cas {
                key: 1,
                expect: None,
                new: 5,
            },
        };
        assert_eq!(kv.apply(&cas), Some(KvOutput::Cas(true)));
        assert_eq!(kv.apply(&cas), Some(KvOutput::Cas(true)));
        assert_eq!(kv.get(1), Some(5));
        let put = Command {
            client: 2,
            seq: 1,
            input: KvInput::Put { key: 1, value: 7 },
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
            input: KvInput::Cas {
                key: 1,
                expect: Some(7),
                new: 8,
            },
        };
        assert_eq!(kv.apply(&cas2), Some(KvOutput::Cas(true)));
        assert_eq!(kv.get(1), Some(8));
    }
}
