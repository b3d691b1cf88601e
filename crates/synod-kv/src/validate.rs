//! Request validation, before anything is proposed: the same rules and
//! messages as etcd's gRPC layer, so a bad request fails fast with the error
//! clients expect and never reaches the log.

use crate::error::KvError;
use crate::range::KeyRange;
use bytes::Bytes;
use std::collections::BTreeSet;
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// Operations one transaction may hold (etcd's default `--max-txn-ops`).
pub const TXN_OPS_MAX: usize = 128;

const EMPTY_KEY: &str = "etcdserver: key is not provided";
const VALUE_PROVIDED: &str = "etcdserver: value is provided";
const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";

/// A txn whose keys lie in several shards (until cross-shard
/// transactions, issue 11).
pub const SHARDED_TXN: &str =
    "etcdserver: a transaction over keys of several shards is not supported yet (cross-shard transactions)";
/// A put with a lease in a sharded cluster, refused before design 0017;
/// kept so that refusals recorded then decode to their text.
pub const SHARDED_LEASE: &str =
    "etcdserver: keys with a lease are not supported in a sharded cluster yet";
/// Turning auth on in a sharded cluster, refused before design 0018;
/// kept so that refusals recorded then decode to their text.
pub const SHARDED_AUTH: &str = "etcdserver: auth is not supported in a sharded cluster yet";
/// A stamp on a command that is not a key-value write.
pub const STAMP_NOT_KV: &str = "etcdserver: only key-value writes carry a stamp";
/// A stamp of 0 or below from a node.
pub const STAMP_NOT_POSITIVE: &str = "etcdserver: a stamp is above 0";

/// A split command in a group that is not a shard.
pub const SPLIT_NOT_SHARD: &str = "etcdserver: only a shard of a sharded cluster splits";
/// A split point outside the shard (or at its start), or no new group.
pub const SPLIT_OUTSIDE: &str =
    "etcdserver: a split point must lie strictly inside its shard, and name a new group";
/// A split that would move keys attached to leases, refused before
/// design 0017 (kept for the refusals recorded then).
pub const SPLIT_LEASED: &str = "etcdserver: a shard holding keys with leases does not split";
/// A lease's keys detached in a group that is not a shard.
pub const DETACH_NOT_SHARD: &str = "etcdserver: only a shard deletes a revoked lease's keys";
/// A shard's detachment recorded in a group that is not a sharded
/// cluster's meta group.
pub const DETACHED_NOT_META: &str =
    "etcdserver: only the meta group of a sharded cluster records revocations";
/// A detach naming more leases than `revoking::DETACH_IDS_MAX`.
pub const DETACH_TOO_MANY: &str = "etcdserver: a detachment names too many leases";
/// A lease granted in a shard (leases live in the meta group).
pub const LEASE_IN_SHARD: &str = "etcdserver: leases live in the meta group, not in a shard";
/// A detachment without a well-formed shard range.
pub const DETACHED_RANGE: &str = "etcdserver: a detachment names a malformed shard range";

/// A client's write in a shard without the auth fence its stamp brings
/// (design 0018): refused, not applied unchecked.
pub const AUTH_UNFENCED: &str =
    "etcdserver: a client's write reached a shard without the oracle's auth fence";

/// Every message validation can produce, so a refusal recorded in the log
/// decodes back to the same text.
pub const MESSAGES: &[&str] = &[
    SHARDED_TXN,
    SHARDED_LEASE,
    SHARDED_AUTH,
    STAMP_NOT_KV,
    STAMP_NOT_POSITIVE,
    SPLIT_NOT_SHARD,
    SPLIT_OUTSIDE,
    SPLIT_LEASED,
    DETACH_NOT_SHARD,
    DETACHED_NOT_META,
    DETACHED_RANGE,
    LEASE_IN_SHARD,
    DETACH_TOO_MANY,
    AUTH_UNFENCED,
    EMPTY_KEY,
    VALUE_PROVIDED,
    LEASE_PROVIDED,
    TOO_MANY_OPS,
    DUPLICATE_KEY,
    "etcdserver: request op is empty",
    "etcdserver: empty command",
    "etcdserver: request is a stale retry",
    "snapshot is malformed",
    "etcdserver: session expiry lists differ in length",
];

fn invalid(m: &'static str) -> KvError {
    KvError::InvalidArgument(m)
}

/// A range read must name a key.
pub fn range(r: &RangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    Ok(())
}

/// A put must name a key, and cannot both keep and replace the value/lease.
pub fn put(r: &PutRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(invalid(VALUE_PROVIDED));
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(invalid(LEASE_PROVIDED));
    }
    Ok(())
}

/// A delete must name a key.
pub fn delete_range(r: &DeleteRangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    Ok(())
}

/// A transaction's ops are each valid, there are at most `TXN_OPS_MAX` per
/// branch, and no branch writes a key twice or puts a key it also deletes.
pub fn txn(r: &TxnRequest) -> Result<(), KvError> {
    for c in &r.compare {
        if c.key.is_empty() {
            return Err(invalid(EMPTY_KEY));
        }
    }
    for branch in [&r.success, &r.failure] {
        if branch.len() > TXN_OPS_MAX {
            return Err(invalid(TOO_MANY_OPS));
        }
        for op in branch {
            match &op.request {
                Some(Request::RequestRange(x)) => range(x)?,
                Some(Request::RequestPut(x)) => put(x)?,
                Some(Request::RequestDeleteRange(x)) => delete_range(x)?,
                Some(Request::RequestTxn(x)) => txn(x)?,
                None => return Err(invalid("etcdserver: request op is empty")),
            }
        }
        writes(branch)?;
    }
    Ok(())
}

/// The keys a branch puts and the ranges it deletes; fails on a conflict.
fn writes(ops: &[RequestOp]) -> Result<(BTreeSet<Bytes>, Vec<KeyRange>), KvError> {
    let mut puts = BTreeSet::new();
    let mut deletes = Vec::new();
    for op in ops {
        match &op.request {
            Some(Request::RequestPut(p)) if !puts.insert(p.key.clone()) => {
                return Err(invalid(DUPLICATE_KEY));
            }
            Some(Request::RequestDeleteRange(d)) => {
                deletes.push(KeyRange::from_etcd(&d.key, &d.range_end))
            }
            Some(Request::RequestTxn(t)) => {
                // Either branch of a nested transaction may run.
                let (s_puts, s_dels) = writes(&t.success)?;
                let (f_puts, f_dels) = writes(&t.failure)?;
                for key in s_puts.union(&f_puts) {
                    if !puts.insert(key.clone()) {
                        return Err(invalid(DUPLICATE_KEY));
                    }
                }
                deletes.extend(s_dels);
                deletes.extend(f_dels);
            }
            _ => {}
        }
    }
    if puts.iter().any(|k| deletes.iter().any(|d| d.contains(k))) {
        return Err(invalid(DUPLICATE_KEY));
    }
    Ok((puts, deletes))
}
