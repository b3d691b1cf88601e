//! Simulated clients speak a register model (put / get / compare-and-set
//! on integer keys and values) that the linearizability checker
//! understands; this module translates it to the etcd requests the real
//! group driver serves, and their answers back.

use crate::linearizability::{KvInput, KvOutput};
use bytes::Bytes;
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{outcome, Outcome};

/// The key the lease agent attaches to lease `id`.
pub fn lease_key(id: i64) -> Bytes {
    Bytes::from(format!("lk{id}"))
}

/// Register `k`'s etcd key.
pub fn key(k: u64) -> Bytes {
    Bytes::from(format!("k{k}"))
}

/// Register value `v` as bytes: 8 bytes, and for odd values a tail that
/// makes them longer than `INLINE_VALUE_MAX`, so the state machine keeps
/// them on disk and reads them back from the simulated file.
fn value(v: u64) -> Bytes {
    let mut b = v.to_be_bytes().to_vec();
    if v % 2 == 1 {
        b.resize(synod_kv::INLINE_VALUE_MAX + 64, v as u8);
    }
    Bytes::from(b)
}

/// The register value in `b`; panics unless `b` is exactly what `value`
/// wrote (a damaged long value read back from disk shows here).
fn decode_value(b: &[u8]) -> u64 {
    let v = u64::from_be_bytes(
        b.get(..8)
            .and_then(|h| h.try_into().ok())
            .expect("simulator values start with 8 bytes"),
    );
    assert_eq!(value(v).as_ref(), b, "value {v} read back damaged");
    v
}

fn put(k: u64, v: u64) -> PutRequest {
    PutRequest {
        key: key(k),
        value: value(v),
        ..Default::default()
    }
}

/// The put that attaches the lease agent's key to lease `id`.
pub fn lease_put(id: i64) -> PutRequest {
    PutRequest {
        key: lease_key(id),
        value: value(1),
        lease: id,
        ..Default::default()
    }
}

/// The revision a write's answer carries (a put's, or a txn's whether
/// its compare held); `None` for a refusal.
pub fn write_revision(outcome: &Outcome) -> Option<i64> {
    let header = match &outcome.result {
        Some(outcome::Result::Put(p)) => p.header.as_ref(),
        Some(outcome::Result::Txn(t)) => t.header.as_ref(),
        _ => None,
    };
    header.map(|h| h.revision)
}

/// The etcd write for a register write.
pub fn write_op(input: &KvInput) -> Op {
    match *input {
        KvInput::Put { key: k, value: v } => Op::Put(put(k, v)),
        KvInput::Cas {
            key: k,
            expect,
            new,
        } => Op::Txn(cas(k, expect, new)),
        KvInput::Get { .. } => unreachable!("reads are not writes"),
    }
}

/// The etcd read for a register read.
pub fn read_request(k: u64) -> RangeRequest {
    RangeRequest {
        key: key(k),
        ..Default::default()
    }
}

/// What a register write returned, from its etcd outcome; `None` when the
/// outcome is a refusal (the write may or may not have applied elsewhere:
/// its effect is unknown).
pub fn write_output(input: &KvInput, outcome: &Outcome) -> Option<KvOutput> {
    match (input, &outcome.result) {
        (KvInput::Put { .. }, Some(outcome::Result::Put(_))) => Some(KvOutput::Put),
        (KvInput::Cas { .. }, Some(outcome::Result::Txn(t))) => Some(KvOutput::Cas(t.succeeded)),
        (_, Some(outcome::Result::Error(_))) => None,
        (input, other) => panic!("outcome {other:?} for {input:?}"),
    }
}

/// True when a write's outcome is a refusal given before it was proposed
/// (no leader, overload): sending it again cannot make it apply twice.
pub fn refused_unproposed(outcome: &Outcome) -> bool {
    use synod_proto::synodpb::error::Kind;
    match &outcome.result {
        Some(outcome::Result::Error(e)) => matches!(
            Kind::try_from(e.kind),
            Ok(Kind::NoLeader) | Ok(Kind::TooManyRequests) | Ok(Kind::WrongShard)
        ),
        _ => false,
    }
}

/// What a register read returned.
pub fn read_output(response: &RangeResponse) -> KvOutput {
    KvOutput::Get(response.kvs.first().map(|kv| decode_value(&kv.value)))
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
    use synod_kv::KvStore;
    use synod_proto::synodpb::Command;

    fn apply(store: &mut KvStore, seq: u64, input: &KvInput) -> Option<KvOutput> {
        let command = Command {
            stamp: 0,
            client: 1,
            seq,
            answered_below: seq,
            op: Some(write_op(input)),
            caller: None,
            live_leases: Vec::new(),
            auth_fence: None,
        };
        write_output(input, &store.apply(&command).outcome)
    }

    #[test]
    fn register_operations_map_to_etcd_and_back() {
        let mut store = KvStore::default();
        let create = KvInput::Cas {
            key: 1,
            expect: None,
            new: 5,
        };
        assert_eq!(apply(&mut store, 1, &create), Some(KvOutput::Cas(true)));
        assert_eq!(apply(&mut store, 2, &create), Some(KvOutput::Cas(false)));
        let put = KvInput::Put { key: 1, value: 7 };
        assert_eq!(apply(&mut store, 3, &put), Some(KvOutput::Put));
        let swap = KvInput::Cas {
            key: 1,
            expect: Some(7),
            new: 8,
        };
        assert_eq!(apply(&mut store, 4, &swap), Some(KvOutput::Cas(true)));
        let read = store.range(&read_request(1)).unwrap();
        assert_eq!(read_output(&read), KvOutput::Get(Some(8)));
        let absent = store.range(&read_request(2)).unwrap();
        assert_eq!(read_output(&absent), KvOutput::Get(None));
    }
}
